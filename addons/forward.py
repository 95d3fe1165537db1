"""Routing a client's request to its upstream and performing the exchange through that
upstream's service. Every flow gets an answer here (or from an addon before): mitmproxy itself
never opens an upstream connection, so the ambassador cannot be used as an open proxy."""

from __future__ import annotations

import asyncio
import logging
import weakref

from mitmproxy import http
from multidict import CIMultiDict

from .answers import refuse, to_mitm_response
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse, client_request
from .profile_manager import ProfileManager
from .routing import Route, names_ambassador, no_upstream_matches
from .service import UpstreamService
from .upstream_flows import UpstreamFlows

log = logging.getLogger("ambassador")


def addressed_to_ambassador(flow: http.HTTPFlow, allowed_hosts: frozenset[str]) -> bool:
    """A request for the ambassador itself rather than one through it as an HTTP proxy (see
    routing.names_ambassador)."""
    return names_ambassador(flow.request.host, flow.request.port, flow.client_conn.sockname[:2], allowed_hosts)


def answered(flow: http.HTTPFlow) -> bool:
    """Whether an addon before this one answered the flow, or it is gone."""
    return bool(flow.response or flow.error or not flow.live)


def only_path(flow: http.HTTPFlow) -> str:
    """The request's path without its query."""
    return flow.request.path.split("?", 1)[0]


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
            refuse(flow, no_upstream_matches(flow.request.host, flow.request.port))

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
            refuse(flow, e)
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
            refuse(flow, e)
        else:
            flow.response = to_mitm_response(answer, flow.request.http_version, service.upstream.name)
        if upstream_request is not None:
            record_notes(flow, upstream_request)


    async def exchange(self, flow: http.HTTPFlow, handling) -> UpstreamResponse:
        # A task of its own, so that the client going away cancels it (not mitmproxy's task
        # running the hook). Started eagerly: what needs no I/O (a cache hit, a refusal) is
        # done before this returns, without waiting for a turn of the event loop.
        task = asyncio.Task(handling, loop=asyncio.get_running_loop(), eager_start=True)
        if task.done():
            return task.result()
        client = flow.client_conn.id
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
        refuse(flow, AmbassadorError("internal_error", "the ambassador could not handle this request"))
