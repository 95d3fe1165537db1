"""The breaker adapter around pybreaker, and the breaker stage, driven directly.

Each pybreaker 1.4.1 pitfall the adapter exists for has its own test: split admission and
outcome, the trial limit in half-open, and late outcomes from an earlier state.
"""

import asyncio
import logging

import pytest
from multidict import CIMultiDict

from addons import metrics
from addons.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerStage, clients_own_timeout, shown_state
from addons.errors import AmbassadorError
from addons.exchange import UpstreamRequest, UpstreamResponse
from addons.profile import BreakerPolicy

POLICY = BreakerPolicy(fail_max=3, reset_timeout=30.0, half_open_max=2)


def elapse_reset_timeout(breaker: Breaker) -> None:
    """Let the open window pass without waiting for it."""
    breaker.opened_at -= breaker.policy.reset_timeout


def trip(breaker: Breaker) -> None:
    for _ in range(breaker.policy.fail_max):
        breaker.record(breaker.admit(), failed=True)
    assert breaker.state == OPEN


def half_open(breaker: Breaker) -> list:
    """Trip it, let the window pass, and take all the trial tickets there are."""
    trip(breaker)
    elapse_reset_timeout(breaker)
    tickets = [breaker.admit() for _ in range(breaker.policy.half_open_max)]
    assert all(t and t.trial for t in tickets) and breaker.state == HALF_OPEN
    return tickets


def test_consecutive_failures_open_it_and_a_success_resets_the_count():
    breaker = Breaker("up", POLICY)
    for _ in range(POLICY.fail_max - 1):
        breaker.record(breaker.admit(), failed=True)
    breaker.record(breaker.admit(), failed=False)
    for _ in range(POLICY.fail_max - 1):
        breaker.record(breaker.admit(), failed=True)
    assert breaker.state == CLOSED
    breaker.record(breaker.admit(), failed=True)
    assert breaker.state == OPEN
    assert breaker.admit() is None
    assert 29 < breaker.seconds_until_half_open() <= 30


def test_admission_and_outcome_are_separate_steps():
    # pybreaker has no such API: its calling() would have to stay open across the await.
    breaker = Breaker("up", POLICY)
    tickets = [breaker.admit() for _ in range(5)]
    assert all(t is not None and not t.trial for t in tickets)
    for ticket in tickets[:3]:
        breaker.record(ticket, failed=True)
    assert breaker.state == OPEN  # counted although admitted long before


def test_half_open_lets_through_only_half_open_max_trials():
    # pybreaker's half-open state admits every request.
    breaker = Breaker("up", POLICY)
    trip(breaker)
    elapse_reset_timeout(breaker)
    admitted = [t for t in (breaker.admit() for _ in range(10)) if t is not None]
    assert len(admitted) == POLICY.half_open_max and all(t.trial for t in admitted)
    assert breaker.state == HALF_OPEN


def test_a_successful_trial_closes_it_and_a_failed_one_opens_it_again():
    breaker = Breaker("up", POLICY)
    first, _ = half_open(breaker)
    breaker.record(first, failed=False)
    assert breaker.state == CLOSED
    assert breaker.admit() is not None

    breaker = Breaker("up", POLICY)
    first, _ = half_open(breaker)
    breaker.record(first, failed=True)
    assert breaker.state == OPEN
    assert 29 < breaker.seconds_until_half_open() <= 30


def test_a_late_success_does_not_close_a_breaker_whose_latest_trial_failed():
    breaker = Breaker("up", POLICY)
    slow, fast = half_open(breaker)
    breaker.record(fast, failed=True)
    assert breaker.state == OPEN
    breaker.record(slow, failed=False)  # pybreaker would close it here
    assert breaker.state == OPEN
    assert breaker.admit() is None


