"""Who may use the ambassador: the first check of every request, on every door.

The ambassador holds every upstream's credentials and listens where any web page the user
opens can reach it. `ClientGate` refuses, before any other addon sees the request and before
its body matters, what only a hostile page or a smuggling attempt sends: a browser page of
another site (`Origin`, `Sec-Fetch-Site`), a name that is not the ambassador's (DNS
rebinding), `TRACE`/`TRACK`, and header fields with control bytes. The decision is
`refusal()`, over plain data.

Same origin: a page the ambassador served itself, i.e. an `Origin` equal to the request's own
scheme://host[:port] where that host names the ambassador (a loopback name or address or its
listen address at its port, or a name in `allowed_hosts`). Like a browser, it counts
`http://localhost:8080` and `http://127.0.0.1:8080` as two origins.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import NamedTuple, Sequence

from mitmproxy import http

from .answers import refuse
from .profile_manager import ProfileManager
from .errors import AmbassadorError
from .profile import ADMIN_PREFIX, normal_origin, origin_text
from .routing import is_admin_path, is_local_name, names_ambassador

# Methods that echo a request back (credentials included) or have no use through a proxy.
REFUSED_METHODS = frozenset({"TRACE", "TRACK"})
# Control bytes but HTAB. mitmproxy keeps an obs-fold line as CR LF in the field's value, and a
# bare CR as it came: either would be a line break to the next parser.
CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Sec-Fetch-Site values of a request a page of another origin made.
OTHER_SITE = frozenset({"cross-site", "same-site"})


class Arrival(NamedTuple):
    """What the gate judges of a request (a tuple: made for every request, cheaply)."""

    method: str
    scheme: str
    host: str  # where the request is for: the Host header, or the proxy request's target
    port: int
    path: str
    fields: Sequence[tuple[bytes, bytes]]  # the header block as received
    origin: str | None
    fetch_site: str | None
    listener: tuple[str, int]  # the address and port the request came in on
    proxy_host: bool  # `host` is an upstream's `match.host`


def refusal(arrival: Arrival, allowed_origins: frozenset[str], allowed_hosts: frozenset[str]) -> AmbassadorError | None:
    """Why the ambassador refuses this request, or None to let it in."""
    if CONTROL_BYTES.search(b"\t".join(chain.from_iterable(arrival.fields))):
        return AmbassadorError("bad_request", "a header field holds a control character (a line break, obs-fold line, NUL...)")
    if arrival.method.upper() in REFUSED_METHODS:
        return AmbassadorError("method_not_allowed", f"{arrival.method[:20]} is not allowed")
    own = names_ambassador(arrival.host, arrival.port, arrival.listener, allowed_hosts)
    if not (own or arrival.proxy_host):
        if not is_local_name(arrival.host, arrival.listener[0]):
            return AmbassadorError("not_allowed", f"Host {arrival.host[:100]!r} is not a name of the ambassador (add it to allowed_hosts)")
        if is_admin_path(arrival.path):
            return AmbassadorError("not_allowed", f"{ADMIN_PREFIX}/ is not served for host {arrival.host}:{arrival.port}")
    return origin_refusal(arrival, own, allowed_origins)


def origin_refusal(arrival: Arrival, own: bool, allowed_origins: frozenset[str]) -> AmbassadorError | None:
    """Browser requests: only from pages of `allowed_origins` or of the ambassador itself."""
    fetch_site = arrival.fetch_site and arrival.fetch_site.strip().lower()
    if arrival.origin is None:
        if fetch_site in OTHER_SITE:
            return AmbassadorError(
                "not_allowed", f"browser requests from other sites (Sec-Fetch-Site: {fetch_site[:30]}) need an Origin listed in allowed_origins"
            )
        return None  # not a page's request: apps, curl and SDKs send neither header
    origin = normal_origin(arrival.origin)
    if origin is not None and (
        origin in allowed_origins or (own and origin == origin_text(arrival.scheme, arrival.host.lower(), arrival.port))
    ):
        return None
    return AmbassadorError("not_allowed", f"requests from pages of Origin {arrival.origin[:100]!r} are refused (see allowed_origins)")


class ClientGate:
    """Runs `refusal()` on every request as soon as its header block is in: a refused request
    is answered without any other addon seeing it, and its body goes nowhere."""

    def __init__(self, manager: ProfileManager):
        self.manager = manager

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        request = flow.request
        headers = request.headers
        gateway = self.manager.gateway
        profile = gateway.profile
        arrival = Arrival(
            method=request.method,
            scheme=request.scheme,
            host=request.host,
            port=request.port,
            path=request.path,
            fields=headers.fields,
            origin=headers.get("Origin"),
            fetch_site=headers.get("Sec-Fetch-Site"),
            listener=flow.client_conn.sockname[:2],
            proxy_host=gateway.routes.for_host(request.host, request.port) is not None,
        )
        if error := refusal(arrival, profile.allowed_origins, profile.allowed_hosts):
            refuse(flow, error)
