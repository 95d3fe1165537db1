"""The suite: its addons, in order, as one mitmproxy addon.

Order matters: `ClientGate` (client_gate.py) refuses what no app of ours sends,
`AdminEndpoints` (admin.py) answers `/_ambassador/...`, `Router` (forward.py) matches every
other flow to an upstream (or refuses it), `Forwarder` performs the exchange through that
upstream's service. Every flow gets a response from one of them, so mitmproxy itself never
opens an upstream connection: the ambassador cannot be used as an open proxy.
"""

from __future__ import annotations

import inspect

# Hooks register themselves in hooks.all_hooks when their module is imported: AmbassadorAddons
# must see them all.
import mitmproxy.addonmanager  # noqa: F401
import mitmproxy.proxy.layers  # noqa: F401
import mitmproxy.proxy.server_hooks  # noqa: F401
from mitmproxy import hooks, http

from .admin import AdminEndpoints
from .aggregate import Aggregates
from .answers import refuse
from .async_replies import JobEndpoint, RespondAsync
from .auth import Auth
from .batch import Batch
from .breaker_addon import Breaker
from .cache.cache_addon import Cache
from .client_gate import ClientGate
from .client_limits import ClientLimits
from .defaults import SidecarDefaults
from .errors import AmbassadorError
from .failover import Failover
from .fallback import Fallback
from .flow_list import AdminFlowsHidden
from .forward import Forwarder, NoDirectUpstream, Router
from .hedge import Hedge
from .jobs import Jobs
from .limit import Limit
from .operations import ConnectionLog, ExchangeObserver
from .profile_manager import ProfileManager
from .replay import Replay
from .retry import Retry
from .routing import is_admin_path
from .upstream_flows import UpstreamFlows


class AmbassadorAddons:
    """The ambassador's addons as one mitmproxy addon.

    For every hook event of every flow, mitmproxy walks its whole addon tree, looks each hook
    up by name and wraps each top-level addon in its own error-handling context. Children in
    an `addons` attribute would be walked and looked up on every event too, and each further
    top-level addon costs a context per event; instead this container calls its children's
    hooks itself, from lists made once, and mitmproxy sees a single addon (bench/,
    docs/benchmarks.md).

    When a child raises, the later children miss that event; the guard and the observer
    (`last`) still act on it, so that no flow goes unanswered or unlogged. Children marked
    `admin_only` see only requests for `/_ambassador/...`: most requests are not, and one path
    check spares them each a call.
    """

    def __init__(self, children: list | None = None) -> None:
        self.children = make_addons() if children is None else children
        self.manager: ProfileManager = self.children[0]
        self.last = [NoDirectUpstream(), ExchangeObserver()]
        for name in hooks.all_hooks.keys() - {"load", "requestheaders", "request"}:
            first, last = _hooks(self.children, name), _hooks(self.last, name)
            if first or last:
                setattr(self, name, _call_in_turn(first, last))
        self.requestheaders_hook = _call_in_turn(_hooks(self.children, "requestheaders"), _hooks(self.last, "requestheaders"))
        routed = [child for child in self.children if not getattr(child, "admin_only", False)]
        self.request_hooks = {
            True: _call_in_turn(_hooks(self.children, "request"), _hooks(self.last, "request")),
            False: _call_in_turn(_hooks(routed, "request"), _hooks(self.last, "request")),
        }

    def requestheaders(self, flow: http.HTTPFlow):
        if self.manager.gateway is None:
            # Listening, but no profile yet (mitmproxy opens its listeners before it loads
            # scripts), or start-up refused one and the ambassador is about to exit.
            refuse(flow, AmbassadorError("not_ready", "the ambassador has no profile loaded yet"))
            return None
        return self.requestheaders_hook(flow)

    def request(self, flow: http.HTTPFlow):
        if self.manager.gateway is None:
            return None  # answered at its header block
        return self.request_hooks[is_admin_path(flow.request.path)](flow)

    def load(self, loader) -> None:
        for child in [*self.children, *self.last]:
            if hasattr(child, "load"):
                child.load(loader)
            loader.master.commands.collect_commands(child)


def _hooks(addons: list, name: str) -> list:
    return [hook for addon in addons if callable(hook := getattr(addon, name, None))]


def _call_in_turn(first: list, last: list):
    """One hook calling `first` in order, then `last` however `first` ended: async if any of
    them is (mitmproxy calls the configuration hooks synchronously; none of ours is async)."""
    if not any(inspect.iscoroutinefunction(h) for h in first + last):
        def call(*args) -> None:
            try:
                for hook in first:
                    hook(*args)
            finally:
                for hook in last:
                    hook(*args)
        return call

    async def call_async(*args) -> None:
        try:
            for hook in first:
                if (result := hook(*args)) is not None:
                    await result
        finally:
            for hook in last:
                if (result := hook(*args)) is not None:
                    await result
    return call_async


def make_addons() -> list:
    """The addons in hook order (NoDirectUpstream and ExchangeObserver follow them, see
    AmbassadorAddons). Addons answering other `/_ambassador/...` paths go before
    AdminEndpoints; addons acting on routed flows go between Router and Forwarder. ClientGate
    acts first, at the header block, on every request. Aggregates, Batch, JobEndpoint and
    RespondAsync are features with hooks of their own."""
    manager = ProfileManager()
    jobs = Jobs()
    flows = UpstreamFlows()
    return [
        manager,
        SidecarDefaults(),
        Replay(manager),
        flows,
        AdminFlowsHidden(),
        ClientGate(manager),
        Aggregates(manager, flows),
        Batch(manager, flows),
        JobEndpoint(jobs),
        AdminEndpoints(manager),
        Router(manager),
        RespondAsync(jobs, manager, flows),
        Forwarder(manager, flows),
        ConnectionLog(),
        ClientLimits(),
        # The features' addons: their options and commands; they have no per-request hook, the
        # profile's sections are their stages (pipeline.py). After the manager, whose gateway
        # they switch.
        Auth(manager),
        Cache(manager),
        Breaker(manager),
        Retry(manager),
        Limit(manager),
        Hedge(manager),
        Failover(manager),
        Fallback(manager),
    ]
