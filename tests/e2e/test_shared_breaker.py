"""The Redis-backed breaker state against a real redis-server: one object per "instance",
each with its own connection, as two ambassadors would have."""

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDict

from addons.breaker import BreakerStage
from addons.errors import AmbassadorError
from addons.exchange import UpstreamRequest, UpstreamResponse
from addons.profile import BreakerPolicy
from addons.shared_redis import upstream_keys
from addons.shared_state import FRESH_FOR, SharedBreakerState, SharedStateUnavailable
from redis_server import RedisServer, free_port

POLICY = BreakerPolicy(fail_max=3, reset_timeout=0.3, half_open_max=2)


@pytest.fixture
def name(request):
    return request.node.name.replace("_", "-")[:60]


def instances(url, name, n=2, policy=POLICY, lease=10.0):
    return [SharedBreakerState.connect(url, name, policy, lease) for _ in range(n)]


async def stored(url, name) -> dict:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return await client.hgetall(upstream_keys(name) + "breaker")
    finally:
        await client.aclose()


async def trip(state: SharedBreakerState):
    for _ in range(state.policy.fail_max):
        generation, trial = await state.admit()
        await state.record(generation, trial, failed=True)
    assert state.state == "open"


async def close_all(*states):
    for state in states:
        await state.close()


def test_half_open_trials_are_limited_across_instances(redis, name):
    async def scenario():
        a, b = instances(redis.url, name)
        await trip(a)
        await asyncio.sleep(POLICY.reset_timeout + 0.05)
        admitted = await asyncio.gather(*(s.admit() for s in (a, b) * 10))
        await close_all(a, b)
        return [t for t in admitted if t is not None]

    trials = asyncio.run(scenario())
    assert len(trials) == POLICY.half_open_max and all(trial for _, trial in trials)


def test_another_instance_sees_it_open_within_fresh_for(redis, name):
    async def scenario():
        a, b = instances(redis.url, name)
        assert await b.admit() is not None  # b now trusts "closed" for FRESH_FOR
        await trip(a)
        started = time.monotonic()
        while await b.admit() is not None:
            await asyncio.sleep(0.02)
        await close_all(a, b)
        return time.monotonic() - started

    assert asyncio.run(scenario()) <= FRESH_FOR + 0.2


def test_the_open_window_is_kept_in_milliseconds(redis, name):
    async def scenario():
        (a,) = instances(redis.url, name, 1)
        await trip(a)
        assert 0.2 < a.seconds_until_half_open() <= 0.3
        await asyncio.sleep(0.1)
        refused = await a.admit()
        await asyncio.sleep(0.25)
        trial = await a.admit()
        await close_all(a)
        return refused, trial

    refused, trial = asyncio.run(scenario())
    assert refused is None and trial is not None and trial[1]


def test_outcomes_from_an_earlier_state_are_ignored(redis, name):
    async def scenario():
        a, b = instances(redis.url, name)
        late = [await a.admit() for _ in range(3)]  # admitted while closed
        await trip(b)
        before = await stored(redis.url, name)
        for generation, trial in late:
            await a.record(generation, trial, failed=True)  # would push the open window forward
        after_failures = await stored(redis.url, name)
        await asyncio.sleep(POLICY.reset_timeout + 0.05)
        first, second = await b.admit(), await a.admit()
        await b.record(*first, failed=True)  # the latest trial fails
        await a.record(*second, failed=False)  # a late success must not close it
        final = await stored(redis.url, name)
        await close_all(a, b)
        return before, after_failures, final

    before, after_failures, final = asyncio.run(scenario())
    assert after_failures == before
    assert final["state"] == "open" and int(final["opened"]) > int(before["opened"])


def test_a_successful_trial_closes_it_for_every_instance(redis, name):
    async def scenario():
        a, b = instances(redis.url, name)
        await trip(a)
        await asyncio.sleep(POLICY.reset_timeout + 0.05)
        trial = await b.admit()
        await b.record(*trial, failed=False)
        await asyncio.sleep(FRESH_FOR)
        ticket = await a.admit()
        await close_all(a, b)
        return ticket

    assert asyncio.run(scenario()) is not None


def test_a_starting_instance_resets_nothing(redis, name):
    async def scenario():
        (a,) = instances(redis.url, name, 1)
        for _ in range(POLICY.fail_max - 1):
            await a.record(*(await a.admit()), failed=True)
        before = await stored(redis.url, name)
        (late_starter,) = instances(redis.url, name, 1)
        ticket = await late_starter.admit()
        unchanged = await stored(redis.url, name)
        await late_starter.record(*ticket, failed=True)  # one more failure, counted on top
        state = late_starter.state
        await close_all(a, late_starter)
        return before, unchanged, state

    before, unchanged, state = asyncio.run(scenario())
    assert before["fails"] == str(POLICY.fail_max - 1) and unchanged == before
    assert state == "open"


def test_breakers_are_namespaced_by_upstream_name(redis, name):
    async def scenario():
        (a,) = instances(redis.url, name + "-a", 1)
        (b,) = instances(redis.url, name + "-b", 1)
        await trip(a)
        ticket = await b.admit()
        await close_all(a, b)
        return ticket

    assert asyncio.run(scenario()) is not None


def test_trials_lost_with_their_instance_are_replaced_after_the_lease(redis, name):
    policy = BreakerPolicy(fail_max=1, reset_timeout=0.2, half_open_max=1)

    async def scenario():
        a, b = instances(redis.url, name, policy=policy, lease=0.3)
        await trip(a)
        await asyncio.sleep(0.25)
        assert await a.admit() is not None  # a trial whose instance then "dies"
        refused = await b.admit()
        await asyncio.sleep(0.35)
        replacement = await b.admit()
        await close_all(a, b)
        return refused, replacement

    refused, replacement = asyncio.run(scenario())
    assert refused is None and replacement is not None and replacement[1]


