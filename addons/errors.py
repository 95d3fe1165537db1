"""The ambassador's own answers: one exception type carrying the SPEC's reason codes."""

from __future__ import annotations

import json

STATUS_BY_REASON = {
    "no_route": 404,
    "not_allowed": 403,
    "circuit_open": 503,
    "timeout": 504,
    "connect_error": 502,
    "auth_failed": 502,
    "bad_request": 400,
    "not_recorded": 502,
    "rate_limited": 429,
    "method_not_allowed": 405,
    "too_large": 413,
    "headers_too_large": 431,
    "not_found": 404,
    "only_if_cached": 504,
    "upstream_error": 502,
    "internal_error": 500,
    "not_ready": 503,
}


class AmbassadorError(Exception):
    """A request the ambassador answers itself, with `{"error", "reason", "upstream"}` JSON."""

    # Set once the refusal is in the metrics (by the upstream service that raised it), so that
    # rendering it for the client does not count it again.
    counted = False

    def __init__(
        self,
        reason: str,
        message: str,
        upstream: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ):
        """`status` overrides the reason's usual one: `too_large` is 413 for a client's request
        but 502 for an upstream's answer over the limit."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.upstream = upstream
        self.status = status or STATUS_BY_REASON[reason]
        self.headers = headers or {}

    def body(self) -> bytes:
        return json.dumps({"error": self.message, "reason": self.reason, "upstream": self.upstream}).encode()
