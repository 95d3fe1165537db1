"""The mitmproxy addons: thin hooks around the plain-Python gateway.

Order matters: `ClientGate` (client_gate.py) refuses what no app of ours sends,
`AdminEndpoints` answers `/_ambassador/...`, `Router` matches every other flow to an upstream
(or refuses it), `Forwarder` performs the exchange through that upstream's service. Every
flow gets a response from one of them, so mitmproxy itself never opens an upstream
connection: the ambassador cannot be used as an open proxy.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import sys
import time
import weakref
from pathlib import Path

# Hooks register themselves in hooks.all_hooks when their module is imported: AmbassadorAddons
# must see them all.
import mitmproxy.addonmanager  # noqa: F401
import mitmproxy.proxy.layers  # noqa: F401
import mitmproxy.proxy.server_hooks  # noqa: F401
from mitmproxy import command, ctx, exceptions, hooks, http
from mitmproxy.utils import human
from multidict import CIMultiDict

from .defaults import SidecarDefaults, refuse_start
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse, client_request
from .gateway import Gateway
from . import metrics
from .operations import METRICS_PATH, AdminCommands, ConnectionLog, ExchangeObserver, metrics_response
from .replay import Replay
from .flow_list import AdminFlowsHidden
from .upstream_flows import UpstreamFlows
from .profile import ADMIN_PREFIX, PROFILES_DIR, Profile, ProfileError, load_profile, resolve_profile_name
from .routing import Route, is_admin_path, names_ambassador, no_upstream_matches
from .service import UpstreamService

log = logging.getLogger("ambassador")

DEFAULT_PROFILE = PROFILES_DIR / "default.yaml"
WATCH_INTERVAL = 1.0


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def files_signature(profile_signature: tuple[int, int] | None, profile: Profile) -> tuple:
    """What the watcher compares: the profile file's signature (taken before it was read), then
    those of the files its `${file:...}` read, so that a rotated secret reloads the profile."""
    return (profile_signature, *(_signature(file) for file in sorted(profile.files_read)))


class ProfileManager:
    """Holds the running gateway; loads, swaps and watches the profile."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.loaded_signature: tuple | None = None  # files_signature() of the running profile
        self.refused_signature: tuple | None = None
        self.reported_missing = False  # the profile file is gone (logged once)
        self.watcher: asyncio.Task | None = None
        self.refused_at_startup = False

    def load(self, loader):
        loader.add_option(
            "ambassador_profile",
            str,
            str(DEFAULT_PROFILE),
            "The ambassador's profile: a YAML file, or a name under profiles/ (prod -> profiles/prod.yaml).",
        )

    def configure(self, updated):
        if "body_size_limit" in updated and self.gateway:
            self.gateway.set_body_limit(body_size_limit())
        if "ambassador_profile" not in updated or self.refused_at_startup:
            return  # after a refusal at start-up, mitmproxy rolls the option back while exiting
        path = resolve_profile_name(ctx.options.ambassador_profile, PROFILES_DIR).resolve()
        if self.gateway and path == self.gateway.profile.path and self.current_signature() == self.loaded_signature:
            return  # unchanged, e.g. the option being rolled back after a refused swap
        if self.gateway and self.watcher is not None and not path.is_file():
            # Most likely a name still being typed in mitmweb's options editor: refused, but
            # not logged as a refusal on every keystroke; the editor shows why.
            raise exceptions.OptionsError(f"no profile at {path}; keeping {self.gateway.profile.path}")
        try:
            self.swap(path)
        except ProfileError as e:
            if not self.gateway or self.watcher is None:  # still starting: `running` has not come
                self.refused_at_startup = True
                refuse_start(str(e))
                return
            self.refused(e)
            raise exceptions.OptionsError(f"profile refused, keeping the running one:\n{e}") from None

    def swap(self, path: Path) -> None:
        """Load `path` and make it the running profile; raises ProfileError and keeps the old one."""
        signature = _signature(path)
        profile = load_profile(path)
        self.install(profile, files_signature(signature, profile))

    def current_signature(self) -> tuple:
        profile = self.gateway.profile
        return files_signature(_signature(profile.path), profile)

    def refused(self, error: ProfileError) -> None:
        metrics.PROFILE_RELOADS.labels("refused").inc()
        log.warning("profile refused, keeping the running one:\n%s", error)

    def install(self, profile: Profile, signature: tuple) -> None:
        previous = self.gateway
        path = profile.path
        gateway = Gateway(profile, previous)
        gateway.set_body_limit(body_size_limit())
        self.gateway = gateway
        self.loaded_signature = signature
        self.refused_signature = None
        if previous:
            gateway.retire_replaced(previous)
            metrics.PROFILE_RELOADS.labels("loaded").inc()
            log.warning("profile %s loaded", path)
        else:
            log.info("profile %s loaded", path)

    def running(self):
        self.watcher = asyncio.get_running_loop().create_task(self.watch())

    def done(self):
        if self.watcher:
            self.watcher.cancel()

    async def watch(self) -> None:
        """Pick up edits of the loaded profile file, and of the files it reads, by themselves."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if not self.gateway:
                continue
            path = self.gateway.profile.path
            signature = self.current_signature()
            if signature[0] is None:
                if not self.reported_missing:
                    self.reported_missing = True
                    log.warning("profile %s is gone; keeping the loaded one", path)
                continue
            self.reported_missing = False
            if signature in (self.loaded_signature, self.refused_signature):
                continue
            try:
                # Reading and validating off the loop: requests go on meanwhile.
                profile = await asyncio.to_thread(load_profile, path)
                if path == self.gateway.profile.path:  # not swapped for another one meanwhile
                    self.install(profile, files_signature(signature[0], profile))
            except ProfileError as e:
                self.refused_signature = signature
                self.refused(e)

    @command.command("ambassador.reload")
    def reload(self) -> None:
        """Reload the running profile from its file."""
        assert self.gateway
        try:
            self.swap(self.gateway.profile.path)
        except ProfileError as e:
            self.refused(e)
            raise exceptions.CommandError(str(e)) from None

    @command.command("ambassador.profile")
    def profile(self, path: str) -> None:
        """Switch to another profile (a YAML path or a name under profiles/)."""
        try:
            ctx.options.update(ambassador_profile=path)
        except exceptions.OptionsError as e:
            raise exceptions.CommandError(str(e)) from None


def body_size_limit() -> int | None:
    """mitmproxy's body_size_limit in bytes: it bounds the upstreams' answers too."""
    if "body_size_limit" not in ctx.options:
        return None  # mitmproxy's proxy server addon defines it; a bare test context has none
    return human.parse_size(ctx.options.body_size_limit)


def json_response(status: int, payload, headers: dict[str, str] | None = None) -> http.Response:
    # Compact: batch and aggregate answers embed whole upstream bodies, indentation would add to them.
    return http.Response.make(status, json.dumps(payload, separators=(",", ":")).encode(), {"Content-Type": "application/json", **(headers or {})})


def error_response(error: AmbassadorError) -> http.Response:
    if not error.counted:  # refused before any upstream service handled it
        metrics.count_refusal(error.upstream, error.reason)
    response = http.Response.make(error.status, error.body(), {"Content-Type": "application/json", **error.headers})
    if error.upstream:
        response.headers["X-Ambassador-Upstream"] = error.upstream
    return response


def addressed_to_ambassador(flow: http.HTTPFlow, allowed_hosts: frozenset[str]) -> bool:
    """A request for the ambassador itself rather than one through it as an HTTP proxy (see
    routing.names_ambassador)."""
    return names_ambassador(flow.request.host, flow.request.port, flow.client_conn.sockname[:2], allowed_hosts)


class AdminEndpoints:
    """`/_ambassador/...` belongs to the ambassador on every listener: the read-only endpoints
    answered from one table (path -> answer), anything else under the prefix is a 404. Batch
    and jobs, which talk to upstreams, are addons of their own before this one (compose.py).

    Health is answered only once a profile is loaded: before that every request, this one
    included, gets `503 not_ready` at its header block (AmbassadorAddons.requestheaders)."""

    admin_only = True  # acts on `/_ambassador/...` requests only (see AmbassadorAddons)

    def __init__(self, manager: ProfileManager):
        self.manager = manager
        self.endpoints = {  # all answer GET (and HEAD)
            f"{ADMIN_PREFIX}/status": lambda flow: json_response(200, self.manager.gateway.status()),
            f"{ADMIN_PREFIX}/health": lambda flow: json_response(200, {"status": "ok", "profile": str(self.manager.gateway.profile.path)}),
            METRICS_PATH: metrics_response,
        }

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or not is_admin_path(flow.request.path):
            return
        path = flow.request.path.split("?", 1)[0]
        answer = self.endpoints.get(path)
        if answer is None:
            flow.response = error_response(AmbassadorError("no_route", f"no admin endpoint {path}"))
        elif flow.request.method not in ("GET", "HEAD"):
            flow.response = error_response(AmbassadorError("bad_request", f"{path} answers GET only"))
        else:
            flow.response = answer(flow)


# The route and service a flow was matched to; kept off flow.metadata because metadata is
# written to flow files and must stay serialisable.
_attached: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[UpstreamService, Route]] = weakref.WeakKeyDictionary()


def attached(flow: http.HTTPFlow) -> tuple[UpstreamService, Route] | None:
    """The (service, route) the Router matched this flow to, until the Forwarder takes it."""
    return _attached.get(flow)


def detach(flow: http.HTTPFlow) -> None:
    """For an addon that answered a matched flow itself: mitmweb keeps flows, and the entry
    would keep a replaced service alive with it."""
    _attached.pop(flow, None)


class Router:
    """Matches a flow to its upstream by `match.host` (proxy requests) or `match.path_prefix`."""

    def __init__(self, manager: ProfileManager):
        self.manager = manager

    def http_connect(self, flow: http.HTTPFlow) -> None:
        gateway = self.manager.gateway
        if not gateway.routes.for_host(flow.request.host, flow.request.port):
            flow.response = error_response(no_upstream_matches(flow.request.host, flow.request.port))

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        gateway = self.manager.gateway
        request = flow.request
        try:
            upstream = gateway.routes.for_host(request.host, request.port)
            if upstream:
                route = gateway.routes.for_proxy(upstream, request.path)
            elif addressed_to_ambassador(flow, gateway.profile.allowed_hosts):
                route = gateway.routes.for_path(request.path)
            else:
                raise no_upstream_matches(request.host, request.port)
        except AmbassadorError as e:
            flow.response = error_response(e)
            return
        _attached[flow] = (gateway.services[route.upstream.name], route)
        flow.metadata["ambassador"] = {"upstream": route.upstream.name, "upstream_url": str(route.upstream.url.origin + route.path)}


class Forwarder:
    """Performs the exchange with the matched upstream and hands mitmproxy the answer.

    mitmproxy does not cancel a hook whose client went away, so the exchange is a task of its
    own, cancelled when its client disconnects: a request waiting for the upstream's limit
    leaves the queue, and one under way stops using the upstream for nobody.
    """

    def __init__(self, manager: ProfileManager, flows: UpstreamFlows):
        self.manager = manager
        self.flows = flows
        self.exchanges: dict[str, set[asyncio.Task]] = {}  # by client connection id

    def client_disconnected(self, client) -> None:
        for task in self.exchanges.pop(client.id, ()):
            task.cancel()

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        attached = _attached.pop(flow, None)
        if attached is None:
            return
        service, route = attached
        upstream_request = None
        try:
            upstream_request = to_upstream_request(flow, route)
            self.flows.watch(flow, upstream_request, self.manager.gateway.services)
            answer = await self.exchange(flow, service.handle(upstream_request))
        except asyncio.CancelledError:
            if not flow.client_conn.timestamp_end:
                raise  # mitmproxy itself is stopping the hook
            if flow.killable:
                flow.kill()  # nobody to answer, and it must not go anywhere else either
            return
        except AmbassadorError as e:
            e.upstream = e.upstream or service.upstream.name
            flow.metadata["ambassador"]["reason"] = e.reason
            flow.response = error_response(e)
        else:
            flow.response = to_mitm_response(answer, flow.request.http_version, service.upstream.name)
        if upstream_request is not None:
            record_notes(flow, upstream_request)


    async def exchange(self, flow: http.HTTPFlow, handling) -> UpstreamResponse:
        client = flow.client_conn.id
        task = asyncio.get_running_loop().create_task(handling)
        tasks = self.exchanges.setdefault(client, set())
        tasks.add(task)
        try:
            return await task
        finally:
            tasks.discard(task)
            if not tasks and self.exchanges.get(client) is tasks:
                del self.exchanges[client]


def record_notes(flow: http.HTTPFlow, request: UpstreamRequest) -> None:
    """Keep what the stages did on the flow, where flow files, logs and mitmweb can see it.

    `shown_headers` replace the client's request headers of the same name with the
    (redacted) values the stages sent upstream, so that no secret reaches a flow file.
    """
    notes = dict(request.notes)
    for name, value in notes.get("shown_headers", {}).items():
        flow.request.headers[name] = value
    flow.metadata["ambassador"].update(notes)
    if notes.get("replayed"):
        flow.is_replay = "response"  # mitmweb and the console mark it as replayed


def to_upstream_request(flow: http.HTTPFlow, route: Route) -> UpstreamRequest:
    headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in flow.request.headers.fields)
    return client_request(flow.request.method, route, headers, flow.request.raw_content or b"")


def to_mitm_response(answer: UpstreamResponse, http_version: str, upstream_name: str) -> http.Response:
    headers = answer.headers
    if "X-Ambassador-Upstream" in headers:  # the upstream's own, never doubled with ours
        headers = headers.copy()
        del headers["X-Ambassador-Upstream"]
    fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    fields.append((b"X-Ambassador-Upstream", upstream_name.encode()))
    if http_version in ("HTTP/2.0", "HTTP/3"):
        # HTTP/2 and 3 want lower-case field names; mitmproxy would fix and log each one.
        fields = [(k.lower(), v) for k, v in fields]
    now = time.time()
    return unchecked_response(
        http_version=http_version.encode(),
        status_code=answer.status,
        reason=answer.reason.encode("latin-1", "replace"),
        headers=http.Headers(fields),
        content=answer.body,
        trailers=None,
        timestamp_start=now,
        timestamp_end=now,
    )


def unchecked_response(**fields) -> http.Response:
    """`http.Response(**fields)` without its run-time type check of every field.

    mitmproxy checks the fields of each new message against their annotations unless Python
    runs with -O (`if __debug__` in `http.MessageData`): about a third of what building an
    answer costs, on every request. Ours come from typed values (tests/test_addons.py checks
    the result against the checked constructor's)."""
    data = object.__new__(http.ResponseData)
    data.__dict__.update(fields)
    response = object.__new__(http.Response)
    response.data = data
    return response


class NoDirectUpstream:
    """The ambassador talks to upstreams itself; mitmproxy never connects anywhere.

    Defence in depth for "never an open proxy": should a flow ever leave the hooks above
    without an answer (a bug), it gets an error here instead of being forwarded to whatever
    host the client named.
    """

    def server_connect(self, data) -> None:
        data.server.error = "the ambassador does not let mitmproxy connect to upstreams"

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        log.error("no addon answered %s %s; refusing it", flow.request.method, flow.request.pretty_url)
        flow.response = error_response(AmbassadorError("internal_error", "the ambassador could not handle this request"))


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
            flow.response = error_response(AmbassadorError("not_ready", "the ambassador has no profile loaded yet"))
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
    acts first, at the header block, on every request."""
    from .client_gate import ClientGate  # these build on this module
    from .client_limits import ClientLimits
    from .compose import Aggregates, Batch, JobEndpoint, RespondAsync
    from .jobs import Jobs

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
        AdminCommands(manager),
        ClientLimits(),
    ]
