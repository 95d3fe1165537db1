"""The pacing decisions of `limit` and the retry budget, with an injected clock."""

import calendar

import pytest
from multidict import CIMultiDict

from addons.pacing import Pace, initial, paused, refusal, take, upstream_pause, wait_for, written
from addons.retry import RetryBudget, retry_allowed

T0 = 1_800_000_000.0  # a wall-clock time, seconds


def starts(pace, state, times):
    """Which of `times` (in order) a request asking then may start (and is written to the
    wire at once); the state after."""
    started = []
    for now in times:
        state, wait = take(pace, state, now)
        if wait == 0:
            started.append(now)
            state = written(pace, state, now)
    return started, state


def writes_in_any_second(pace, events):
    """Run `events` (time, "ask" | "write") through the bucket, writes in order of start:
    the most writes in any one-second window."""
    state, held, writes = initial(pace, events[0][0]), [], []
    for now, what in events:
        if what == "ask":
            state, wait = take(pace, state, now)
            if wait == 0:
                held.append(now)
        elif held:
            held.pop(0)
            state = written(pace, state, now)
            writes.append(now)
    return max(sum(1 for t in writes if start <= t < start + 1) for start in writes)


def test_a_bucket_lets_burst_start_at_once_then_the_rate():
    pace = Pace(rate=10.0, burst=5)
    state = initial(pace, T0)
    started, state = starts(pace, state, [T0] * 8)
    assert len(started) == 5
    assert wait_for(pace, state, T0) == pytest.approx(0.1)
    state, wait = take(pace, state, T0 + 0.1)
    assert wait == 0


def test_a_started_request_holds_its_place_until_it_is_written():
    pace = Pace(rate=50.0, burst=5)
    state = initial(pace, T0)
    for _ in range(5):
        state, wait = take(pace, state, T0)
        assert wait == 0
    assert state.held == 5
    # The five are not on the wire yet (connections still opening): a second on, the bucket
    # has not refilled over them, and nobody else may start.
    assert take(pace, state, T0 + 1)[1] > 0
    for _ in range(5):
        state = written(pace, state, T0 + 1)
    assert state.held == 0 and state.tokens == 0
    # From the writes on, the rate as usual.
    assert wait_for(pace, state, T0 + 1) == pytest.approx(0.02)
    assert wait_for(pace, state, T0 + 1.1) == 0


def test_writes_delayed_by_a_stall_do_not_bunch_with_the_next_ones():
    """Five start at once and reach the wire only after a 300 ms stall of the event loop;
    the requests waiting meanwhile ask every 20 ms. Charging tokens at the start alone would
    let five more go at the end of the stall, together with the five delayed ones."""
    pace = Pace(rate=50.0, burst=5)
    events = [(T0, "ask")] * 5 + [(T0 + 0.3, "write")] * 5
    events += [(T0 + 0.3 + i * 0.004, what) for i in range(1, 500) for what in ("ask", "write")]
    assert writes_in_any_second(pace, events) <= 55


def test_a_refused_take_uses_nothing():
    pace = Pace(rate=1.0, burst=1, quota=5, window=60)
    state, _ = take(pace, initial(pace, T0), T0)
    state = written(pace, state, T0)
    after, wait = take(pace, state, T0 + 0.5)
    assert wait == pytest.approx(0.5)
    assert after.used == 1 and after.tokens == pytest.approx(0.5)


def test_the_wait_for_a_queued_request_counts_those_ahead():
    pace = Pace(rate=50.0, burst=5)
    state = initial(pace, T0)
    assert wait_for(pace, state, T0, ahead=4) == 0
    assert wait_for(pace, state, T0, ahead=199) == pytest.approx(195 / 50)


def test_quota_windows_are_calendar_windows_in_utc():
    midnight = calendar.timegm((2027, 1, 15, 0, 0, 0))
    pace = Pace(quota=3, window=86400)
    state = initial(pace, midnight - 10)
    started, state = starts(pace, state, [midnight - 10, midnight - 9, midnight - 8, midnight - 7])
    assert len(started) == 3
    assert wait_for(pace, state, midnight - 7) == pytest.approx(7)
    assert wait_for(pace, state, midnight - 7, ahead=3) == pytest.approx(7 + 86400)
    state, wait = take(pace, state, midnight + 0.5)
    assert wait == 0 and state.used == 1


