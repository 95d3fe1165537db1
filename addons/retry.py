"""The `retry` stage: more tries for idempotent requests that failed in a way worth retrying.

Every try goes through the stages inside this one (breaker, auth) again: a try the breaker
refuses is not sent, and the client gets the last answer the upstream gave. The whole
exchange, waits included, stays within the upstream's `timeout` (or the client's shorter
`X-Ambassador-Timeout`). A try may use all the time left, so a slow but healthy upstream is
not cut short; `try_timeout` bounds each try, so that a hanging one leaves time for the next.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from typing import Callable

from . import metrics
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse
from .pacing import RETRY_AFTER_STATUSES, retry_after_seconds
from .profile import RetryPolicy
from .switches import FeatureSwitch

RETRIED_REASONS = frozenset({"timeout", "connect_error"})
BUDGET_PERIOD = 10  # seconds over which retries are weighed against requests


class RetryStage:
    """The `retry` stage; `deadline_of` is the service's: when the request's time is up."""

    name = "retry"

    def __init__(self, upstream_name: str, policy: RetryPolicy, deadline_of: Callable[[UpstreamRequest], float]):
        self.policy = policy
        self.deadline_of = deadline_of
        self.retries = metrics.RETRIES.labels(upstream_name)
        self.budget = RetryBudget(policy.budget) if policy.budget is not None else None

    def tries_for(self, request: UpstreamRequest) -> int:
        if request.method not in self.policy.methods:
            return 1
        if request.retries is not None:
            return min(self.policy.attempts, request.retries + 1)
        return self.policy.attempts

    def backoff(self, retry: int) -> float:
        """Exponential from `backoff`, with jitter so that clients failing together spread out."""
        ceiling = self.policy.backoff * 2 ** (retry - 1)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def __call__(self, request: UpstreamRequest, call_next) -> UpstreamResponse:
        tries = self.tries_for(request)
        if self.budget is not None:
            self.budget.requested(time.monotonic())
        deadline = self.deadline_of(request)
        outcome: UpstreamResponse | AmbassadorError | None = None
        sent = 0
        while True:
            attempt = request
            if tries > 1:
                # A shallow copy: the tries share the request's headers and notes.
                attempt = copy.copy(request)
                attempt.started = time.monotonic()
                left = deadline - attempt.started
                attempt.timeout = min(left, self.policy.try_timeout) if self.policy.try_timeout else left
            try:
                outcome = await call_next(attempt)
                retryable = outcome.status in self.policy.statuses
            except AmbassadorError as e:
                if e.reason == "circuit_open":
                    if outcome is None:
                        raise
                    break  # a retry the breaker refuses is not sent: answer with the last outcome
                outcome = e
                retryable = e.reason in RETRIED_REASONS
            sent += 1
            if not retryable or sent == tries:
                break
            wait = max(self.backoff(sent), retry_after(outcome) or 0.0)
            # Only retry when the wait leaves time for another try.
            if time.monotonic() + wait >= deadline:
                break
            if self.budget is not None and not self.budget.spend(time.monotonic()):
                request.notes["retry_budget"] = "spent"
                break
            self.retries.inc()
            await asyncio.sleep(wait)
        return self.report(request, outcome, sent)

    def report(self, request: UpstreamRequest, outcome: UpstreamResponse | AmbassadorError, sent: int) -> UpstreamResponse:
        sent += request.notes.get("hedged", 0)  # the hedge stage's extra copies are attempts too
        request.notes["attempts"] = sent
        if isinstance(outcome, AmbassadorError):
            outcome.headers["X-Ambassador-Attempts"] = str(sent)
            raise outcome
        outcome.headers["X-Ambassador-Attempts"] = str(sent)
        return outcome


def retry_after(outcome: UpstreamResponse | AmbassadorError) -> float | None:
    """Seconds an upstream 429/503 asked to wait (delay-seconds or an HTTP-date)."""
    if isinstance(outcome, AmbassadorError) or outcome.status not in RETRY_AFTER_STATUSES:
        return None
    seconds = retry_after_seconds(outcome.headers.get("Retry-After", ""), time.time())
    return None if seconds is None else max(0.0, seconds)


class RetryBudget:
    """Retries at most `share` of the requests of the last BUDGET_PERIOD seconds, so that a
    failing upstream is not sent several times its usual load; one retry a second is always
    allowed, so that a quiet upstream still gets its retries. Counted per second."""

    def __init__(self, share: float):
        self.share = share
        self.requests = [0] * BUDGET_PERIOD  # by second, index second % BUDGET_PERIOD
        self.retries = [0] * BUDGET_PERIOD
        self.second = 0  # the latest second counted

    def advance(self, now: float) -> int:
        second = int(now)
        for gone in range(max(self.second + 1, second - BUDGET_PERIOD + 1), second + 1):
            self.requests[gone % BUDGET_PERIOD] = self.retries[gone % BUDGET_PERIOD] = 0
        self.second = max(self.second, second)
        return second % BUDGET_PERIOD

    def requested(self, now: float) -> None:
        self.requests[self.advance(now)] += 1

    def spend(self, now: float) -> bool:
        """Whether a retry may go now; if so it is counted."""
        index = self.advance(now)
        if not retry_allowed(self.share, sum(self.requests), sum(self.retries), self.retries[index]):
            return False
        self.retries[index] += 1
        return True


def retry_allowed(share: float, requests: int, retries: int, retries_this_second: int) -> bool:
    """One more retry keeps retries within `share` of the requests, or is this second's first."""
    return retries_this_second == 0 or retries + 1 <= share * requests


class Retry(FeatureSwitch):
    """The retry as a mitmproxy addon: its switch, option `ambassador_retry`."""

    section = "retry"
    does = "failed tries sent again"
