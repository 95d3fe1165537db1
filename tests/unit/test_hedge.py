"""Hedging, failover and fallback decisions as plain functions, and their stages driven
directly with a real breaker below them."""

import asyncio

import pytest
from multidict import CIMultiDict

from addons.breaker import BreakerStage
from addons.errors import AmbassadorError
from addons.exchange import UpstreamRequest, UpstreamResponse
from addons.failover import failed, rebased, try_order
from addons.fallback import FallbackStage, needs_fallback
from addons.hedge import HedgeStage, copies_for, next_copy_at, wins
from addons.profile import BreakerPolicy, FallbackAnswer, HedgePolicy

FAILURES = frozenset({500, 502, 503, 504})


def in_loop(scenario):
    """A test running `scenario` (a coroutine function) in an event loop of its own."""

    def test():
        asyncio.run(scenario())

    return test


def response(status: int) -> UpstreamResponse:
    return UpstreamResponse(status, "", CIMultiDict())


def request(method: str = "GET") -> UpstreamRequest:
    return UpstreamRequest(method, "/x", CIMultiDict())


@pytest.mark.parametrize("method, copies", [("GET", 3), ("HEAD", 3), ("PUT", 3), ("DELETE", 3), ("OPTIONS", 3), ("POST", 1), ("PATCH", 1)])
def test_only_idempotent_methods_get_copies(method, copies):
    assert copies_for(HedgePolicy(after=0.3, max=2), method) == copies


def test_each_copy_is_due_after_apart():
    policy = HedgePolicy(after=0.3, max=2)
    assert next_copy_at(10.0, 1, policy) == pytest.approx(10.3)
    assert next_copy_at(10.0, 2, policy) == pytest.approx(10.6)


@pytest.mark.parametrize(
    "outcome, ends_the_race",
    [
        (response(200), True),
        (response(404), True),  # an answer, if not a welcome one
        (response(503), False),
        (AmbassadorError("timeout", "t"), False),
        (AmbassadorError("connect_error", "c"), False),
        (AmbassadorError("circuit_open", "o"), False),
        (AmbassadorError("auth_failed", "a"), True),  # the same for every copy
    ],
)
def test_which_answer_wins(outcome, ends_the_race):
    assert wins(outcome, FAILURES) is ends_the_race


def test_urls_that_failed_in_the_request_come_last():
    urls = ["a", "b", "c"]
    assert try_order(urls, []) == [0, 1, 2]
    assert try_order(urls, ["a"]) == [1, 2, 0]
    assert try_order(urls, ["b", "a"]) == [2, 1, 0]


@pytest.mark.parametrize(
    "path, from_base, to_base, expected",
    [
        ("/v1/orders?q=1", "/v1", "/v2", "/v2/orders?q=1"),
        ("/v1", "/v1", "", "/"),
        ("/v1?q=1", "/v1", "/v2", "/v2?q=1"),
        ("/orders", "", "/api", "/api/orders"),
    ],
)
def test_a_path_moves_from_one_base_path_to_another(path, from_base, to_base, expected):
    assert rebased(path, from_base, to_base) == expected


def test_what_counts_as_failed_for_failover_and_fallback():
    assert failed(response(502), FAILURES) and not failed(response(429), FAILURES)
    assert failed(AmbassadorError("timeout", "t"), FAILURES) and not failed(AmbassadorError("circuit_open", "o"), FAILURES)
    assert needs_fallback(AmbassadorError("circuit_open", "o"), FAILURES)
    assert not needs_fallback(AmbassadorError("bad_request", "b"), FAILURES)
    assert needs_fallback(response(500), FAILURES) and not needs_fallback(response(404), FAILURES)


class Upstream:
    """call_next for the hedge stage: each copy waits until the test lets it answer."""

    def __init__(self):
        self.copies: list[asyncio.Future] = []
        self.arrived = asyncio.Event()

    async def __call__(self, req: UpstreamRequest) -> UpstreamResponse:
        answer = asyncio.get_running_loop().create_future()
        self.copies.append(answer)
        self.arrived.set()
        return await answer

    async def next_copy(self) -> asyncio.Future:
        self.arrived.clear()
        await asyncio.wait_for(self.arrived.wait(), 5)
        return self.copies[-1]


