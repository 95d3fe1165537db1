"""The `limit` stage: requests over an upstream's rate, quota or concurrency wait their turn.

Requests wait in one queue per upstream, in arrival order; the head starts as soon as the
pacing (`pacing.py`: rate, quota, the upstream's own pause) and a concurrency slot allow. A
request is refused with `429 rate_limited` and an honest `Retry-After`, before any upstream
contact, only when waiting cannot help: the queue is full, or the wait would outlast
`max_wait` or what is left of the request's timeout (waiting counts against it). A request
whose client goes away while it waits leaves the queue having taken nothing: tokens and quota
are only taken by the request that starts.

The stage sits inside retry and outside auth: every try is a request to the partner and waits
like any other, and the credential is added when the request actually goes.

With the profile's `state: redis://...`, `rate`, `quota` and the pause are shared by all
instances (`shared_limit.py`); while Redis cannot be reached this instance paces alone, from
the last state Redis gave, and asks Redis again every few seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from datetime import datetime, timezone
from typing import Callable

from mitmproxy import command, exceptions

from . import metrics
from .commands import UpstreamCommands
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse
from .pacing import Pace, PaceState, Refusal, advanced, initial, paused, refusal, take, upstream_pause, wait_for, written
from .profile import LimitPolicy, Upstream
from .shared_limit import SharedPace
from .shared_state import SharedStateUnavailable
from .switches import FeatureSwitch
from .transport import request_written

log = logging.getLogger(__name__)

# How long an instance that could not reach the shared state paces alone before asking again.
SHARED_RETRY = 2.0
# A wait shorter than this is not worth reporting on the client's flow.
NOTICEABLE_WAIT = 0.001


class OnWire:
    """Called when a started request is written to the upstream (or ends without being)."""

    __slots__ = ("stage", "held_as", "pending")

    def __init__(self, stage: LimitStage, held_as: str | None):
        self.stage = stage
        self.held_as = held_as
        self.pending = True

    def __call__(self) -> None:
        if self.pending:
            self.pending = False
            self.stage.written(self.held_as)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LimitStage:
    name = "limit"

    def __init__(
        self,
        upstream_name: str,
        policy: LimitPolicy,
        deadline_of: Callable[[UpstreamRequest], float],
        shared: SharedPace | None = None,
    ):
        self.upstream_name = upstream_name
        self.policy = policy
        self.deadline_of = deadline_of
        self.pace = Pace(policy.rate, policy.burst, policy.quota, policy.quota_window)
        self.state: PaceState = initial(self.pace, time.time())
        self.shared = shared
        self.shared_down_until: float | None = None  # set while pacing alone
        self.queue: deque[asyncio.Future] = deque()
        self.in_flight = 0
        # Requests asking Redis for a token now: while one does, the others queue behind it
        # rather than each asking at once (a burst of clients would be a burst on Redis).
        self.asking = 0
        self.slot_freed: asyncio.Future | None = None
        self.resumed: asyncio.Future | None = None  # set when a command ends the upstream's pause
        self.pending: set[asyncio.Task] = set()  # Redis updates under way (writes, tokens given back)
        self.waiting_gauge = metrics.LIMIT_WAITING.labels(upstream_name)
        self.wait_histogram = metrics.LIMIT_WAIT.labels(upstream_name)
        self.refused = metrics.LIMIT_REFUSED.labels(upstream_name)
        self.paused_gauge = metrics.LIMIT_PAUSED_UNTIL.labels(upstream_name)

    async def __call__(self, request: UpstreamRequest, call_next) -> UpstreamResponse:
        arrived = time.monotonic()
        held_as = await self.acquire(request)
        waited = time.monotonic() - arrived
        self.wait_histogram.observe(waited)
        if waited >= NOTICEABLE_WAIT:  # tries share the notes: report the total
            request.notes["waited"] = round(request.notes.get("waited", 0.0) + waited, 3)
        on_wire = OnWire(self, held_as)
        signal = request_written.set(on_wire)
        try:
            response = await call_next(request)
        finally:
            request_written.reset(signal)
            on_wire()  # one that never reached the wire (no connection, cancelled) counts as sent now
            self.release()
        if self.policy.follow_upstream:
            until = upstream_pause(response.status, response.headers, time.time())
            if until is not None and until > self.state.paused_until:
                await self.pause(until)
        return response

    # --- waiting -----------------------------------------------------------------------------

    def slot_free(self) -> bool:
        return self.policy.concurrency is None or self.in_flight < self.policy.concurrency

    async def acquire(self, request: UpstreamRequest) -> str | None:
        """Return when the request may start (its token and quota taken, a slot held): the
        name it is held under in the shared state until written, None when paced alone."""
        if not self.queue and not self.asking and self.slot_free():
            wait, held_as = await self.take()
            if wait == 0:
                self.in_flight += 1
                return held_as
        else:
            wait = wait_for(self.pace, self.state, time.time(), ahead=len(self.queue))
        time_left = self.deadline_of(request) - time.monotonic()
        refused = refusal(wait, len(self.queue), self.policy.queue, self.policy.max_wait, time_left)
        if refused:
            raise self.refuse(refused)
        give_up_at = time.monotonic() + min(self.policy.max_wait, time_left)
        turn = asyncio.get_running_loop().create_future()
        self.queue.append(turn)
        self.waiting_gauge.inc()
        if self.queue[0] is turn:
            turn.set_result(None)
        try:
            await self.wait(turn, give_up_at)
            while True:
                if not self.slot_free():
                    if self.slot_freed is None or self.slot_freed.done():
                        self.slot_freed = asyncio.get_running_loop().create_future()
                    await self.wait(self.slot_freed, give_up_at)
                    continue
                wait, held_as = await self.take()
                if wait == 0:
                    break
                if time.monotonic() + wait > give_up_at:
                    raise self.refuse(Refusal(f"it would wait {wait:.3g}s more, past its max_wait or timeout", math.ceil(wait)))
                await self.nap(wait)
            self.in_flight += 1
            return held_as
        finally:
            self.waiting_gauge.dec()
            head = self.queue[0] is turn
            self.queue.remove(turn)
            if head and self.queue and not self.queue[0].done():
                self.queue[0].set_result(None)

    async def wait(self, event: asyncio.Future, give_up_at: float) -> None:
        try:
            # shield: a request giving up must not cancel what the others wait for.
            await asyncio.wait_for(asyncio.shield(event), max(0.0, give_up_at - time.monotonic()))
        except TimeoutError:
            wait = wait_for(self.pace, self.state, time.time(), ahead=len(self.queue) - 1)
            raise self.refuse(Refusal("its turn did not come within its max_wait or timeout", math.ceil(wait))) from None

    def written(self, held_as: str | None) -> None:
        """A request started here reached the wire: the bucket may refill over its place."""
        if held_as is None:
            self.state = written(self.pace, self.state, time.time())
        else:
            self.in_background(self.sent(held_as))

    async def nap(self, seconds: float) -> None:
        """Sleep `seconds`, or until a command ends the upstream's pause."""
        if self.resumed is None or self.resumed.done():
            self.resumed = asyncio.get_running_loop().create_future()
        await asyncio.wait((self.resumed,), timeout=seconds)

    def release(self) -> None:
        self.in_flight -= 1
        if self.slot_freed is not None and not self.slot_freed.done():
            self.slot_freed.set_result(None)

    def refuse(self, refused: Refusal) -> AmbassadorError:
        self.refused.inc()
        retry_after = str(max(1, refused.retry_after))
        return AmbassadorError(
            "rate_limited",
            f"upstream {self.upstream_name} is at its limit and {refused.why}; try again in {retry_after}s",
            self.upstream_name,
            headers={"Retry-After": retry_after},
        )

    # --- pacing, shared or alone --------------------------------------------------------------

    def using_shared(self) -> bool:
        if self.shared is None:
            return False
        return self.shared_down_until is None or time.monotonic() >= self.shared_down_until

    async def take(self) -> tuple[float, str | None]:
        """Take a token and one of the quota now (0.0), or the seconds to wait (nothing taken);
        and the name the request is held under in the shared state (None: paced alone)."""
        if self.using_shared():
            held_as = self.shared.name()
            # A task of its own: a client going away must not leave a token taken in Redis unused.
            task = asyncio.get_running_loop().create_task(self.shared.take(held_as))
            self.asking += 1
            try:
                self.state, wait = await asyncio.shield(task)
            except SharedStateUnavailable as e:
                self.shared_lost(e)
            except asyncio.CancelledError:
                task.add_done_callback(lambda task: self.give_back_if_taken(task, held_as))
                raise
            else:
                self.shared_reached()
                return wait, held_as
            finally:
                self.asking -= 1
        self.state, wait = take(self.pace, self.state, time.time())
        return wait, None

    def give_back_if_taken(self, task: asyncio.Task, held_as: str) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        state, wait = task.result()
        if wait == 0:
            self.in_background(self.give_back(held_as, state.window_start))

    def in_background(self, operation) -> None:
        pending = asyncio.get_running_loop().create_task(operation)
        self.pending.add(pending)
        pending.add_done_callback(self.pending.discard)

    async def give_back(self, held_as: str, window_start: float) -> None:
        try:
            self.state = await self.shared.give_back(held_as, window_start)
        except SharedStateUnavailable as e:
            self.shared_lost(e)

    async def sent(self, held_as: str) -> None:
        try:
            self.state = await self.shared.sent(held_as)
        except SharedStateUnavailable as e:
            self.shared_lost(e)

    async def pause(self, until: float) -> None:
        log.warning("upstream %s asked for no requests until %s; requests wait until then", self.upstream_name, _iso(until))
        self.state = paused(self.state, until)
        self.paused_gauge.set(until)
        if self.using_shared():
            try:
                self.state = await self.shared.pause(until)
            except SharedStateUnavailable as e:
                self.shared_lost(e)

    async def resume(self) -> None:
        """End the upstream's pause now, here and in the shared state; the head of the queue goes."""
        try:
            if self.using_shared():
                self.state = await self.shared.resume()
        except SharedStateUnavailable as e:
            self.shared_lost(e)
            raise
        finally:
            self.state = dataclasses.replace(self.state, paused_until=0.0)
            self.paused_gauge.set(0)
            if self.resumed is not None and not self.resumed.done():
                self.resumed.set_result(None)

    def shared_lost(self, error: SharedStateUnavailable) -> None:
        if self.shared_down_until is None:
            log.warning(
                "upstream %s: shared limit state unreachable (%s); this instance keeps to the limits alone until it is back",
                self.upstream_name, error,
            )
        self.shared_down_until = time.monotonic() + SHARED_RETRY

    def shared_reached(self) -> None:
        if self.shared_down_until is not None:
            log.warning("upstream %s: shared limit state reachable again", self.upstream_name)
            self.shared_down_until = None

    # --- reporting ----------------------------------------------------------------------------

    def status(self) -> dict:
        now = time.time()
        state = self.state
        report: dict = {"waiting": len(self.queue), "in_flight": self.in_flight}
        if self.policy.rate is not None:
            tokens = advanced(self.pace, state, now).tokens
            report["rate"] = {"per_second": self.policy.rate, "burst": self.policy.burst, "tokens": round(tokens, 2)}
        if self.policy.quota is not None:
            current = state.window_start <= now < state.window_start + self.pace.window
            report["quota"] = {
                "limit": self.policy.quota,
                "used": state.used if current else 0,
                "resets_at": _iso(math.floor(now / self.pace.window) * self.pace.window + self.pace.window),
            }
        if self.policy.concurrency is not None:
            report["concurrency"] = self.policy.concurrency
        report["paused_until"] = _iso(state.paused_until) if state.paused_until > now else None
        if self.shared is not None:
            report["shared"] = self.using_shared()
        return report

    async def close(self) -> None:
        for task in list(self.pending):
            await task
        if self.shared is not None:
            await self.shared.close()