def test_late_failures_do_not_reopen_it_or_push_the_open_window_forward():
    breaker = Breaker("up", POLICY)
    late = [breaker.admit() for _ in range(5)]  # admitted while closed, answered late
    trip(breaker)
    opened_at = breaker.opened_at
    for ticket in late:
        breaker.record(ticket, failed=True)
    assert breaker.opened_at == opened_at

    elapse_reset_timeout(breaker)
    trial = breaker.admit()
    assert trial.trial
    breaker.record(late[0], failed=True)  # a failure from the closed state, arriving in half-open
    assert breaker.state == HALF_OPEN
    breaker.record(late[1], failed=False)  # nor does a late success close it: only the trial counts
    assert breaker.state == HALF_OPEN
    breaker.record(trial, failed=False)
    assert breaker.state == CLOSED


def test_late_outcomes_from_before_a_close_do_not_count_in_the_new_closed_state():
    breaker = Breaker("up", POLICY)
    late = [breaker.admit() for _ in range(POLICY.fail_max)]
    trial, _ = half_open(breaker)
    breaker.record(trial, failed=False)
    for ticket in late:
        breaker.record(ticket, failed=True)
    assert breaker.state == CLOSED
    assert breaker.pybreaker.fail_counter == 0


def test_a_cancelled_trial_gives_its_ticket_back():
    breaker = Breaker("up", POLICY)
    first, second = half_open(breaker)
    assert breaker.admit() is None
    breaker.release(first)
    replacement = breaker.admit()
    assert replacement is not None and replacement.trial
    assert breaker.admit() is None


def test_forced_open_and_close():
    breaker = Breaker("up", POLICY)
    breaker.force_open()
    assert breaker.state == OPEN and breaker.admit() is None
    breaker.force_close()
    assert breaker.state == CLOSED and breaker.admit() is not None


def test_each_state_change_is_reported_once():
    changes = []
    breaker = Breaker("up", POLICY, changes.append)
    for _ in range(10):
        ticket = breaker.admit()
        if ticket:
            breaker.record(ticket, failed=True)
    elapse_reset_timeout(breaker)
    trial = breaker.admit()
    for _ in range(5):
        breaker.admit()
    breaker.record(trial, failed=False)
    assert changes == [OPEN, HALF_OPEN, CLOSED]


# --- the stage -----------------------------------------------------------------------


def request() -> UpstreamRequest:
    return UpstreamRequest("GET", "/x", CIMultiDict())


def answer(status: int):
    async def call_next(req):
        return UpstreamResponse(status, "", CIMultiDict())
    return call_next


def fail_with(reason: str):
    async def call_next(req):
        raise AmbassadorError(reason, reason, "up")
    return call_next


def test_stage_counts_failure_statuses_timeouts_and_connect_errors_and_refuses_while_open(caplog):
    stage = BreakerStage("stage-up", POLICY)
    contacts = []

    async def counted(req):
        contacts.append(req)
        return UpstreamResponse(200, "", CIMultiDict())

    async def scenario():
        assert (await stage(request(), answer(502))).status == 502
        for reason in ("timeout", "connect_error"):
            with pytest.raises(AmbassadorError):
                await stage(request(), fail_with(reason))
        assert stage.status() == OPEN
        req = request()
        with pytest.raises(AmbassadorError) as refused:
            await stage(req, counted)
        return refused.value, req

    transitions = metrics.BREAKER_TRANSITIONS.labels("stage-up", OPEN)
    before = transitions._value.get()
    with caplog.at_level(logging.WARNING, logger="addons.breaker"):
        error, req = asyncio.run(scenario())
    assert (error.reason, error.status, error.upstream) == ("circuit_open", 503, "stage-up")
    assert 29 <= int(error.headers["Retry-After"]) <= 30
    assert contacts == []
    assert req.notes["breaker"] == OPEN
    assert metrics.REGISTRY.get_sample_value("ambassador_breaker_state", {"upstream": "stage-up"}) == 2
    assert transitions._value.get() == before + 1
    assert [r.getMessage() for r in caplog.records] == ["upstream stage-up: circuit breaker closed -> open"]


