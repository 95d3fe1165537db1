"""The retry stage driven directly, with scripted outcomes for each try."""

import asyncio
import time

import pytest
from multidict import CIMultiDict

from addons.errors import AmbassadorError
from addons.exchange import UpstreamRequest, UpstreamResponse
from addons.profile import RetryPolicy
from addons.retry import RetryStage, retry_after

POLICY = RetryPolicy(attempts=3, backoff=0.01)


def stage(policy=POLICY, timeout=10.0) -> RetryStage:
    return RetryStage("up", policy, lambda r: r.started + min(timeout, r.timeout or timeout))


def response(status: int, headers=()) -> UpstreamResponse:
    return UpstreamResponse(status, "", CIMultiDict(headers))


class Script:
    """call_next answering from a list: a status, a (status, headers) pair, or an error reason."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.tries: list[tuple[float, float]] = []  # (sent at, deadline given to the try)

    async def __call__(self, req: UpstreamRequest):
        self.tries.append((time.monotonic(), req.started + req.timeout if req.timeout else None))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, str):
            raise AmbassadorError(outcome, outcome, "up")
        if isinstance(outcome, tuple):
            return response(*outcome)
        return response(outcome)


def run(retry: RetryStage, script: Script, method="GET", retries=None, timeout=None):
    req = UpstreamRequest(method, "/x", CIMultiDict(), retries=retries, timeout=timeout)
    try:
        return asyncio.run(retry(req, script)), req
    except AmbassadorError as e:
        return e, req


def test_retries_statuses_timeouts_and_connection_errors_until_success():
    script = Script(503, "timeout", "connect_error", 200)
    answer, req = run(stage(RetryPolicy(attempts=4, backoff=0.01)), script)
    assert answer.status == 200
    assert answer.headers["X-Ambassador-Attempts"] == "4" and req.notes["attempts"] == 4


def test_gives_up_after_attempts_with_the_last_answer():
    answer, req = run(stage(), Script(502, 504, 503))
    assert answer.status == 503 and answer.headers["X-Ambassador-Attempts"] == "3"
    error, _ = run(stage(), Script("timeout", "timeout", "connect_error"))
    assert isinstance(error, AmbassadorError) and error.reason == "connect_error"
    assert error.headers["X-Ambassador-Attempts"] == "3"


def test_other_answers_are_not_retried():
    for outcome in (500, 404, 429, "auth_failed"):
        script = Script(outcome, 200)
        run(stage(), script)
        assert len(script.tries) == 1, outcome


def test_only_listed_methods_are_retried():
    script = Script(503, 200)
    answer, _ = run(stage(), script, method="POST")
    assert answer.status == 503 and answer.headers["X-Ambassador-Attempts"] == "1"
    script = Script(503, 200)
    answer, _ = run(stage(RetryPolicy(attempts=3, backoff=0.01, methods=frozenset({"POST"}))), script, method="POST")
    assert answer.status == 200


def test_client_override_lowers_the_tries_and_zero_disables():
    for retries, tries in ((0, 1), (1, 2), (7, 3)):
        script = Script(503, 503, 503, 503)
        answer, _ = run(stage(), script, retries=retries)
        assert len(script.tries) == tries and answer.headers["X-Ambassador-Attempts"] == str(tries)


def test_backoff_grows_exponentially_with_jitter():
    retry = stage(RetryPolicy(backoff=0.1))
    for n in (1, 2, 3):
        waits = {retry.backoff(n) for _ in range(50)}
        assert all(0.1 * 2 ** (n - 1) / 2 <= w <= 0.1 * 2 ** (n - 1) for w in waits)
        assert len(waits) > 1


def test_retry_after_of_429_and_503_is_honoured():
    script = Script((503, [("Retry-After", "1")]), 200)
    answer, _ = run(stage(), script)
    assert answer.status == 200
    (first, _), (second, _) = script.tries
    assert second - first >= 1.0


def test_a_retry_after_beyond_the_timeout_is_not_waited_for():
    script = Script((503, [("Retry-After", "120")]), 200)
    started = time.monotonic()
    answer, _ = run(stage(timeout=5), script)
    assert answer.status == 503 and answer.headers["Retry-After"] == "120"
    assert len(script.tries) == 1 and time.monotonic() - started < 1


def test_retry_after_forms():
    assert retry_after(response(429, [("Retry-After", "7")])) == 7
    in_a_minute = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 55 < retry_after(response(503, [("Retry-After", in_a_minute)])) <= 60
    assert retry_after(response(502, [("Retry-After", "7")])) is None
    assert retry_after(response(503, [("Retry-After", "soon")])) is None


def test_a_try_may_use_all_that_is_left_unless_try_timeout_bounds_it():
    script = Script(200)
    req = UpstreamRequest("GET", "/x", CIMultiDict(), timeout=3.0)
    asyncio.run(stage(timeout=10)(req, script))
    (sent, given), = script.tries
    assert given == pytest.approx(req.started + 3.0, abs=1e-6)

    script = Script("timeout", "timeout", 200)
    req = UpstreamRequest("GET", "/x", CIMultiDict(), timeout=3.0)
    deadline = req.started + 3.0
    asyncio.run(stage(RetryPolicy(attempts=3, backoff=0.01, try_timeout=1.0), timeout=10)(req, script))
    budgets = [given - sent for sent, given in script.tries]
    assert budgets[0] == pytest.approx(1.0, abs=0.05)
    assert all(given <= deadline + 1e-6 for _, given in script.tries)


def test_a_retry_the_breaker_refuses_is_not_sent_and_the_last_answer_stands():
    script = Script(503, "circuit_open")
    answer, req = run(stage(), script)
    assert answer.status == 503 and answer.headers["X-Ambassador-Attempts"] == "1"
    error, req = run(stage(), Script("circuit_open"))
    assert error.reason == "circuit_open" and "attempts" not in req.notes
