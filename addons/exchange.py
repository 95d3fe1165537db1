"""One request to one upstream and its answer, independent of mitmproxy flows.

Direct requests, aggregate parts, batch items and async jobs all become an
`UpstreamRequest` and go through the same `UpstreamService` of their upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from multidict import CIMultiDict

from .errors import AmbassadorError
from .fields import HOP_BY_HOP, TRANSPORT_OWNED
from .profile import duration
from .routing import Route

REDACTED = "[redacted]"  # what is shown and stored in place of a secret

def end_to_end(headers: CIMultiDict[str], *also_drop: str) -> CIMultiDict[str]:
    """The headers without hop-by-hop fields, those named in Connection, and `also_drop`."""
    drop = HOP_BY_HOP.union(also_drop) if also_drop else HOP_BY_HOP
    if "connection" in headers:
        drop = drop.union(token.strip() for value in headers.getall("connection") for token in value.split(","))
    kept = headers.copy()
    for name in drop:  # a few lookups in C instead of a Python loop over every field
        if name in kept:
            del kept[name]
    return kept


@dataclass
class UpstreamRequest:
    method: str
    path: str  # path and query at the upstream, its base path included
    headers: CIMultiDict[str]  # end-to-end headers only; Host and Content-Length are the transport's
    body: bytes = b""
    timeout: float | None = None  # shortens the upstream's own timeout, never lengthens it
    # The client's X-Ambassador-Timeout as it asked, kept when the retry stage sets `timeout`
    # per try: a timeout the client caused says nothing about the upstream's health.
    client_timeout: float | None = None
    retries: int | None = None  # X-Ambassador-Retries: lowers the retry policy's tries, never raises them
    # Answer bytes read at most, below body_size_limit: answers the ambassador holds whole
    # (aggregate parts, batch items, SOAP, async jobs) fail with too_large beyond it.
    max_body: int | None = None
    started: float = field(default_factory=time.monotonic)
    # What the ambassador did (attempts, cache result...), for headers, logs and mitmweb.
    notes: dict[str, Any] = field(default_factory=dict)
    # Told of each exchange made with the network for this request (tries, token fetches), as
    # it ends: mitmweb shows each as a flow of its own. Shared by all copies, like `notes`.
    observer: Callable[[UpstreamExchange], None] | None = None
    # Which of the upstream's URLs the request goes to: 0 for `url`, then its failover URLs.
    target: int = 0


    def with_header(self, name: str, value: str) -> UpstreamRequest:
        """A copy carrying `name: value` instead of any value of `name`; `notes` stay shared.

        Stages never change the request they were given: outer stages (the cache deciding
        what to store and what to invalidate) must see it as the client sent it.
        """
        headers = self.headers.copy()
        headers[name] = value
        return replace(self, headers=headers)

    def with_path(self, path: str) -> UpstreamRequest:
        return replace(self, path=path)


@dataclass
class UpstreamResponse:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class UpstreamExchange:
    """One exchange with the network as it went over the wire: a try of a request, or a token
    fetch made for it. `headers` and `body` are as sent, credentials included: whoever shows
    them redacts them first (`UpstreamService.redact`)."""

    kind: str  # "try" or "token"
    upstream: str
    method: str
    url: str
    headers: CIMultiDict[str]
    body: bytes
    started: float  # time.time()
    ended: float
    response: UpstreamResponse | None = None
    error: str | None = None  # why no response came


def client_request(method: str, route: Route, headers: CIMultiDict[str], body: bytes) -> UpstreamRequest:
    """A client's request for `route`, after the ambassador's header rules.

    `X-Ambassador-*` headers are instructions to the ambassador and never go upstream;
    hop-by-hop fields, Host and Content-Length belong to the transport.
    """
    ambassador_headers = [k for k in headers if k[:13].lower() == "x-ambassador-"]
    timeout, retries = instructions(headers, route.upstream.name) if ambassador_headers else (None, None)
    return UpstreamRequest(
        method=method,
        path=route.path,
        headers=end_to_end(headers, *TRANSPORT_OWNED, *ambassador_headers),
        body=body,
        timeout=timeout,
        client_timeout=timeout,
        retries=retries,
    )


def instructions(headers: CIMultiDict[str], name: str) -> tuple[float | None, int | None]:
    """The client's X-Ambassador-Timeout and X-Ambassador-Retries, checked."""
    timeout = retries = None
    if "X-Ambassador-Timeout" in headers:
        try:
            timeout = duration(headers["X-Ambassador-Timeout"])
            if timeout <= 0:
                raise ValueError("not positive")
        except ValueError:
            raise AmbassadorError("bad_request", "X-Ambassador-Timeout must be a positive duration like 2s or 500ms", name) from None
    if "X-Ambassador-Retries" in headers:
        value = headers["X-Ambassador-Retries"].strip()
        if not (value.isascii() and value.isdecimal()):
            raise AmbassadorError("bad_request", "X-Ambassador-Retries must be a number of retries (0 disables them)", name)
        retries = int(value)
    return timeout, retries
