"""The circuit breaker of an upstream: pybreaker's state machine, driven by admission tickets.

pybreaker 1.4.1 only guards a call it makes itself, start to end. An upstream exchange is an
`await` during which other requests are admitted and other outcomes arrive, so `Breaker`
splits the two: `admit()` hands out a `Ticket` (or refuses), `record(ticket, failed)` applies
the outcome later. This adapter also fixes what pybreaker gets wrong for that use:

- half-open: pybreaker lets every request through; here only `half_open_max` trial tickets
  are handed out, the others are refused as if open;
- late outcomes: every state change starts a new generation, and an outcome whose ticket
  belongs to an earlier generation is ignored. Without this a late success could close a
  breaker whose latest trial failed, and late failures of requests admitted while closed
  would re-open it and push its open window forward.

With `state: redis://...` the breaker state lives in Redis instead (`shared_state.py`), with
this local breaker as the fallback while Redis cannot be reached.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import pybreaker

from . import metrics
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse
from .profile import BreakerPolicy, Upstream
from .shared_state import SharedBreakerState, SharedStateUnavailable

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
GAUGE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
# Failures the ambassador sees itself; everything else it raises (auth_failed, bad_request...)
# says nothing about the upstream's health.
FAILURE_REASONS = frozenset({"timeout", "connect_error"})
# Retry-After for requests refused while the trials of a half-open breaker are under way.
TRIAL_WAIT = 1.0
# How long an instance that could not reach the shared state uses its own breaker before
# asking Redis again.
SHARED_RETRY = 2.0


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission for one upstream attempt, valid for the breaker state that issued it."""

    generation: int
    trial: bool = False  # one of the limited half-open trials
    shared: bool = False  # issued by the Redis-backed state rather than the local breaker


class _Failure(Exception):
    """The outcome fed to pybreaker for a failed attempt."""


def _failed() -> None:
    raise _Failure


def _succeeded() -> None:
    pass


class Breaker(pybreaker.CircuitBreakerListener):
    """One upstream's breaker in this process. Synchronous: all of it runs on the event loop."""

    def __init__(self, name: str, policy: BreakerPolicy, on_change: Callable[[str], None] = lambda state: None):
        self.name = name
        self.policy = policy
        self.on_change = on_change
        self.generation = 0
        self.trials = 0  # trial tickets handed out in the current half-open generation
        self.opened_at = 0.0  # time.monotonic(); pybreaker's own opened_at is wall-clock time
        self.pybreaker = pybreaker.CircuitBreaker(
            fail_max=policy.fail_max, reset_timeout=policy.reset_timeout, name=name, listeners=[self]
        )

    @property
    def state(self) -> str:
        return self.pybreaker.current_state

    def seconds_until_half_open(self) -> float:
        return self.opened_at + self.policy.reset_timeout - time.monotonic()

    def admit(self) -> Ticket | None:
        state = self.state
        if state == OPEN:
            if self.seconds_until_half_open() > 0:
                return None
            self.pybreaker.half_open()
            state = HALF_OPEN
        if state == HALF_OPEN:
            if self.trials >= self.policy.half_open_max:
                return None
            self.trials += 1
            return Ticket(self.generation, trial=True)
        return Ticket(self.generation)

    def record(self, ticket: Ticket, failed: bool) -> None:
        """Apply an attempt's outcome, unless the breaker changed state since its admission."""
        if ticket.generation != self.generation:
            return
        if not failed and not ticket.trial and self.pybreaker.fail_counter == 0:
            return  # closed with nothing to reset: the common case costs no state machine run
        try:
            self.pybreaker.call(_failed if failed else _succeeded)
        except (_Failure, pybreaker.CircuitBreakerError):
            pass  # pybreaker re-raises the failure it counted, or reports that it tripped

    def release(self, ticket: Ticket) -> None:
        """An admitted attempt that ended without an outcome (cancelled): give back its trial."""
        if ticket.trial and ticket.generation == self.generation:
            self.trials -= 1

    def force_open(self) -> None:
        self.pybreaker.open()

    def force_close(self) -> None:
        self.pybreaker.close()

    # pybreaker.CircuitBreakerListener
    def state_change(self, cb, old_state, new_state) -> None:
        self.generation += 1
        self.trials = 0
        if new_state.name == OPEN:
            self.opened_at = time.monotonic()
        if old_state is None or old_state.name != new_state.name:
            self.on_change(new_state.name)


def shown_state(state: str, seconds_until_half_open: float) -> str:
    """The state as status and metrics show it: an open breaker is half-open once its
    reset_timeout has passed, whether or not a request has come since to make it move."""
    if state == OPEN and seconds_until_half_open <= 0:
        return HALF_OPEN
    return state


