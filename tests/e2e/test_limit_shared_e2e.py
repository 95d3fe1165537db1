"""`limit` shared by two real ambassadors through a real redis-server."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import Ambassador, FakeUpstream, Reply
from profiles import profile, upstream
from redis_server import RedisServer
from test_limit_e2e import Paced, most_in_one_second


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared-limit")
    paced, follow = Paced(), Paced()
    with FakeUpstream(paced) as up, FakeUpstream(follow) as up2, RedisServer(folder) as redis:
        shared = profile(
            upstream("paced", up.url, path_prefix="/paced", limit={"rate": "10/s", "max_wait": "10s"}),
            upstream("follow", up2.url, path_prefix="/follow", limit={"max_wait": "10s"}),
            state=redis.url,
        )
        (folder / "a").mkdir()
        (folder / "b").mkdir()
        with Ambassador(folder / "a", shared) as a, Ambassador(folder / "b", shared) as b:
            yield a, b, paced, follow, redis


def test_two_instances_send_the_shared_rate_together(setup):
    a, b, paced, _, _ = setup
    started = time.monotonic()
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda i: (a, b)[i % 2].get(f"/paced/{i}"), range(30)))
    assert [status for status, _, _ in answers] == [200] * 30
    assert len(paced.arrivals) == 30
    assert most_in_one_second(paced.arrivals) <= 10 + 3  # 20 if each kept its own 10/s
    assert time.monotonic() - started >= 2.5


def test_a_pause_asked_through_one_instance_holds_the_other(setup):
    a, b, _, follow, _ = setup
    follow.reply = Reply(429, [("Retry-After", "2")], b"slow down")
    assert a.get("/follow/first")[0] == 429
    paused_at = follow.arrivals[0]
    follow.reply = Reply(200, body=b"ok")
    assert b.get("/follow/second")[0] == 200
    assert follow.arrivals[1] - paused_at >= 1.5


def test_without_redis_each_instance_keeps_to_the_limit_alone_and_recovers(setup):
    a, _, paced, _, redis = setup
    redis.kill()
    try:
        count = len(paced.arrivals)
        with ThreadPoolExecutor(15) as pool:
            answers = list(pool.map(lambda i: a.get(f"/paced/down{i}"), range(15)))
        assert [status for status, _, _ in answers] == [200] * 15
        assert most_in_one_second(paced.arrivals[count:]) <= 10 + 3
        a.wait_for_log("shared limit state unreachable")
        assert a.output.count("shared limit state unreachable") == 1
    finally:
        redis.start()
    deadline = time.monotonic() + 10
    while "shared limit state reachable again" not in a.output:
        assert time.monotonic() < deadline
        assert a.get("/paced/back")[0] == 200
