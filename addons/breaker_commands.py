"""The breaker's commands: force an upstream's circuit breaker open or closed."""

from __future__ import annotations

from mitmproxy import command

from .commands import UpstreamCommands


class BreakerCommands(UpstreamCommands):
    @command.command("ambassador.breaker.open")
    def breaker_open(self, name: str) -> None:
        """Open an upstream's circuit breaker now; it half-opens after its reset_timeout as usual."""
        self._run(self._stage(name, "breaker").force_open(), f"breaker of {name} opened")

    @command.command("ambassador.breaker.close")
    def breaker_close(self, name: str) -> None:
        """Close an upstream's circuit breaker and forget its failures."""
        self._run(self._stage(name, "breaker").force_close(), f"breaker of {name} closed")
