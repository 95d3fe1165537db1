"""The `fallback` stage: the profile's answer when the upstream cannot be used.

It is the outermost stage, so every other way of answering comes first: the cache's stale
copy (stale-if-error), the retries, the failover URLs. What is left for it: the breaker is open
(every URL's), or every try failed (connection error, timeout, an answer with one of the
breaker's failure statuses). Aggregate parts, batch items and async jobs pass it too: it is
the service's answer. The answer is never stored by the cache, which sits below it.
"""

from __future__ import annotations

import http

from multidict import CIMultiDict

from . import metrics
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse
from .profile import FallbackAnswer
from .switches import FeatureSwitch

UNUSABLE_REASONS = frozenset({"circuit_open", "timeout", "connect_error"})
MARK_HEADER = "X-Ambassador-Fallback"


def needs_fallback(outcome: UpstreamResponse | AmbassadorError, failure_statuses: frozenset[int]) -> bool:
    if isinstance(outcome, AmbassadorError):
        return outcome.reason in UNUSABLE_REASONS
    return outcome.status in failure_statuses


def phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:  # a status the profile may give that Python has no name for (299)
        return ""


class FallbackStage:
    name = "fallback"

    def __init__(self, upstream_name: str, answer: FallbackAnswer, failure_statuses: frozenset[int]):
        self.answer = answer
        self.failure_statuses = failure_statuses
        self.reason = phrase(answer.status)
        self.fallbacks = metrics.FALLBACKS.labels(upstream_name)
        self.count = 0  # for the status

    async def __call__(self, request: UpstreamRequest, call_next) -> UpstreamResponse:
        try:
            outcome = await call_next(request)
        except AmbassadorError as e:
            if not needs_fallback(e, self.failure_statuses):
                raise
            return self.fallback(request, e)
        if needs_fallback(outcome, self.failure_statuses):
            return self.fallback(request, outcome)
        return outcome

    def status(self) -> dict:
        return {"answers": self.count}

    def fallback(self, request: UpstreamRequest, outcome: UpstreamResponse | AmbassadorError) -> UpstreamResponse:
        self.fallbacks.inc()
        self.count += 1
        request.notes["fallback"] = outcome.reason if isinstance(outcome, AmbassadorError) else f"upstream answered {outcome.status}"
        body = b"" if request.method == "HEAD" else self.answer.body
        headers = CIMultiDict(self.answer.headers)
        headers["Content-Length"] = str(len(self.answer.body))
        headers[MARK_HEADER] = "1"
        if attempts := outcome.headers.get("X-Ambassador-Attempts"):
            headers["X-Ambassador-Attempts"] = attempts
        return UpstreamResponse(self.answer.status, self.reason, headers, body)


class Fallback(FeatureSwitch):
    """The fallback as a mitmproxy addon: its switch, option `ambassador_fallback`."""

    section = "fallback"
    does = "the profile's answer when the upstream gives none"