def clients_own_timeout(client_timeout: float | None, upstream_timeout: float, try_bound: float, elapsed: float) -> bool:
    """Whether a try that timed out after `elapsed` seconds was cut short by the client: it
    asked for less time (X-Ambassador-Timeout) than the upstream's `timeout`, and the try
    ended before its own bound (the upstream's `timeout`, or the retry policy's shorter
    `try_timeout`). Such a failure is the client's choice, not the upstream's health, and must
    not open the breaker for every app."""
    return client_timeout is not None and client_timeout < upstream_timeout and elapsed < try_bound


class BreakerStage:
    """The `breaker` stage: asks the breaker before each attempt and tells it the outcome.

    `shared` (a `shared_state.SharedBreakerState`) makes Redis hold the state; while Redis
    cannot be reached the local breaker stands in, so no request fails because of Redis.
    """

    name = "breaker"

    def __init__(
        self,
        upstream_name: str,
        policy: BreakerPolicy,
        shared: SharedBreakerState | None = None,
        timeouts: tuple[float, float] = (math.inf, math.inf),
        url: str | None = None,
    ):
        """`url`: this breaker guards one of the upstream's failover URLs, not its `url`."""
        self.upstream_name = upstream_name
        self.where = upstream_name if url is None else f"{upstream_name} ({url})"  # for messages
        self.policy = policy
        # The upstream's `timeout` and its bound for one try: what clients_own_timeout weighs.
        self.upstream_timeout, self.try_bound = timeouts
        self.local = Breaker(self.where, policy, self.observe)
        self.shared = shared
        self.shared_down_until: float | None = None  # set while falling back to the local breaker
        self.known_state = CLOSED
        self.pending: set[asyncio.Task] = set()
        if url is None:
            self.gauge = metrics.BREAKER_STATE.labels(upstream_name)
            self.transitions = functools.partial(metrics.BREAKER_TRANSITIONS.labels, upstream_name)
        else:
            self.gauge = metrics.URL_BREAKER_STATE.labels(upstream_name, url)
            self.transitions = functools.partial(metrics.URL_BREAKER_TRANSITIONS.labels, upstream_name, url)
        # Read at each scrape, so that the gauge turns half-open when status does.
        self.gauge.set_function(lambda: GAUGE_VALUE[self.state()])

    def observe(self, state: str) -> None:
        """Called with the state after every decision; logs and counts each change once."""
        if state == self.known_state:
            return
        log.warning("upstream %s: circuit breaker %s -> %s", self.where, self.known_state, state)
        self.known_state = state
        self.transitions(state).inc()

    async def __call__(self, request: UpstreamRequest, call_next) -> UpstreamResponse:
        ticket = await self.admit()
        if ticket is None:
            request.notes["breaker"] = self.state()
            wait = self.seconds_until_half_open()
            retry_after = math.ceil(wait if wait > 0 else TRIAL_WAIT)
            raise AmbassadorError(
                "circuit_open",
                f"the circuit breaker of upstream {self.where} is open; try again in {retry_after}s",
                self.upstream_name,
                headers={"Retry-After": str(retry_after)},
            )
        try:
            response = await call_next(request)
        except AmbassadorError as e:
            if e.reason in FAILURE_REASONS and not (
                e.reason == "timeout"
                and clients_own_timeout(
                    request.client_timeout, self.upstream_timeout, self.try_bound, time.monotonic() - request.started
                )
            ):
                await self.record(ticket, failed=True)
            else:
                self.release(ticket)
            request.notes["breaker"] = self.state()
            raise
        except BaseException:  # cancelled, or a bug below: not the upstream's outcome, free the trial
            self.release(ticket)
            raise
        await self.record(ticket, failed=response.status in self.policy.failure_statuses)
        request.notes["breaker"] = self.state()
        return response

    def using_shared(self) -> bool:
        if self.shared is None:
            return False
        if self.shared_down_until is not None and time.monotonic() < self.shared_down_until:
            return False
        return True

    async def admit(self) -> Ticket | None:
        if self.using_shared():
            try:
                admitted = await self.shared.admit()
            except SharedStateUnavailable as e:
                self.shared_lost(e)
            else:
                self.shared_reached()
                return Ticket(*admitted, shared=True) if admitted else None
        return self.local.admit()

    async def record(self, ticket: Ticket, failed: bool) -> None:
        if not ticket.shared:
            self.local.record(ticket, failed)
            return
        try:
            await self.shared.record(ticket.generation, ticket.trial, failed)
        except SharedStateUnavailable as e:
            self.shared_lost(e)  # this outcome is lost; the local breaker counts from now on
        else:
            self.observe(self.shared.state)

    def release(self, ticket: Ticket) -> None:
        if not ticket.shared:
            self.local.release(ticket)
        elif ticket.trial:
            # Runs while the request is being cancelled: do not hold that up for Redis.
            task = asyncio.get_running_loop().create_task(self.release_shared(ticket))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def release_shared(self, ticket: Ticket) -> None:
        try:
            await self.shared.release(ticket.generation)
        except SharedStateUnavailable as e:
            self.shared_lost(e)

    def shared_lost(self, error: SharedStateUnavailable) -> None:
        if self.shared_down_until is None:
            log.warning(
                "upstream %s: shared breaker state unreachable (%s); using this instance's own breaker until it is back",
                self.where, error,
            )
            self.carry_over_shared_state()
        self.shared_down_until = time.monotonic() + SHARED_RETRY
        self.observe(self.local.state)

    def carry_over_shared_state(self) -> None:
        """An upstream the shared breaker last saw failing stays refused: the local breaker
        takes over the open window rather than starting closed (a Redis blip must not send
        every instance at a failing upstream)."""
        if self.shared.state == CLOSED or self.local.state != CLOSED:
            return
        self.local.force_open()
        left = max(0.0, self.shared.seconds_until_half_open())
        self.local.opened_at = time.monotonic() - self.policy.reset_timeout + left

    def shared_reached(self) -> None:
        if self.shared_down_until is not None:
            log.warning("upstream %s: shared breaker state reachable again", self.where)
            self.shared_down_until = None
        self.observe(self.shared.state)

    def state(self) -> str:
        if self.using_shared():
            return shown_state(self.shared.state, self.shared.seconds_until_half_open())
        return shown_state(self.local.state, self.local.seconds_until_half_open())

    def status(self) -> str:
        """For /_ambassador/status: an idle instance also asks Redis, for the next look."""
        if self.using_shared():
            self.shared.refresh_soon()
        return self.state()

    def seconds_until_half_open(self) -> float:
        return self.shared.seconds_until_half_open() if self.using_shared() else self.local.seconds_until_half_open()

    async def force_open(self) -> None:
        """Open the breaker now (admin command); it half-opens after reset_timeout as usual."""
        self.local.force_open()
        await self.force_shared(OPEN)

    async def force_close(self) -> None:
        self.local.force_close()
        await self.force_shared(CLOSED)

    async def force_shared(self, state: str) -> None:
        """The local breaker is already forced: it is the one in force while Redis is down."""
        if not self.using_shared():
            return
        try:
            await self.shared.force(state)
        except SharedStateUnavailable as e:
            self.shared_lost(e)
        else:
            self.observe(self.shared.state)

    async def close(self) -> None:
        for task in list(self.pending):
            await task
        if self.shared:
            await self.shared.close()


