"""What mitmweb's and the console's flow list show of the ambassador's own endpoints.

Status probes, metrics scrapes and job polls are flows too, and they would bury the exchanges a
person opens mitmweb to look at: the flow list hides them by default, through mitmproxy's own
`view_filter` (so the filter shows in the options, and a user's own `view_filter` always wins:
it is never changed once the user set it). `--set ambassador_show_admin_flows=true` shows them.
"""

from __future__ import annotations

import asyncio

from mitmproxy import ctx

from .profile import ADMIN_PREFIX

HIDE_ADMIN_FLOWS = f'!(~u "://[^/]+{ADMIN_PREFIX}([/?]|$)")'


def view_filter_for(show_admin: bool, current: str | None) -> str | None:
    """The view filter to set, or `current` when it is the user's own."""
    if not show_admin and not current:
        return HIDE_ADMIN_FLOWS
    if show_admin and current == HIDE_ADMIN_FLOWS:
        return None
    return current


class AdminFlowsHidden:
    def load(self, loader) -> None:
        loader.add_option(
            "ambassador_show_admin_flows",
            bool,
            False,
            "Show requests for the ambassador's own endpoints (/_ambassador/...) in the flow list.",
        )

    def running(self) -> None:
        self.apply()

    def configure(self, updated) -> None:
        if "ambassador_show_admin_flows" in updated:
            try:  # not while mitmproxy is still applying this update: a moment later
                asyncio.get_running_loop().call_soon(self.apply)
            except RuntimeError:  # no loop yet: start-up, where `running` applies it
                pass

    def apply(self) -> None:
        if "view_filter" not in ctx.options:
            return  # no flow list here (mitmdump)
        wanted = view_filter_for(ctx.options.ambassador_show_admin_flows, ctx.options.view_filter)
        if wanted != ctx.options.view_filter:
            ctx.options.update(view_filter=wanted)
