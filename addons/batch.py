"""`POST /_ambassador/batch`: several requests in one, run concurrently.

Each item is routed like a request of its own: by `path`, as a request addressed to the
ambassador (`match.path_prefix`), or by `url`, as a proxy request to a `match.host` upstream.
It is handed to its upstream's service, so it gets that upstream's policies. Only a batch that
is no list of item objects, or is too large, is refused whole; any other problem is the answer
in that item's slot, and the other items still run. The decisions are plain Python; `Batch`,
at the end, is the mitmproxy addon.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from mitmproxy import http
from multidict import CIMultiDict

from . import bounded
from .aggregate import NOT_FORWARDED_TO_PARTS, answer_of, decoded_body, is_json_type, json_value
from .answers import json_response, refuse
from .client_gate import REFUSED_METHODS
from .defaults import body_size_limit
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse, client_request
from .forward import answered, only_path
from .profile import ADMIN_PREFIX, HTTP_METHODS
from .profile_manager import ProfileManager
from .routing import Route, RouteTable, is_admin_path, no_upstream_matches
from .service import UpstreamService
from .upstream_flows import UpstreamFlows

BATCH_PATH = f"{ADMIN_PREFIX}/batch"
MAX_ITEMS = 100
MAX_BODY = 1024 * 1024  # bytes of the whole batch document
# The items' bodies together, when mitmproxy's body_size_limit (which the Batch addon passes on)
# is unset: mitmproxy run without run.sh.
MAX_ANSWER = 64 * 1024**2
ITEM_KEYS = frozenset({"method", "path", "url", "headers", "body"})
DEFAULT_PORTS = {"http": 80, "https": 443}  # the schemes an item's url may have
TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
BAD_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters; a tab is allowed
# They describe the body on the wire, not the decoded body embedded in the answer.
WIRE_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})


@dataclass
class BatchItem:
    route: Route
    request: UpstreamRequest


def bad(message: str) -> AmbassadorError:
    return AmbassadorError("bad_request", message)


def parse_batch(body: bytes, routes: RouteTable) -> list[BatchItem | AmbassadorError]:
    """Each item ready to run, or the error its slot answers with.

    Raises AmbassadorError(bad_request) for the batch as a whole only when it is no batch: not
    JSON, not a list, an item that is not an object, more than MAX_ITEMS items or MAX_BODY bytes.
    """
    if len(body) > MAX_BODY:
        raise bad(f"a batch is at most {MAX_BODY} bytes, got {len(body)}")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise bad("a batch must be a JSON list of requests; the body is not valid JSON") from None
    if not isinstance(document, list):
        raise bad(f"a batch must be a JSON list of requests, got a JSON {type(document).__name__}")
    if len(document) > MAX_ITEMS:
        raise bad(f"a batch holds at most {MAX_ITEMS} requests, got {len(document)}")
    for index, raw in enumerate(document):
        if not isinstance(raw, dict):
            raise bad(f"batch item {index} must be an object with method, path or url, headers, body; got a JSON {type(raw).__name__}")
    return [_item_or_error(raw, routes) for raw in document]


def _item_or_error(raw: dict, routes: RouteTable) -> BatchItem | AmbassadorError:
    try:
        return _parse_item(raw, routes)
    except AmbassadorError as e:
        return e


def _parse_item(raw: dict, routes: RouteTable) -> BatchItem:
    if unknown := raw.keys() - ITEM_KEYS:
        raise bad(f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(ITEM_KEYS))})")
    method = raw.get("method", "GET")
    if isinstance(method, str) and method.upper() in REFUSED_METHODS:
        raise AmbassadorError("method_not_allowed", f"{method.upper()} is not allowed")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise bad(f"method must be one of {', '.join(sorted(HTTP_METHODS - REFUSED_METHODS))}, got {method!r}")
    if ("url" in raw) == ("path" in raw):
        given = "not both" if "url" in raw else "got neither"
        raise bad(f"an item gives a path (a route on the ambassador) or a url (a match.host upstream), {given}")
    if "url" in raw:
        host, port, path = _split_url(raw["url"])
    else:
        path = raw.get("path")
    if not isinstance(path, str) or not path.startswith("/") or BAD_VALUE_RE.search(path) or " " in path:
        raise bad(f"path must be a path on the ambassador starting with '/', got {str(path)[:200]!r}")
    if is_admin_path(path):
        raise bad(f"{ADMIN_PREFIX}/ paths cannot be batched")
    headers = _headers(raw.get("headers") or {})
    body = _body(raw.get("body"), headers)
    route = _proxy_route(host, port, path, routes) if "url" in raw else routes.for_path(path)
    return BatchItem(route, upstream_request(method.upper(), route, headers, body))


def _split_url(url: Any) -> tuple[str, int, str]:
    """The host, port and path (query included) of an item's absolute `url`."""
    not_a_url = bad(f"url must be an absolute http:// or https:// URL, got {str(url)[:200]!r}")
    if not isinstance(url, str) or BAD_VALUE_RE.search(url) or " " in url:
        raise not_a_url
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is no number or out of range
    except ValueError:  # also an unclosed IPv6 bracket, a name that NFKC turns into '/' or '@'
        raise not_a_url from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise not_a_url
    if "@" in parts.netloc:
        raise bad("url must not carry a user or password: the upstream's auth supplies credentials")
    return parts.hostname, port or DEFAULT_PORTS[parts.scheme], (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _proxy_route(host: str, port: int, path: str, routes: RouteTable) -> Route:
    """Routed like a proxy request: only to an upstream whose `match.host` names the host."""
    upstream = routes.for_host(host, port)
    if upstream is None:
        raise no_upstream_matches(host, port)
    return routes.for_proxy(upstream, path)


def _headers(raw: Any) -> CIMultiDict[str]:
    if not isinstance(raw, dict):
        raise bad(f"headers must be an object of names to strings, got a JSON {type(raw).__name__}")
    headers = CIMultiDict()
    for name, value in raw.items():
        if not TOKEN_RE.match(name) or not isinstance(value, str) or BAD_VALUE_RE.search(value):
            raise bad(f"header {name!r}: names must be HTTP tokens and values strings without control characters")
        if any(ord(c) > 0xFF for c in value):
            raise bad(f"header {name!r}: values must be ISO-8859-1 text (HTTP header bytes)")
        headers.add(name, value)
    return headers


def _body(raw: Any, headers: CIMultiDict[str]) -> bytes:
    """null: no body; a string: sent as UTF-8 text; any other JSON value: sent as JSON, so
    under a JSON Content-Type only (the item's, else application/json)."""
    if raw is None:
        return b""
    if isinstance(raw, str):
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError:
            raise bad("body holds a lone surrogate, which is not Unicode text") from None
    content_type = headers.setdefault("Content-Type", "application/json")
    if not is_json_type(content_type):
        raise bad(
            f"body is a JSON {type(raw).__name__}, sent as JSON, but the item's Content-Type is {content_type[:100]!r}:"
            " give the body as a string, or a JSON Content-Type"
        )
    return json.dumps(raw).encode()


def upstream_request(method: str, route: Route, headers: CIMultiDict[str], body: bytes) -> UpstreamRequest:
    """The item as the Forwarder would send it: the same header rules and `X-Ambassador-*` overrides."""
    request = client_request(method, route, headers, body)
    request.max_body = bounded.MAX_BODY
    for name in NOT_FORWARDED_TO_PARTS:  # bodies are embedded in the answer: ask for identity bodies
        request.headers.popall(name, None)
    return request


@dataclass
class AnswerBudget:
    """Bytes of item bodies the batch answer may still hold: taken as items are answered, so a
    batch never holds more than its total at once beyond the items still being read."""

    total: int
    left: int = field(init=False)

    def __post_init__(self) -> None:
        self.left = self.total

    def take(self, size: int, upstream: str) -> None:
        if size > self.left:
            raise AmbassadorError(
                "too_large",
                f"this item's body ({size} bytes) would take the batch answer over {self.total} bytes"
                " (body_size_limit); send fewer items per batch",
                upstream,
                status=502,
            )
        self.left -= size


async def run_batch(
    items: list[BatchItem | AmbassadorError], services: Mapping[str, UpstreamService], total: int | None = None
) -> list[dict]:
    """Run the items concurrently; their answers in the items' order, an error in its own slot.
    The items' bodies together are at most `total` bytes: items answered once it is used up
    fail with too_large."""
    budget = AnswerBudget(total or MAX_ANSWER)
    return list(await asyncio.gather(*(_run_item(item, services, budget) for item in items)))


async def _run_item(item: BatchItem | AmbassadorError, services: Mapping[str, UpstreamService], budget: AnswerBudget) -> dict:
    if isinstance(item, AmbassadorError):
        answer = answer_of(item)
        return _slot(answer, answer.body, item.upstream)
    name = item.route.upstream.name
    try:
        answer = await services[name].handle(item.request)
        body = decoded_body(answer, name)
        budget.take(len(body), name)
    except AmbassadorError as e:
        e.upstream = e.upstream or name
        answer = answer_of(e)
        body = answer.body
    return _slot(answer, body, name)


def _slot(answer: UpstreamResponse, body: bytes, upstream: str | None) -> dict:
    """An item's place in the batch answer: its status, headers and (decoded) body."""
    headers: dict[str, str] = {}
    for key, value in answer.headers.items():
        if key.lower() in WIRE_HEADERS:
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if upstream:
        headers["X-Ambassador-Upstream"] = upstream
    return {"status": answer.status, "headers": headers, "body": json_value(answer.headers, body)}


class Batch:
    """`POST /_ambassador/batch`: a JSON list of requests, answered in order."""

    admin_only = True  # acts on `/_ambassador/...` requests only (see AmbassadorAddons)

    def __init__(self, manager: ProfileManager, flows: UpstreamFlows):
        self.manager = manager
        self.flows = flows

    async def request(self, flow: http.HTTPFlow) -> None:
        if answered(flow) or only_path(flow) != BATCH_PATH:
            return
        gateway = self.manager.gateway
        try:
            if flow.request.method != "POST":
                raise AmbassadorError("bad_request", f"{BATCH_PATH} answers POST only")
            items = parse_batch(flow.request.raw_content or b"", gateway.routes)
        except AmbassadorError as e:
            refuse(flow, e)
            return
        for item in items:
            if isinstance(item, BatchItem):
                self.flows.watch(flow, item.request, gateway.services)
        flow.response = json_response(200, await run_batch(items, gateway.services, body_size_limit()))
        # Per item: its upstream, or null for an item answered with an error before routing.
        flow.metadata.setdefault("ambassador", {})["batch"] = [
            item.route.upstream.name if isinstance(item, BatchItem) else item.upstream for item in items
        ]