@in_loop
async def test_no_copy_goes_out_while_the_breaker_is_open():
    breaker = BreakerStage("up", BreakerPolicy(fail_max=1, reset_timeout=60))
    upstream = Upstream()
    hedge = HedgeStage("up", HedgePolicy(after=0.05, max=2), FAILURES)
    reached, all_due = [], asyncio.Event()

    async def through_breaker(req):
        reached.append(req)
        if len(reached) == 3:
            all_due.set()
        return await breaker(req, upstream)

    race = asyncio.create_task(hedge(request(), through_breaker))
    first = await upstream.next_copy()
    await breaker.force_open()  # opens while the first copy is under way
    await asyncio.wait_for(all_due.wait(), 5)  # both extra copies came to the breaker...
    assert len(upstream.copies) == 1  # ...and neither went out
    first.set_result(response(200))
    answer = await race
    assert answer.status == 200
    assert "X-Ambassador-Attempts" not in answer.headers
    assert hedge.status() == {"sent": 0, "won": 0}


@in_loop
async def test_the_first_answer_wins_and_the_others_are_cancelled():
    upstream = Upstream()
    hedge = HedgeStage("up", HedgePolicy(after=0.02, max=2), FAILURES)
    req = request()
    race = asyncio.create_task(hedge(req, upstream))
    await upstream.next_copy()
    second = await upstream.next_copy()
    third = await upstream.next_copy()
    second.set_result(response(200))
    answer = await race
    assert answer.headers["X-Ambassador-Attempts"] == "3"
    assert upstream.copies[0].cancelled() and third.cancelled()
    assert req.notes["hedged"] == 2
    assert hedge.status() == {"sent": 2, "won": 1}


@in_loop
async def test_a_failed_copy_leaves_the_race_to_the_others():
    upstream = Upstream()
    hedge = HedgeStage("up", HedgePolicy(after=0.02, max=1), FAILURES)
    race = asyncio.create_task(hedge(request(), upstream))
    first = await upstream.next_copy()
    second = await upstream.next_copy()
    second.set_exception(AmbassadorError("connect_error", "c"))
    await asyncio.sleep(0)
    assert not race.done()
    first.set_result(response(200))
    assert (await race).status == 200


@in_loop
async def test_the_fallback_answer_is_marked_and_bodiless_for_head():
    answer = FallbackAnswer(200, (("Content-Type", "application/json"),), b'{"items": []}')
    stage = FallbackStage("up", answer, FAILURES)

    async def down(req):
        raise AmbassadorError("connect_error", "c", headers={"X-Ambassador-Attempts": "3"})

    got = await stage(request(), down)
    assert (got.status, got.reason, got.body) == (200, "OK", b'{"items": []}')
    assert got.headers["X-Ambassador-Fallback"] == "1"
    assert got.headers["X-Ambassador-Attempts"] == "3"
    head = await stage(request("HEAD"), down)
    assert head.body == b"" and head.headers["Content-Length"] == "13"
    assert stage.status() == {"answers": 2}


def test_the_mitmweb_comment_tells_of_hedges_failover_and_fallback():
    from mitmproxy.test import tflow

    from addons.operations import DEGRADED_MARKER, Exchange

    flow = tflow.tflow(resp=True)
    flow.metadata["ambassador"] = {
        "upstream": "billing", "attempts": 3, "hedged": 1,
        "failed_urls": ["https://a.example.com/v2"], "failover_to": "https://b.example.com/v2",
    }
    assert Exchange.of(flow, now=flow.request.timestamp_start).comment() == (
        "upstream billing · attempts 3 · hedged: 1 extra copy · failover to https://b.example.com/v2 · failed: https://a.example.com/v2"
    )
    flow.metadata["ambassador"] = {"upstream": "billing", "fallback": "circuit_open"}
    exchange = Exchange.of(flow, now=flow.request.timestamp_start)
    assert exchange.comment() == "upstream billing · fallback answer (circuit_open)"
    assert exchange.marker() == DEGRADED_MARKER
