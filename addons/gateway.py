"""The running configuration: one profile, its routes and its upstream services."""

from __future__ import annotations

import dataclasses

from . import metrics
from .pipeline import build_stages
from .profile import Profile, Upstream
from .replay import Recording
from .routing import RouteTable
from .service import UpstreamService, UpstreamStats


def keeps_service(old: Upstream, new: Upstream) -> bool:
    """Whether a reload may keep an upstream's service, with its connections, breaker state,
    cache and tokens: its section is unchanged, or only its `match` changed, which decides
    which requests reach it and nothing of how it treats them. Any other change rebuilds the
    service: its stages are built from the whole section (a timeout bounds retries and token
    fetches, the url keys the cache), and keeping one stage of a changed section could act on
    a setting that is no longer in the profile."""
    return old == new or dataclasses.replace(old, match=new.match) == new


class Gateway:
    def __init__(self, profile: Profile, previous: Gateway | None = None):
        self.profile = profile
        self.routes = RouteTable(profile)
        self.stats: dict[str, UpstreamStats] = previous.stats if previous else {}
        self.services: dict[str, UpstreamService] = {}
        self.replay: Recording | None = None
        self.switched_off: frozenset[str] = frozenset()  # sections every upstream runs without
        # Shared state (`state:`) backs the cache and breaker stages: a change rebuilds them all.
        kept = previous.services if previous and previous.profile.state == profile.state else {}
        for name, upstream in profile.upstreams.items():
            old = kept.get(name)
            if old is not None and keeps_service(old.upstream, upstream):
                old.upstream = upstream  # the same but for `match`, which the service does not read
                self.services[name] = old
                continue
            self.services[name] = UpstreamService(
                upstream, self.stats.setdefault(name, UpstreamStats()), build_stages(upstream, profile)
            )
        if previous:
            self.set_replay(previous.replay)
            self.switch_off(previous.switched_off)

    def set_replay(self, recording: Recording | None) -> None:
        """Answer from `recording` instead of the upstreams (None: contact them again)."""
        self.replay = recording
        for service in self.services.values():
            service.set_replay(recording)

    def switch(self, section: str, on: bool) -> None:
        """Apply the profile's `section` (e.g. "cache") to every upstream again, or no more."""
        self.switch_off(self.switched_off - {section} if on else self.switched_off | {section})

    def switch_off(self, sections: frozenset[str]) -> None:
        self.switched_off = sections
        for service in self.services.values():
            service.switch_off(sections)

    def set_body_limit(self, limit: int | None) -> None:
        for service in self.services.values():
            for transport in service.transports:
                transport.max_body = limit

    def retire_replaced(self, previous: Gateway) -> None:
        for name, service in previous.services.items():
            if self.services.get(name) is not service:
                service.retire()
            if name not in self.services:  # removed from the profile: it leaves the metrics and status
                metrics.forget_upstream(name)
                self.stats.pop(name, None)

    def status(self) -> dict:
        return {
            "profile": str(self.profile.path),
            "switched_off": sorted(self.switched_off),
            "upstreams": {name: service.status() for name, service in self.services.items()},
        }
