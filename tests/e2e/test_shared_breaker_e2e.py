"""Two real ambassadors sharing breaker state through a real redis-server."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import Ambassador, FakeUpstream, Reply, Switch
from profiles import Profile, profile, upstream
from redis_server import RedisServer

NAMES = ("spread", "trials", "restart", "impatient")


def shared_profile(redis_url: str, servers: dict) -> Profile:
    breaker = {"fail_max": 3, "reset_timeout": "2s", "half_open_max": 2}
    return profile(
        *(
            upstream(name, server.url, path_prefix=f"/{name}", timeout="500ms" if name == "impatient" else "5s", breaker=breaker)
            for name, server in servers.items()
        ),
        state=redis_url,
    )


@pytest.fixture(scope="module")
def upstreams():
    switches = {name: Switch() for name in NAMES}
    servers = {name: FakeUpstream(switches[name]).__enter__() for name in NAMES}
    yield {name: (switches[name], servers[name]) for name in NAMES}
    for server in servers.values():
        server.__exit__()


@pytest.fixture(scope="module")
def cluster(upstreams, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared")
    with RedisServer(folder) as redis:
        shared = shared_profile(redis.url, {name: server for name, (_, server) in upstreams.items()})
        (folder / "a").mkdir()
        (folder / "b").mkdir()
        with Ambassador(folder / "a", shared) as a, Ambassador(folder / "b", shared) as b:
            yield a, b, shared, folder


def refused(answer) -> bool:
    status, _, body = answer
    return status == 503 and json.loads(body)["reason"] == "circuit_open"


def test_an_open_breaker_stops_upstream_contact_from_every_instance_within_a_second(cluster, upstreams):
    a, b, _, _ = cluster
    switch, _ = upstreams["spread"]
    assert b.get("/spread/x")[0] == 200  # b has seen it closed
    switch.reply = Reply(500)
    for _ in range(3):
        assert a.get("/spread/x")[0] == 500
    tripped = time.monotonic()
    assert refused(a.get("/spread/x"))
    while b.status()["upstreams"]["spread"]["breaker"] != "open":  # b, idle, sees it too
        assert time.monotonic() - tripped < 1.5, "instance b does not see the breaker open"
        time.sleep(0.05)
    while not refused(b.get("/spread/x")):
        assert time.monotonic() - tripped < 1.5, "instance b still contacts the upstream"
        time.sleep(0.05)
    contacts = switch.count
    for instance in (a, b) * 5:
        assert refused(instance.get("/spread/x"))
    assert switch.count == contacts


def test_timeouts_a_client_asked_for_do_not_open_the_shared_breaker(cluster, upstreams):
    a, b, _, _ = cluster
    switch, _ = upstreams["impatient"]
    switch.reply = Reply(200, delay=1)
    for instance in (a, b) * 4:  # fail_max is 3
        status, _, body = instance.get("/impatient/x", {"X-Ambassador-Timeout": "1ms"})
        assert status == 504 and json.loads(body)["reason"] == "timeout"
    assert a.get("/impatient/x", {"X-Ambassador-Timeout": "1ms"})[0] == 504  # admitted: not open
    for instance in (a, b):
        assert instance.status()["upstreams"]["impatient"]["breaker"] == "closed"
    for _ in range(3):  # the upstream's own 500ms, from one instance
        assert a.get("/impatient/x")[0] == 504
    tripped = time.monotonic()
    assert refused(a.get("/impatient/x"))
    while not refused(b.get("/impatient/x")):  # shared: the other instance refuses too
        assert time.monotonic() - tripped < 1.5, "instance b still contacts the upstream"
        time.sleep(0.05)


def test_half_open_trials_are_limited_across_instances(cluster, upstreams):
    a, b, _, _ = cluster
    switch, _ = upstreams["trials"]
    switch.reply = Reply(500)
    for _ in range(3):
        assert a.get("/trials/x")[0] == 500
    status, headers, _ = a.get("/trials/x")
    assert status == 503
    time.sleep(int(headers["Retry-After"]))
    switch.reply = Reply(200, body=b"back", delay=1.5)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda instance: instance.get("/trials/x"), (a, b) * 8))
    assert switch.count == 3 + 2
    assert sorted(status for status, _, _ in answers) == [200, 200] + [503] * 14
    assert all(refused(answer) for answer in answers if answer[0] == 503)
    # The successful trial closed it for both.
    switch.reply = Reply(200, body=b"ok")
    deadline = time.monotonic() + 1.5
    while b.get("/trials/x")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert a.get("/trials/x")[0] == 200


def test_failure_counts_survive_an_instance_starting(cluster, upstreams):
    a, b, shared, folder = cluster
    switch, _ = upstreams["restart"]
    switch.reply = Reply(500)
    for _ in range(2):
        assert a.get("/restart/x")[0] == 500
    (folder / "c").mkdir()
    with Ambassador(folder / "c", shared) as c:
        assert c.get("/restart/x")[0] == 500  # the third consecutive failure, counted on top
        assert refused(c.get("/restart/x"))
    deadline = time.monotonic() + 1.5
    while not refused(a.get("/restart/x")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert switch.count <= 4  # a may have sent one before it saw the breaker open


def test_redis_going_down_fails_no_request(tmp_path):
    switch = Switch()
    with FakeUpstream(switch) as server, RedisServer(tmp_path) as redis:
        shared = shared_profile(redis.url, {"partner": server})
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with Ambassador(tmp_path / "a", shared) as a, Ambassador(tmp_path / "b", shared) as b:
            for instance in (a, b):
                assert instance.get("/partner/x")[0] == 200
            redis.kill()
            # Healthy traffic asks Redis only now and then: keep it coming until each instance
            # has noticed; not one request may fail meanwhile.
            deadline = time.monotonic() + 15
            for instance in (a, b):
                while "partner: shared breaker state unreachable" not in instance.output:
                    assert instance.get("/partner/x")[0] == 200
                    assert time.monotonic() < deadline, instance.output
                    time.sleep(0.1)
                assert instance.output.count("shared breaker state unreachable") == 1
            # Each instance now has its own breaker: failures on a open a's only.
            switch.reply = Reply(500)
            for _ in range(3):
                assert a.get("/partner/x")[0] == 500
            assert refused(a.get("/partner/x"))
            assert a.status()["upstreams"]["partner"]["breaker"] == "open"
            assert b.status()["upstreams"]["partner"]["breaker"] == "closed"
            # Redis back (empty): the shared state, closed, is used again.
            switch.reply = Reply(200)
            redis.start()
            deadline = time.monotonic() + 10
            while b.get("/partner/x")[0] != 200 or "reachable again" not in b.output:
                assert time.monotonic() < deadline
                time.sleep(0.2)