def breaker_stage(upstream: Upstream, state_url: str | None) -> BreakerStage | UrlBreakers:
    """The upstream's breaker stage: one breaker per URL (`url`, then each failover URL), each
    kept in Redis with a profile `state` URL."""
    try_bound = upstream.timeout
    if upstream.retry and upstream.retry.try_timeout:
        try_bound = min(try_bound, upstream.retry.try_timeout)
    # A trial's outcome comes within the upstream's timeout; one that does not come by
    # then was lost with its instance, and new trials may go.
    trial_lease = upstream.timeout + 1.0
    stages = []
    for index, url in enumerate(upstream.urls):
        failover_url = None if index == 0 else str(url)
        shared = SharedBreakerState.connect(state_url, upstream.name, upstream.breaker, trial_lease, failover_url) if state_url else None
        stages.append(BreakerStage(upstream.name, upstream.breaker, shared, (upstream.timeout, try_bound), failover_url))
    return stages[0] if len(stages) == 1 else UrlBreakers(stages)


class UrlBreakers:
    """The `breaker` stage of an upstream with failover URLs: the breaker of the URL a try
    goes to (`request.target`), each on its own. The admin commands act on all of them."""

    name = "breaker"

    def __init__(self, stages: list[BreakerStage]):
        self.stages = stages

    def __call__(self, request: UpstreamRequest, call_next) -> Awaitable[UpstreamResponse]:
        return self.stages[request.target](request, call_next)

    def status(self) -> str:
        return self.stages[0].status()  # `url`'s; the failover stage's status lists each URL's

    def url_status(self, target: int) -> str:
        return self.stages[target].status()

    async def force_open(self) -> None:
        for stage in self.stages:
            await stage.force_open()

    async def force_close(self) -> None:
        for stage in self.stages:
            await stage.force_close()

    async def close(self) -> None:
        for stage in self.stages:
            await stage.close()
