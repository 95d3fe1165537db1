"""Every exchange the ambassador makes with the network, as a flow of its own.

A client's request is one flow; the exchanges behind it (each try, each token fetch, each
aggregate part and batch item, an async job's call) are what a person opens mitmweb to see:
the request that really went out (the upstream's URL, its headers with secrets redacted), the
answer of a failed try, the token endpoint's answer. `UpstreamFlows` gives each its own flow
in the flow list (mitmweb, the console) and in recordings (`./run.sh record`), linked both ways
with the client's flow: the child's `metadata["ambassador"]["client_flow"]` and comment name the
client flow, and the client flow's metadata lists its children's ids (`exchanges`).

Child flows are not live (`flow.live` is False) and come with a response or an error already:
mitmproxy's other addons see them through the master's `response`/`error` hooks, as they see a
flow loaded from a file; an addon script that should leave them alone checks `flow.live`.

Making a flow per exchange costs time on every request; option `ambassador_upstream_flows`:
`auto` (the default) makes them where someone can look at them (a flow list: mitmweb, the
console) or keep them (`save_stream_file`, so under `./run.sh record`), `on` always, `off` never.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from mitmproxy import connection, ctx, exceptions, flow, http
from mitmproxy.proxy.layers.http import HttpErrorHook, HttpResponseHook

from .exchange import UpstreamExchange, UpstreamRequest
from .service import UpstreamService

log = logging.getLogger("ambassador")

MODES = ("auto", "on", "off")
EXCHANGE_MARKER = ":arrow_right:"  # mitmweb's filter: ~marker arrow_right
FAILED_MARKER = ":warning:"

Redact = Callable[[str], str]


def wanted(mode: str, has_flow_list: bool, saving: bool) -> bool:
    return mode == "on" or (mode == "auto" and (has_flow_list or saving))


def child_flow(exchange: UpstreamExchange, redact: Redact, client_flow: http.HTTPFlow | None) -> http.HTTPFlow:
    """The exchange as a mitmproxy flow, every secret in it redacted."""
    url = redact(exchange.url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    client = connection.Client(
        peername=client_flow.client_conn.peername if client_flow else ("127.0.0.1", 0),
        sockname=client_flow.client_conn.sockname if client_flow else ("127.0.0.1", 0),
        timestamp_start=exchange.started,
    )
    server = connection.Server(address=(parts.hostname or "", port), timestamp_start=exchange.started)
    child = http.HTTPFlow(client, server, live=False)
    child.request = http.Request.make(
        exchange.method,
        url,
        redact_bytes(exchange.body, redact),
        [(k.encode("latin-1"), redact(v).encode("latin-1")) for k, v in exchange.headers.items()],
    )
    child.request.timestamp_start = child.request.timestamp_end = exchange.started
    if exchange.response is not None:
        answer = exchange.response
        child.response = http.Response.make(
            answer.status,
            redact_bytes(answer.body, redact),
            [(k.encode("latin-1"), redact(v).encode("latin-1")) for k, v in answer.headers.items()],
        )
        child.response.reason = answer.reason
        child.response.timestamp_start = child.response.timestamp_end = exchange.ended
    else:
        child.error = flow.Error(exchange.error or "no answer", timestamp=exchange.ended)
    return child


def redact_bytes(body: bytes, redact: Redact) -> bytes:
    if not body:
        return body
    # latin-1 maps every byte to one character and back: binary bodies survive unchanged.
    return redact(body.decode("latin-1")).encode("latin-1")


def describe(exchange: UpstreamExchange, number: int, client_flow_id: str | None) -> str:
    """The child flow's comment: what it was first, as mitmweb's comment column is narrow."""
    what = "token fetch" if exchange.kind == "token" else f"try {number}"
    outcome = f"{exchange.response.status}" if exchange.response is not None else f"failed: {exchange.error}"
    parts = [f"upstream {exchange.upstream}", f"{what}: {outcome}", f"{(exchange.ended - exchange.started) * 1000:.0f}ms"]
    if client_flow_id:
        parts.append(f"for client flow {client_flow_id}")
    return " · ".join(parts)


def marker(exchange: UpstreamExchange) -> str:
    """Every upstream exchange is marked; one that failed or was refused stands out."""
    if exchange.response is None or exchange.response.status >= 500 or exchange.response.status == 429:
        return FAILED_MARKER
    return EXCHANGE_MARKER


class UpstreamFlows:
    def __init__(self) -> None:
        self.enabled = False
        self.pending: set[asyncio.Task] = set()

    def load(self, loader) -> None:
        loader.add_option(
            "ambassador_upstream_flows",
            str,
            "auto",
            "Show each upstream exchange (try, token fetch, part, item, job) as a flow of its own: "
            "auto (where there is a flow list or a recording), on, off.",
            choices=MODES,
        )

    def configure(self, updated) -> None:
        if {"ambassador_upstream_flows", "save_stream_file"} & set(updated):
            mode = ctx.options.ambassador_upstream_flows
            if mode not in MODES:
                raise exceptions.OptionsError(f"ambassador_upstream_flows must be one of {', '.join(MODES)}")
            saving = bool(ctx.options.save_stream_file) if "save_stream_file" in ctx.options else False
            self.enabled = wanted(mode, ctx.master.addons.get("view") is not None, saving)

    def watch(self, client_flow: http.HTTPFlow, request: UpstreamRequest, services: Mapping[str, UpstreamService]) -> None:
        """Make a flow of each exchange made for `request` (and its copies), as it ends."""
        if not self.enabled:
            return
        tries: Counter[str] = Counter()

        def observe(exchange: UpstreamExchange) -> None:
            service = services.get(exchange.upstream)
            if service is None:
                return
            if exchange.kind == "try":
                tries[exchange.upstream] += 1
            try:
                child = child_flow(exchange, service.redact, client_flow)
                path = urlsplit(exchange.url)
                requested = service.without_credential((path.path or "/") + (f"?{path.query}" if path.query else ""))
                self.add(child, exchange, tries[exchange.upstream], client_flow, requested)
            except Exception:  # showing an exchange must never break it
                log.exception("could not show the exchange with upstream %s as a flow", exchange.upstream)

        request.observer = observe

    def add(self, child: http.HTTPFlow, exchange: UpstreamExchange, number: int, client_flow: http.HTTPFlow, requested: str) -> None:
        # `upstream_path`: the path the request had at the upstream, without the credential;
        # replay matches on it (see replay.py).
        notes = {"upstream": exchange.upstream, "exchange": exchange.kind, "try": number, "upstream_path": requested}
        if client_flow is not None:
            notes["client_flow"] = client_flow.id
            client_flow.metadata.setdefault("ambassador", {}).setdefault("exchanges", []).append(child.id)
        child.metadata["ambassador"] = notes
        child.comment = describe(exchange, number, client_flow.id if client_flow else None)
        child.marked = marker(exchange)
        if (view := ctx.master.addons.get("view")) is not None:
            view.add([child])
        # What mitmproxy's own addons (save, dump, the flow list) see of a finished flow.
        event = HttpResponseHook(child) if child.response is not None else HttpErrorHook(child)
        task = asyncio.get_running_loop().create_task(ctx.master.addons.handle_lifecycle(event))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def done(self) -> None:
        await asyncio.gather(*self.pending, return_exceptions=True)