def test_a_cancelled_trial_is_given_back(redis, name):
    policy = BreakerPolicy(fail_max=1, reset_timeout=0.2, half_open_max=1)

    async def scenario():
        a, b = instances(redis.url, name, policy=policy)
        await trip(a)
        await asyncio.sleep(0.25)
        trial = await a.admit()
        assert await b.admit() is None
        await a.release(trial[0])
        again = await b.admit()
        await close_all(a, b)
        return again

    assert asyncio.run(scenario()) is not None


def test_forced_states_apply_to_every_instance(redis, name):
    async def scenario():
        a, b = instances(redis.url, name, policy=BreakerPolicy(reset_timeout=30))
        await a.force("open")
        await asyncio.sleep(FRESH_FOR)
        refused = await b.admit()
        await b.force("closed")
        admitted = await b.admit()
        await close_all(a, b)
        return refused, admitted

    refused, admitted = asyncio.run(scenario())
    assert refused is None and admitted is not None


def test_unreachable_redis_is_reported_quickly():
    async def scenario():
        (a,) = instances(f"redis://127.0.0.1:{free_port()}/0", "nowhere", 1)
        started = time.monotonic()
        with pytest.raises(SharedStateUnavailable):
            await a.admit()
        await a.close()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1


def test_the_stage_falls_back_to_its_local_breaker_with_one_warning(caplog):
    policy = BreakerPolicy(fail_max=2, reset_timeout=30)
    shared = SharedBreakerState.connect(f"redis://127.0.0.1:{free_port()}/0", "fallback", policy, 10)
    stage = BreakerStage("fallback", policy, shared)

    async def answer(status):
        return UpstreamResponse(status, "", CIMultiDict())

    async def scenario():
        for _ in range(5):
            response = await stage(UpstreamRequest("GET", "/", CIMultiDict()), lambda r: answer(200))
            assert response.status == 200
        for _ in range(2):
            await stage(UpstreamRequest("GET", "/", CIMultiDict()), lambda r: answer(500))
        with pytest.raises(AmbassadorError) as refused:
            await stage(UpstreamRequest("GET", "/", CIMultiDict()), lambda r: answer(200))
        await stage.close()
        return refused.value

    with caplog.at_level(logging.WARNING, logger="addons.breaker"):
        refused = asyncio.run(scenario())
    assert refused.reason == "circuit_open" and stage.local.state == "open"
    unreachable = [r for r in caplog.records if "shared breaker state unreachable" in r.getMessage()]
    assert len(unreachable) == 1


def test_forcing_while_redis_is_down_forces_the_local_breaker():
    policy = BreakerPolicy(reset_timeout=30)
    shared = SharedBreakerState.connect(f"redis://127.0.0.1:{free_port()}/0", "forced", policy, 10)
    stage = BreakerStage("forced", policy, shared)

    async def scenario():
        await stage.force_open()
        with pytest.raises(AmbassadorError) as refused:
            await stage(UpstreamRequest("GET", "/", CIMultiDict()), lambda r: None)
        await stage.close()
        return refused.value

    assert asyncio.run(scenario()).reason == "circuit_open"


def test_an_open_shared_breaker_stays_open_when_redis_goes_away(tmp_path):
    """The local breaker takes over the open window: a Redis outage must not send every
    instance at an upstream the shared breaker knows to be failing."""
    policy = BreakerPolicy(fail_max=2, reset_timeout=30)

    async def answer(status):
        return UpstreamResponse(status, "", CIMultiDict())

    def request():
        return UpstreamRequest("GET", "/", CIMultiDict())

    with RedisServer(tmp_path) as server:
        stage = BreakerStage("carried", policy, SharedBreakerState.connect(server.url, "carried", policy, 10))
        sent = []

        async def upstream_ok(r):
            sent.append(r)
            return await answer(200)

        async def scenario():
            for _ in range(2):
                await stage(request(), lambda r: answer(500))
            assert stage.shared.state == "open"
            server.kill()
            await asyncio.sleep(FRESH_FOR + 0.1)  # the cached shared view goes stale: Redis is asked, and is gone
            with pytest.raises(AmbassadorError) as refused:
                await stage(request(), upstream_ok)
            await stage.close()
            return refused.value

        refused = asyncio.run(scenario())
    assert refused.reason == "circuit_open" and sent == []
    assert stage.local.state == "open" and 25 < stage.local.seconds_until_half_open() <= 30


def test_status_of_an_idle_instance_turns_half_open_when_the_window_has_passed(redis, name):
    from addons import metrics

    async def scenario():
        a, b = instances(redis.url, name)
        idle = BreakerStage(name, POLICY, b)  # no request reaches this instance
        await trip(a)
        seen = []
        deadline = time.monotonic() + 5
        while "half-open" not in seen and time.monotonic() < deadline:
            seen.append(idle.status())  # each look also asks Redis for the next one
            await asyncio.sleep(0.02)
        gauge = metrics.REGISTRY.get_sample_value("ambassador_breaker_state", {"upstream": name})
        stored_state = (await stored(redis.url, name)).get("state")
        await close_all(a, b)
        return seen, gauge, stored_state

    seen, gauge, stored_state = asyncio.run(scenario())
    assert "open" in seen and seen[-1] == "half-open"
    assert gauge == 1
    assert stored_state == "open"  # nothing moved it: status shows what the next request will find
