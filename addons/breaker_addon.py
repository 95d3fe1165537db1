"""The breaker as a mitmproxy addon: its switch and its commands, which force an upstream's
circuit breaker open or closed. The breaker itself is the `breaker` stage (breaker.py)."""

from __future__ import annotations

from mitmproxy import command

from .commands import UpstreamCommands
from .switches import FeatureSwitch


class Breaker(UpstreamCommands, FeatureSwitch):
    section = "breaker"
    does = "circuit breakers refusing attempts while an upstream fails"

    @command.command("ambassador.breaker.open")
    def breaker_open(self, name: str) -> None:
        """Open an upstream's circuit breaker now; it half-opens after its reset_timeout as usual."""
        self._run(self._stage(name, "breaker").force_open(), f"breaker of {name} opened")

    @command.command("ambassador.breaker.close")
    def breaker_close(self, name: str) -> None:
        """Close an upstream's circuit breaker and forget its failures."""
        self._run(self._stage(name, "breaker").force_close(), f"breaker of {name} closed")
