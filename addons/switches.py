"""The base of the feature addons whose profile sections can be switched off at run time.

Option `ambassador_<section>` (e.g. `ambassador_cache`, default true) applies the profile's
`<section>` sections; false makes every upstream run without them, from mitmweb's options
editor, `--set` or a script: to see each request reach the upstream while debugging, say. The
gateway keeps the set of switched-off sections and each upstream's service computes its chain
of stages once per change (service.py), so a switch costs nothing per request; the stages are
kept with their state (breaker counts, cached entries, a limit's tokens) for when the section is switched on again.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx

log = logging.getLogger("ambassador")


class FeatureSwitch:
    """A feature addon's switch. Subclasses name their profile section and say what it does."""

    section: str  # the profile section, as the stage is named ("cache", "retry"...)
    does: str  # what the section does, for the option's help

    def __init__(self, manager):
        self.manager = manager

    @property
    def option(self) -> str:
        return f"ambassador_{self.section}"

    def load(self, loader) -> None:
        loader.add_option(
            self.option,
            bool,
            True,
            f"Apply the profile's `{self.section}` sections ({self.does}); false: every upstream runs "
            f"without them (e.g. in mitmweb, to see each request reach the upstream while debugging).",
        )

    def configure(self, updated) -> None:
        gateway = self.manager.gateway
        if self.option not in updated or gateway is None:
            return  # a new profile's gateway takes the switched-off sections over from the one it replaces
        on = getattr(ctx.options, self.option)
        if on == (self.section not in gateway.switched_off):
            return  # as it is (start-up with the default, or the same value set again)
        gateway.switch(self.section, on)
        log.warning("%s sections %s for every upstream", self.section, "applied again" if on else "switched off")
