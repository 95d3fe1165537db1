"""Response aggregation: one GET fans out to several upstreams at once.

Each part is an ordinary `UpstreamRequest` handed to its upstream's `UpstreamService`, the
path a direct request takes, so every part gets that upstream's auth, cache, breaker and retry.
The decisions are plain Python; `Aggregates`, at the end, is the mitmproxy addon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import parse_qsl, quote, unquote

from mitmproxy import http
from multidict import CIMultiDict

from . import bounded
from .answers import json_response, refuse
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse
from .forward import addressed_to_ambassador, answered, only_path, to_upstream_request
from .gateway import Gateway
from .profile import PART_PLACEHOLDER_RE, PLACEHOLDER_RE, QUERY_PLACEHOLDER, Aggregate, Profile
from .profile_manager import ProfileManager
from .routing import Route, check_no_dot_segments, join_path
from .service import UpstreamService
from .upstream_flows import UpstreamFlows

# Parts are decoded to be embedded, so ask upstreams for identity bodies.
NOT_FORWARDED_TO_PARTS = frozenset({"accept-encoding"})


def decoded_body(response: UpstreamResponse, upstream: str) -> bytes:
    """The body without its Content-Encoding (upstreams may compress even when not asked to);
    too_large beyond the bound. A body in a coding we cannot undo is kept as it is."""
    try:
        return bounded.decoded(response.body, response.headers.get("Content-Encoding", ""))
    except bounded.TooLarge:
        raise bounded.too_large(upstream, "a body") from None
    except bounded.Undecodable:
        return response.body


def embedded(response: UpstreamResponse, upstream: str) -> Any:
    """A body as a JSON value: JSON bodies as JSON, others as text, an empty body as null."""
    return json_value(response.headers, decoded_body(response, upstream))


def json_value(headers: CIMultiDict[str], body: bytes) -> Any:
    if not body:
        return None
    content_type = headers.get("Content-Type", "")
    if not content_type or is_json_type(content_type):
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            pass
    return body.decode("utf-8", "replace")


def is_json_type(content_type: str) -> bool:
    """`application/json` or a `+json` type, parameters aside."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def answer_of(error: AmbassadorError) -> UpstreamResponse:
    """The ambassador's own answer for a request, as a response to embed or keep."""
    headers = CIMultiDict({"Content-Type": "application/json", **error.headers})
    return UpstreamResponse(error.status, "", headers, error.body())


@dataclass(frozen=True)
class CompiledAggregate:
    aggregate: Aggregate
    pattern: re.Pattern[str]


class AggregateTable:
    """The profile's aggregate paths as regular expressions, compiled once per profile."""

    def __init__(self, profile: Profile):
        self.entries = [CompiledAggregate(a, _compile(a.template)) for a in profile.aggregates.values()]

    def match(self, path: str) -> tuple[Aggregate, dict[str, str]] | None:
        """The aggregate serving this request path (no query) and its decoded captures."""
        for entry in self.entries:
            if m := entry.pattern.fullmatch(path):
                return entry.aggregate, {name: unquote(value) for name, value in m.groupdict().items()}
        return None


def _compile(template: str) -> re.Pattern[str]:
    segments = []
    for segment in template.split("/"):
        m = PLACEHOLDER_RE.fullmatch(segment)
        segments.append(f"(?P<{m.group(1)}>[^/]+)" if m else re.escape(segment))
    return re.compile("/".join(segments))


def query_values(query: str) -> dict[str, str]:
    """The client's query parameters, decoded once (`+` is a space); a repeated name keeps
    its first value. Bytes that are no UTF-8 are kept as they came (surrogateescape)."""
    values: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, errors="surrogateescape"):
        values.setdefault(name, value)
    return values


def part_path(template: str, captures: Mapping[str, str], query: Mapping[str, str] | None = None) -> str:
    """A part's path with the captures and `{query.name}` parameters filled in, each confined
    to where it stands.

    Values are percent-encoded completely ('/', '?', '&', '#' included), and a part path
    that would still hold a '.' or '..' segment is refused (upstreams may decode them). A
    `{query.name}` the client's query lacks is a bad_request.
    """
    path = PART_PLACEHOLDER_RE.sub(lambda m: _filled(m.group(1), captures, query or {}), template)
    check_no_dot_segments(path)
    return path


def _filled(name: str, captures: Mapping[str, str], query: Mapping[str, str]) -> str:
    """A placeholder's value, percent-encoded completely."""
    if name.startswith(QUERY_PLACEHOLDER):
        parameter = name[len(QUERY_PLACEHOLDER):]
        if parameter not in query:
            raise AmbassadorError("bad_request", f"this aggregate needs the query parameter {parameter} (?{parameter}=...)")
        value = query[parameter]
    else:
        value = captures[name]
    return quote(value.encode("utf-8", "surrogateescape"), safe="")


