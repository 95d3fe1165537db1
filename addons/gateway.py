"""The running configuration: one profile, its routes and its upstream services."""

from __future__ import annotations

from .pipeline import build_stages
from .profile import Profile
from .replay import Recording
from .routing import RouteTable
from .service import UpstreamService, UpstreamStats


class Gateway:
    def __init__(self, profile: Profile, previous: Gateway | None = None):
        self.profile = profile
        self.routes = RouteTable(profile)
        self.stats: dict[str, UpstreamStats] = previous.stats if previous else {}
        self.services: dict[str, UpstreamService] = {}
        self.replay: Recording | None = None
        # Shared state (`state:`) backs the cache and breaker stages: a change rebuilds them all.
        kept = previous.services if previous and previous.profile.state == profile.state else {}
        for name, upstream in profile.upstreams.items():
            old = kept.get(name)
            if old is not None and old.upstream == upstream:
                # Unchanged upstream: keep its connections and state across the swap.
                self.services[name] = old
                continue
            self.services[name] = UpstreamService(
                upstream, self.stats.setdefault(name, UpstreamStats()), build_stages(upstream, profile)
            )
        if previous:
            self.set_replay(previous.replay)

    def set_replay(self, recording: Recording | None) -> None:
        """Answer from `recording` instead of the upstreams (None: contact them again)."""
        self.replay = recording
        for service in self.services.values():
            service.set_replay(recording)

    def set_body_limit(self, limit: int | None) -> None:
        for service in self.services.values():
            for transport in service.transports:
                transport.max_body = limit

    def retire_replaced(self, previous: Gateway) -> None:
        for service in previous.services.values():
            if self.services.get(service.upstream.name) is not service:
                service.retire()

    def status(self) -> dict:
        return {
            "profile": str(self.profile.path),
            "upstreams": {name: service.status() for name, service in self.services.items()},
        }
