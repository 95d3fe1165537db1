"""The `hedge` stage: an idempotent request not answered within `after` is sent once more.

Up to `max` extra copies go out, each `after` after the one before; the first answer wins and
the copies still under way are cancelled (their connections closed, never pooled with part of
an answer on them). A copy that fails (connection error, timeout, a breaker failure status)
does not win: the others may still answer. Once every copy sent has failed, the race ends with
the last failure and no new copy goes out: trying again after failures is the retry stage's
work, with its backoff.

The stage sits above failover, breaker, limit and auth, so that each copy passes them like
any request: a copy the breaker refuses is not sent, and a copy counts against `limit`.
Each copy is its own exchange for `request.observer` (a flow of its own in mitmweb).
"""

from __future__ import annotations

import asyncio
import time

from . import metrics
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse
from .profile import HedgePolicy
from .switches import FeatureSwitch

# Methods whose request may be sent twice without doing twice what it asks (RFC 9110 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Failures after which another copy may still answer: the upstream was asked and did not answer.
FAILED_REASONS = frozenset({"timeout", "connect_error"})

Outcome = UpstreamResponse | AmbassadorError


def copies_for(policy: HedgePolicy, method: str) -> int:
    """How many copies of a request may go out in all, the first included."""
    return 1 + policy.max if method in IDEMPOTENT else 1


def next_copy_at(first_sent: float, sent: int, policy: HedgePolicy) -> float:
    """When copy number `sent + 1` is due: each `after` after the one before."""
    return first_sent + sent * policy.after


def wins(outcome: Outcome, failure_statuses: frozenset[int]) -> bool:
    """Whether a copy's outcome ends the race: any answer but a failure (a failed copy leaves
    the race to the copies still under way). An answer the ambassador gives itself for the
    request as such (auth_failed, bad_request, too_large) is the same for every copy."""
    if isinstance(outcome, AmbassadorError):
        return outcome.reason not in FAILED_REASONS and outcome.reason != "circuit_open"
    return outcome.status not in failure_statuses


def outcome_of(copy: asyncio.Task) -> Outcome:
    """A finished copy's answer or the ambassador's error; anything else (a bug) is raised."""
    error = copy.exception()
    if error is None:
        return copy.result()
    if isinstance(error, AmbassadorError):
        return error
    raise error


class HedgeStage:
    name = "hedge"

    def __init__(self, upstream_name: str, policy: HedgePolicy, failure_statuses: frozenset[int]):
        self.policy = policy
        self.failure_statuses = failure_statuses
        self.sent = metrics.HEDGES.labels(upstream_name, "sent")
        self.won = metrics.HEDGES.labels(upstream_name, "won")
        self.counts = {"sent": 0, "won": 0}  # for the status

    async def __call__(self, request: UpstreamRequest, call_next) -> UpstreamResponse:
        copies = copies_for(self.policy, request.method)
        if copies == 1:
            return await call_next(request)
        loop = asyncio.get_running_loop()
        first_sent = time.monotonic()
        # Each copy's task, and its number (0: the original).
        running: dict[asyncio.Task, int] = {loop.create_task(call_next(request)): 0}
        launched, refused = 1, 0  # copies started; extra copies the breaker refused
        outcome: Outcome | None = None
        try:
            while running:
                wait = None
                if launched < copies:
                    wait = max(0.0, next_copy_at(first_sent, launched, self.policy) - time.monotonic())
                done, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not done:  # `after` passed without an answer: one more copy
                    running[loop.create_task(call_next(request))] = launched
                    launched += 1
                    continue
                finished = sorted((running.pop(task), outcome_of(task)) for task in done)
                for number, result in finished:  # all counted before a winner returns
                    if isinstance(result, AmbassadorError) and result.reason == "circuit_open":
                        refused += number > 0  # never went out: not an attempt
                        outcome = outcome or result
                    else:
                        outcome = result
                for number, result in finished:
                    if wins(result, self.failure_statuses):
                        if number:
                            self.won.inc()
                            self.counts["won"] += 1
                        return self.report(request, result, launched - 1 - refused)
                if not running:
                    break  # every copy sent failed: no new copy after failures
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)
        return self.report(request, outcome, launched - 1 - refused)

    def status(self) -> dict:
        return dict(self.counts)

    def report(self, request: UpstreamRequest, outcome: Outcome, extra: int) -> UpstreamResponse:
        """Count the extra copies sent (those cancelled included) and tell the client."""
        if extra:
            self.sent.inc(extra)
            self.counts["sent"] += extra
            request.notes["hedged"] = request.notes.get("hedged", 0) + extra
            # The retry stage, when there is one, counts its tries and these together.
            request.notes["attempts"] = 1 + request.notes["hedged"]
            outcome.headers["X-Ambassador-Attempts"] = str(request.notes["attempts"])
        if isinstance(outcome, AmbassadorError):
            raise outcome
        return outcome


class Hedge(FeatureSwitch):
    """The hedge as a mitmproxy addon: its switch, option `ambassador_hedge`."""

    section = "hedge"
    does = "a further copy of a slow request"