def test_open_is_shown_half_open_once_the_window_has_passed():
    assert shown_state(OPEN, 0.5) == OPEN
    assert shown_state(OPEN, 0.0) == HALF_OPEN
    assert shown_state(OPEN, -3.0) == HALF_OPEN
    assert shown_state(CLOSED, -3.0) == CLOSED
    assert shown_state(HALF_OPEN, 12.0) == HALF_OPEN


def test_stage_status_and_gauge_turn_half_open_without_a_request():
    stage = BreakerStage("idle-up", POLICY)
    for _ in range(POLICY.fail_max):
        stage.local.record(stage.local.admit(), failed=True)
    gauge = lambda: metrics.REGISTRY.get_sample_value("ambassador_breaker_state", {"upstream": "idle-up"})  # noqa: E731
    assert stage.status() == OPEN and gauge() == 2
    elapse_reset_timeout(stage.local)
    assert stage.status() == HALF_OPEN and gauge() == 1
    assert stage.local.admit().trial  # the trial the status announced is there to take


def test_stage_ignores_answers_that_say_nothing_about_the_upstream():
    stage = BreakerStage("up", BreakerPolicy(fail_max=1))

    async def scenario():
        for status in (200, 404, 429):
            await stage(request(), answer(status))
        for reason in ("auth_failed", "bad_request"):
            with pytest.raises(AmbassadorError):
                await stage(request(), fail_with(reason))

    asyncio.run(scenario())
    assert stage.status() == CLOSED


def test_stage_gives_back_the_trial_of_a_cancelled_request():
    stage = BreakerStage("up", BreakerPolicy(fail_max=1, half_open_max=1))

    async def scenario():
        await stage(request(), answer(500))
        elapse_reset_timeout(stage.local)
        hanging = asyncio.get_running_loop().create_task(stage(request(), lambda r: asyncio.sleep(3600)))
        await asyncio.sleep(0)
        with pytest.raises(AmbassadorError):
            await stage(request(), answer(200))  # the only trial is taken
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
        return await stage(request(), answer(200))

    assert asyncio.run(scenario()).status == 200
    assert stage.status() == CLOSED


# --- timeouts the client asked for ----------------------------------------------------------


@pytest.mark.parametrize("client_timeout, upstream_timeout, try_bound, elapsed, excused", [
    (0.001, 5.0, 5.0, 0.002, True),  # X-Ambassador-Timeout: 1ms against a 5s upstream
    (None, 5.0, 5.0, 5.0, False),  # the upstream's own timeout
    (10.0, 5.0, 5.0, 5.0, False),  # a longer client timeout is not in force
    (None, 10.0, 1.0, 0.8, False),  # a last try cut short by the upstream's own timeout
    (3.0, 10.0, 1.0, 1.0, False),  # the retry policy's try_timeout fired: a real failure
    (3.0, 10.0, 1.0, 0.8, True),  # the last try, cut short by what was left of the client's 3s
])
def test_a_timeout_is_the_clients_own_when_it_asked_for_less_and_the_try_ended_earlier(
    client_timeout, upstream_timeout, try_bound, elapsed, excused
):
    assert clients_own_timeout(client_timeout, upstream_timeout, try_bound, elapsed) is excused


def test_stage_does_not_count_timeouts_the_client_asked_for():
    stage = BreakerStage("up", BreakerPolicy(fail_max=1), timeouts=(5.0, 5.0))

    async def scenario():
        for _ in range(5):
            impatient = UpstreamRequest("GET", "/x", CIMultiDict(), timeout=0.001, client_timeout=0.001)
            with pytest.raises(AmbassadorError):
                await stage(impatient, fail_with("timeout"))
            assert stage.status() == CLOSED
        with pytest.raises(AmbassadorError):
            await stage(request(), fail_with("timeout"))  # the upstream's own

    asyncio.run(scenario())
    assert stage.status() == OPEN