def test_hourly_quota_resets_at_the_full_hour():
    hour = calendar.timegm((2027, 1, 15, 13, 0, 0))
    pace = Pace(quota=1, window=3600)
    state, _ = take(pace, initial(pace, hour + 1800), hour + 1800)
    assert wait_for(pace, state, hour + 1800) == pytest.approx(1800)


def test_a_pause_holds_every_request_until_its_end():
    pace = Pace(rate=100.0, burst=10)
    state = paused(initial(pace, T0), T0 + 3)
    assert wait_for(pace, state, T0) == pytest.approx(3)
    assert paused(state, T0 + 1).paused_until == T0 + 3  # a shorter pause does not shorten it
    state, wait = take(pace, state, T0 + 3)
    assert wait == 0


def test_without_rate_or_quota_everything_starts():
    pace = Pace()
    started, _ = starts(pace, initial(pace, T0), [T0] * 100)
    assert len(started) == 100


@pytest.mark.parametrize(
    "wait, waiting, queue, max_wait, time_left, refused, retry_after",
    [
        (0.5, 0, 10, 10, 30, False, None),
        (0.5, 10, 10, 10, 30, True, 1),  # queue full
        (12.2, 2, 10, 10, 30, True, 13),  # beyond max_wait
        (5.0, 2, 10, 10, 4, True, 5),  # beyond the request's own time
        (3.0, 0, 0, 10, 30, True, 3),  # queue: 0 never lets one wait
    ],
)
def test_refusal_only_when_waiting_cannot_help(wait, waiting, queue, max_wait, time_left, refused, retry_after):
    decision = refusal(wait, waiting, queue, max_wait, time_left)
    assert (decision is not None) == refused
    if refused:
        assert decision.retry_after == retry_after


@pytest.mark.parametrize(
    "status, headers, pause",
    [
        (429, {"Retry-After": "7"}, 7),
        (503, {"Retry-After": "Thu, 15 Jan 2027 00:00:09 GMT"}, 9),
        (200, {"Retry-After": "7"}, None),  # Retry-After only means this on 429 and 503
        (200, {"RateLimit-Remaining": "0", "RateLimit-Reset": "4"}, 4),
        (200, {"RateLimit-Remaining": "3", "RateLimit-Reset": "4"}, None),
        (200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "6"}, 6),
        (200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "NOW+12"}, 12),  # Unix time
        (200, {"X-RateLimit-Remaining": "0"}, None),  # no reset: nothing to wait for
        (429, {"Retry-After": "soon"}, None),
        (429, {"Retry-After": "999999"}, 86400),  # bounded
    ],
)
def test_upstream_pause_from_its_headers(status, headers, pause):
    now = calendar.timegm((2027, 1, 15, 0, 0, 0))
    headers = CIMultiDict({k: v.replace("NOW+12", str(int(now) + 12)) for k, v in headers.items()})
    until = upstream_pause(status, headers, now)
    if pause is None:
        assert until is None
    else:
        assert until == pytest.approx(now + pause)


def test_retry_budget_keeps_retries_to_their_share():
    assert retry_allowed(0.2, requests=100, retries=19, retries_this_second=1)
    assert not retry_allowed(0.2, requests=100, retries=20, retries_this_second=1)
    assert retry_allowed(0.2, requests=1, retries=5, retries_this_second=0)  # one a second always


def test_retry_budget_counts_the_last_ten_seconds():
    budget = RetryBudget(0.2)
    for i in range(50):
        budget.requested(100.0 + i * 0.01)
    spent = sum(budget.spend(100.5) for _ in range(30))
    assert spent == 10
    assert budget.spend(101.0)  # a new second: its first retry is allowed
    assert not budget.spend(101.1)
    # ten seconds on, the old requests no longer pay for retries
    budget.requested(111.0)
    assert budget.spend(111.0) and not budget.spend(111.2)
