"""Pacing decisions for an upstream's `limit`, as plain functions over plain data.

Nothing here awaits or reads a clock: every function is given `now` (seconds of wall-clock
time, as `time.time()` or Redis' own clock), so the same rules serve the local limiter, the
mirror of the shared one in Redis, and the unit tests.

- `rate` is a token bucket: `burst` tokens at most, refilled at `rate` a second; a request
  starting takes one. The partner counts requests when they reach it, not when they start
  here: a request that started but is not yet written to the wire (`held`; on a busy event
  loop that can take a while, e.g. while connections are opened) still holds its token's
  place, so the bucket refills only up to `burst - held`. Tokens plus held requests are then
  a bucket drained by writes, and the writes in any second stay within `burst + rate`.
- `quota` is a count per calendar window in UTC (`/m`, `/h`, `/d`): windows start at whole
  minutes, hours and midnights since the Unix epoch, which has no leap seconds.
- `paused_until` is the upstream's own limit (`follow_upstream`): nothing starts before it.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass, replace

# An upstream's own reset header beyond this is a Unix time, not seconds from now: no
# upstream asks to wait 30 years, and no clock reads a time before 2001 any more.
UNIX_TIME_FROM = 1_000_000_000
# Statuses whose Retry-After tells when to try again (RFC 9110 section 10.2.3).
RETRY_AFTER_STATUSES = frozenset({429, 503})
# An upstream asking for a longer pause than this is broken, not rate limiting.
LONGEST_PAUSE = 86400.0


@dataclass(frozen=True)
class Pace:
    """The figures of a `limit` section that the decisions need."""

    rate: float | None = None  # tokens a second
    burst: int = 1
    quota: int | None = None
    window: float = 86400.0  # the quota's calendar window, in seconds


@dataclass(frozen=True)
class PaceState:
    """The bucket, the quota window and the upstream's pause, as of `at`."""

    tokens: float
    at: float
    window_start: float = 0.0
    used: int = 0  # requests started in the window beginning at window_start
    paused_until: float = 0.0
    held: int = 0  # requests started, not yet written to the wire


def initial(pace: Pace, now: float) -> PaceState:
    return PaceState(tokens=float(pace.burst), at=now, window_start=window_start(pace, now))


def window_start(pace: Pace, now: float) -> float:
    return math.floor(now / pace.window) * pace.window


def advanced(pace: Pace, state: PaceState, now: float) -> PaceState:
    """The state at `now`: tokens refilled, a new quota window begun. Time never runs back."""
    if now <= state.at:
        return state
    tokens = state.tokens
    if pace.rate is not None:
        tokens = min(float(pace.burst - state.held), tokens + (now - state.at) * pace.rate)
    start = window_start(pace, now)
    used = state.used if start == state.window_start else 0
    # The constructor, not dataclasses.replace: this runs for every request.
    return PaceState(tokens, now, start, used, state.paused_until, state.held)


def wait_for(pace: Pace, state: PaceState, now: float, ahead: int = 0) -> float:
    """Seconds until a request with `ahead` requests before it may start (0: now).

    An estimate for `ahead > 0`: it assumes the requests ahead start as soon as they may.
    """
    state = advanced(pace, state, now)
    start = max(now, state.paused_until)
    needed = ahead + 1
    if pace.rate is not None:
        tokens = min(float(pace.burst - state.held), state.tokens + (start - now) * pace.rate)
        if tokens < needed:
            start += (needed - tokens) / pace.rate
    if pace.quota is not None and state.used + needed > pace.quota:
        # The windows after this one each hold `quota` requests.
        windows_on = math.ceil((state.used + needed - pace.quota) / pace.quota)
        start = max(start, state.window_start + windows_on * pace.window)
    return start - now


def take(pace: Pace, state: PaceState, now: float) -> tuple[PaceState, float]:
    """A request asks to start: (new state, 0.0) when it may, one token and one of the quota
    used; else (state, seconds to wait) and nothing is used."""
    state = advanced(pace, state, now)
    wait = wait_for(pace, state, now)
    if wait > 0:
        return state, wait
    tokens = state.tokens - 1 if pace.rate is not None else state.tokens
    return PaceState(tokens, state.at, state.window_start, state.used + 1, state.paused_until, state.held + 1), 0.0


def written(pace: Pace, state: PaceState, now: float) -> PaceState:
    """A started request reached the wire at `now`: its place in the bucket is free to refill
    from then on (refilled up to that moment as if it were still held)."""
    state = advanced(pace, state, now)
    return PaceState(state.tokens, state.at, state.window_start, state.used, state.paused_until, max(0, state.held - 1))


def paused(state: PaceState, until: float) -> PaceState:
    """The upstream asked for a pause until `until`; a longer pause already known stays."""
    return replace(state, paused_until=max(state.paused_until, until))


@dataclass(frozen=True)
class Refusal:
    why: str
    retry_after: int  # seconds, for the Retry-After header


def refusal(wait: float, waiting: int, queue: int, max_wait: float, time_left: float) -> Refusal | None:
    """Whether a request that would wait `wait` seconds behind `waiting` others is refused
    now rather than queued: waiting cannot help when the queue is full, or when the wait
    would outlast `max_wait` or the request's own time. None: it waits."""
    retry_after = max(1, math.ceil(wait))
    if waiting >= queue:
        return Refusal(f"{waiting} requests are already waiting", retry_after)
    if wait > max_wait:
        return Refusal(f"it would wait {wait:.3g}s, longer than max_wait {max_wait:.3g}s", retry_after)
    if wait > time_left:
        return Refusal(f"it would wait {wait:.3g}s, longer than its timeout leaves", retry_after)
    return None


def upstream_pause(status: int, headers, now: float) -> float | None:
    """Until when (wall-clock seconds) an upstream answer asks callers to stop sending, or None.

    `429` or `503` with `Retry-After`; or `RateLimit-Remaining: 0` / `X-RateLimit-Remaining: 0`
    with a reset: `RateLimit-Reset` is seconds from now (IETF draft), `X-RateLimit-Reset` is
    seconds or a Unix time (GitHub, Twitter), told apart by size (UNIX_TIME_FROM).
    """
    seconds = None
    if status in RETRY_AFTER_STATUSES:
        seconds = retry_after_seconds(headers.get("Retry-After", ""), now)
    if seconds is None:
        for prefix in ("", "X-"):
            if headers.get(prefix + "RateLimit-Remaining", "").strip() != "0":
                continue
            reset = _number(headers.get(prefix + "RateLimit-Reset", ""))
            if reset is not None:
                seconds = reset - now if prefix and reset >= UNIX_TIME_FROM else reset
                break
    if seconds is None or seconds <= 0:
        return None
    return now + min(seconds, LONGEST_PAUSE)


def _number(value: str) -> float | None:
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def retry_after_seconds(value: str, now: float) -> float | None:
    """A Retry-After value as seconds from `now`: delay-seconds or an HTTP-date (RFC 9110
    section 10.2.3); None when it is neither."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError):
        return None