def limit_stage(upstream: Upstream, state_url: str | None, deadline_of: Callable[[UpstreamRequest], float]) -> LimitStage:
    """The upstream's limit stage; with a profile `state` URL, rate, quota and pauses are shared."""
    policy = upstream.limit
    shared = None
    if state_url:
        shared = SharedPace.connect(state_url, upstream.name, Pace(policy.rate, policy.burst, policy.quota, policy.quota_window))
    return LimitStage(upstream.name, policy, deadline_of, shared)


class Limit(UpstreamCommands, FeatureSwitch):
    """The limit as a mitmproxy addon: its switch, and its command ending a pause the upstream
    asked for."""

    section = "limit"
    does = "requests paced to an upstream's rate, quota and concurrency"

    @command.command("ambassador.limit.resume")
    def limit_resume(self, name: str) -> None:
        """End the pause an upstream's own rate-limit answers started (follow_upstream) now."""
        stage = self._stage(name, "limit")
        if not stage.policy.follow_upstream:
            raise exceptions.CommandError(f"upstream {name!r} does not pause at its own rate-limit answers (follow_upstream: false)")
        if stage.shared is None and stage.state.paused_until <= time.time():
            raise exceptions.CommandError(f"upstream {name!r} is not paused")
        self._run(stage.resume(), f"pause of {name} ended")