@dataclass
class PartResult:
    name: str
    upstream: str
    response: UpstreamResponse | None = None
    value: Any = None  # the response's body as embedded in the answer
    error: AmbassadorError | None = None
    notes: dict | None = None

    @property
    def failed(self) -> bool:
        return self.response is None or self.response.status >= 400

    def failure(self) -> dict:
        if self.error is not None:
            return {"status": self.error.status, "reason": self.error.reason, "error": self.error.message}
        return {
            "status": self.response.status,
            "reason": "upstream_status",
            "error": f"upstream {self.upstream} answered {self.response.status} {self.response.reason}".rstrip(),
            "body": self.value,
        }


async def fan_out(
    services: Mapping[str, UpstreamService],
    aggregate: Aggregate,
    captures: Mapping[str, str],
    template: UpstreamRequest,
    query: Mapping[str, str] | None = None,
) -> tuple[int, dict, list[PartResult]]:
    """Request every part concurrently; the answer's status, its JSON document, and the parts.

    `template` carries the client's headers and overrides (timeout...); parts are GETs with no
    body. `query` holds the client's query parameters (`query_values`). Raises AmbassadorError
    (bad_request) before any upstream contact when a capture or parameter is hostile, or a
    parameter a part names is missing.
    """
    headers = CIMultiDict((k, v) for k, v in template.headers.items() if k.lower() not in NOT_FORWARDED_TO_PARTS)
    planned = []
    for name, part in aggregate.parts.items():
        service = services[part.upstream]
        path = join_path(service.upstream.url.base_path, part_path(part.path, captures, query))
        request = dataclasses.replace(
            template, method="GET", path=path, headers=headers.copy(), body=b"", notes={}, max_body=bounded.MAX_BODY
        )
        planned.append((name, service, request))
    results = await asyncio.gather(*(_run_part(name, service, request) for name, service, request in planned))
    document: dict[str, Any] = {}
    errors = {}
    for result in results:
        if result.failed:
            errors[result.name] = result.failure()
        else:
            document[result.name] = result.value
    if errors:
        document["_errors"] = errors
    status = 502 if len(errors) == len(results) else 200
    return status, document, list(results)


async def _run_part(name: str, service: UpstreamService, request: UpstreamRequest) -> PartResult:
    result = PartResult(name, service.upstream.name, notes=request.notes)
    try:
        response = await service.handle(request)
        result.value = embedded(response, result.upstream)
        result.response = response
    except AmbassadorError as e:
        result.error = e
    return result


class Aggregates:
    """`GET` on an aggregate path of the profile: its parts, requested concurrently, as one JSON."""

    def __init__(self, manager: ProfileManager, flows: UpstreamFlows):
        self.manager = manager
        self.flows = flows
        self.compiled: tuple[Gateway | None, AggregateTable | None] = (None, None)

    def table(self, gateway: Gateway) -> AggregateTable:
        """Compiled once per loaded profile."""
        if self.compiled[0] is not gateway:
            self.compiled = (gateway, AggregateTable(gateway.profile))
        return self.compiled[1]

    async def request(self, flow: http.HTTPFlow) -> None:
        gateway = self.manager.gateway
        if answered(flow) or not gateway.profile.aggregates:
            return
        request = flow.request
        if not addressed_to_ambassador(flow, gateway.profile.allowed_hosts):
            return  # a proxy request (the Router answers it), not one for the ambassador itself
        found = self.table(gateway).match(only_path(flow))
        if found is None:
            return
        aggregate, captures = found
        try:
            if request.method != "GET":
                raise AmbassadorError("bad_request", f"aggregate {aggregate.template} answers GET only")
            first = gateway.profile.upstreams[next(iter(aggregate.parts.values())).upstream]
            template = to_upstream_request(flow, Route(first, request.path))  # the client's headers and timeout
            self.flows.watch(flow, template, gateway.services)  # the parts are copies of it
            query = query_values(request.path.partition("?")[2])
            status, document, parts = await fan_out(gateway.services, aggregate, captures, template, query)
        except AmbassadorError as e:
            e.upstream = None  # the aggregate's own problem, not one upstream's
            refuse(flow, e)
            return
        flow.response = json_response(status, document)
        flow.metadata["ambassador"] = {
            "aggregate": aggregate.template,
            "parts": {
                part.name: {
                    "upstream": part.upstream,
                    "status": part.response.status if part.response else part.error.status,
                    **{k: v for k, v in part.notes.items() if k != "shown_headers"},
                }
                for part in parts
            },
        }
