"""The shared pacing state against a real redis-server: one SharedPace per "instance", each
with its own connection, as two ambassadors would have."""

import asyncio

import pytest

from addons import shared_redis
from addons.pacing import Pace
from addons.shared_limit import SharedPace
from addons.shared_state import REDIS_TIMEOUT

PACE = Pace(rate=50.0, burst=5)


@pytest.fixture
def name(request):
    return request.node.name.replace("_", "-")[:60]


def instances(url, name, n=2, hold_longest=5.0):
    return [
        SharedPace(shared_redis.connect(url, REDIS_TIMEOUT, retries=False), name, PACE, hold_longest)
        for _ in range(n)
    ]


async def take(pace: SharedPace) -> tuple[str, float]:
    held_as = pace.name()
    _, wait = await pace.take(held_as)
    return held_as, wait


async def closed(*paces):
    for pace in paces:
        await pace.close()


def test_requests_not_yet_written_keep_the_bucket_from_refilling_for_every_instance(redis, name):
    async def scenario():
        a, b = instances(redis.url, name)
        started = [await take(a) for _ in range(3)] + [await take(b) for _ in range(2)]
        assert all(wait == 0 for _, wait in started)
        # The five are still opening connections: a stall long enough to refill the bucket
        # twice over lets nobody else start, on either instance.
        await asyncio.sleep(0.25)
        assert (await take(a))[1] > 0 and (await take(b))[1] > 0
        for pace, (held_as, _) in zip([a, a, a, b, b], started):
            state = await pace.sent(held_as)
        assert state.tokens < 1  # refilling from the writes on
        await asyncio.sleep(0.03)
        assert (await take(b))[1] == 0
        await closed(a, b)

    asyncio.run(scenario())


def test_a_request_given_back_frees_its_place(redis, name):
    async def scenario():
        (a,) = instances(redis.url, name, 1)
        started = [await take(a) for _ in range(5)]
        state = await a.give_back(started[0][0], 0.0)
        assert state.tokens == pytest.approx(1, abs=0.1)
        assert (await take(a))[1] == 0
        await closed(a)

    asyncio.run(scenario())


def test_requests_of_an_instance_that_died_stop_holding_after_the_longest_hold(redis, name):
    async def scenario():
        a, b = instances(redis.url, name, hold_longest=0.3)
        for _ in range(5):
            assert (await take(a))[1] == 0
        await a.close()  # gone, its five never written
        await asyncio.sleep(0.15)  # long enough to refill the bucket, were they not held
        assert (await take(b))[1] > 0
        await asyncio.sleep(0.25)  # past the longest hold
        assert (await take(b))[1] == 0
        await closed(b)

    asyncio.run(scenario())
