"""The answers the ambassador makes itself, as mitmproxy responses: its JSON documents, its
refusals (every one rendered here, from an AmbassadorError) and an upstream's answer."""

from __future__ import annotations

import json
import time

from mitmproxy import http

from . import metrics
from .errors import AmbassadorError
from .exchange import UpstreamResponse


def json_response(status: int, payload, headers: dict[str, str] | None = None) -> http.Response:
    # Compact: batch and aggregate answers embed whole upstream bodies, indentation would add to them.
    return http.Response.make(status, json.dumps(payload, separators=(",", ":")).encode(), {"Content-Type": "application/json", **(headers or {})})


def refuse(flow: http.HTTPFlow, error: AmbassadorError) -> None:
    """Answer `flow` with the ambassador's own error, its reason kept on the flow for the log
    line, mitmweb's comment and marker, and recordings."""
    flow.response = error_response(error)
    notes = flow.metadata.setdefault("ambassador", {})
    notes["reason"] = error.reason
    if error.upstream:
        notes.setdefault("upstream", error.upstream)


def error_response(error: AmbassadorError) -> http.Response:
    if not error.counted:  # refused before any upstream service handled it
        metrics.count_refusal(error.upstream, error.reason)
    response = http.Response.make(error.status, error.body(), {"Content-Type": "application/json", **error.headers})
    if error.upstream:
        response.headers["X-Ambassador-Upstream"] = error.upstream
    return response


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
    answer costs, on every request. Ours come from typed values (tests/unit/test_addons.py checks
    the result against the checked constructor's)."""
    data = object.__new__(http.ResponseData)
    data.__dict__.update(fields)
    response = object.__new__(http.Response)
    response.data = data
    return response
