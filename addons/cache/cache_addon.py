"""The cache as a mitmproxy addon: its switch and its command, which drops cached answers.
The cache itself is the `cache` stage (stage.py)."""

from __future__ import annotations

from mitmproxy import command, exceptions

from ..commands import UpstreamCommands
from ..switches import FeatureSwitch


class Cache(UpstreamCommands, FeatureSwitch):
    section = "cache"
    does = "answers from the HTTP cache"

    @command.command("ambassador.cache.clear")
    def cache_clear(self, name: str = "") -> None:
        """Drop the cached responses of one upstream, or of every upstream without NAME."""
        if name:
            caches = {name: self._stage(name, "cache")}
        else:
            services = self.manager.gateway.services
            caches = {n: cache for n, s in services.items() if (cache := s.stage("cache")) is not None}
            if not caches:
                raise exceptions.CommandError("no upstream of the profile has a cache")
        for upstream, cache in sorted(caches.items()):
            self._run(cache.clear(), f"cache of {upstream} cleared")
