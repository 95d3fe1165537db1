"""Two real ambassadors sharing a breaker and a cache through a TLS Redis with a password
(`rediss://`) and through a real three-node Redis Cluster (`redis+cluster://`)."""

import json
import time

import pytest
import redis
import redis.cluster

from addons.breaker import SHARED_RETRY
from harness import Ambassador, FakeUpstream, Received, Reply, Switch, run_sh
from profiles import Profile, profile, upstream
from redis_server import RedisCluster, TlsRedisServer

PASSWORD = "pw-9f3c1e77d2"


def cached(req: Received) -> Reply:
    max_age = 1 if req.path.startswith("/short") else 300
    return Reply(200, [("Cache-Control", f"max-age={max_age}")], f"body of {req.path}".encode().ljust(2000, b"."))


def shared_profile(state: str, flaky: FakeUpstream, stored: FakeUpstream) -> Profile:
    return profile(
        upstream("flaky", flaky.url, path_prefix="/flaky", breaker={"fail_max": 2, "reset_timeout": "60s"}),
        upstream("stored", stored.url, path_prefix="/s", cache={"store": "redis", "max_bytes": "1MB"}),
        state=state,
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    with TlsRedisServer(tmp_path_factory.mktemp("rediss"), password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module", params=["rediss", "cluster"])
def shared(request, tmp_path_factory):
    """(a client of the shared Redis, two ambassadors sharing it, the flaky upstream's switch, the cached origin)."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "rediss":
        server = request.getfixturevalue("tls_server")
        client = redis.Redis.from_url(server.url)
    else:
        server = request.getfixturevalue("cluster_server")
        client = redis.cluster.RedisCluster.from_url(server.url.replace("redis+cluster", "redis"))
    switch = Switch()
    with FakeUpstream(switch) as flaky, FakeUpstream(cached) as stored:
        shared = shared_profile(server.url, flaky, stored)
        (folder / "a").mkdir()
        (folder / "b").mkdir()
        with Ambassador(folder / "a", shared) as a, Ambassador(folder / "b", shared) as b:
            yield client, (a, b), switch, stored
    client.close()


@pytest.fixture(scope="module")
def cluster_server(tmp_path_factory):
    with RedisCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def refused(answer) -> bool:
    status, _, body = answer
    return status == 503 and json.loads(body)["reason"] == "circuit_open"


def test_an_open_breaker_is_seen_by_both_instances(shared):
    _, (a, b), switch, _ = shared
    assert b.get("/flaky/x")[0] == 200
    switch.reply = Reply(500)
    for _ in range(2):
        assert a.get("/flaky/x")[0] == 500
    tripped = time.monotonic()
    assert refused(a.get("/flaky/x"))
    while not refused(b.get("/flaky/x")):
        assert time.monotonic() - tripped < 1.5, "instance b still contacts the upstream"
        time.sleep(0.05)
    assert b.status()["upstreams"]["flaky"]["breaker"] == "open"
    contacts = switch.count
    assert refused(b.get("/flaky/x")) and switch.count == contacts


def test_what_one_instance_cached_the_other_serves(shared):
    _, (a, b), _, origin = shared
    assert a.get("/s/one")[1]["X-Cache"] == "MISS"
    status, headers, body = b.get("/s/one")
    assert (status, headers["X-Cache"], body[:12]) == (200, "HIT", b"body of /one")
    assert b.request("PUT", "/s/one", body=b"x")[0] == 200  # invalidated for both
    assert a.get("/s/one")[1]["X-Cache"] == "MISS"
    assert sum(1 for r in origin.received if r.path == "/one" and r.method == "GET") == 2


def test_the_byte_account_equals_the_stored_bytes_once_entries_expire(shared):
    client, (a, b), _, origin = shared
    base = f"ambassador:{{stored}}:cache:stored {origin.url}:"
    for instance, path in ((a, "/s/short-1"), (b, "/s/short-2"), (a, "/s/long")):
        assert instance.get(path)[1]["X-Cache"] == "MISS"
    # Both short entries expire after a second; the count the status asks for drops them.
    deadline = time.monotonic() + 10
    while b"stored " + origin.url.encode() + b"/short-1" in client.hkeys(base + "blobs") or \
            b"stored " + origin.url.encode() + b"/short-2" in client.hkeys(base + "blobs"):
        assert time.monotonic() < deadline, "expired entries are still stored"
        a.status()
        time.sleep(0.1)
    kept = client.hkeys(base + "blobs")
    assert kept and all(b"/short" not in k for k in kept)
    stored_bytes = sum(client.hstrlen(base + "blobs", k) for k in kept)
    assert int(client.get(base + "bytes")) == stored_bytes
    assert set(client.zrange(base + "used", 0, -1)) == set(client.zrange(base + "expires", 0, -1)) == set(kept)
    assert b.get("/s/long")[1]["X-Cache"] == "HIT"
    assert b.get("/s/short-1")[1]["X-Cache"] == "MISS"


def test_a_password_in_the_url_never_shows(tls_server, tmp_path):
    url = tls_server.url
    flaky_switch = Switch()
    with FakeUpstream(flaky_switch) as flaky, FakeUpstream(cached) as origin:
        (tmp_path / "a").mkdir()
        with Ambassador(tmp_path / "a", shared_profile(url, flaky, origin)) as a:
            a.get("/s/secret")
            assert a.get("/s/secret")[1]["X-Cache"] == "HIT"  # the password let it in
            assert PASSWORD not in json.dumps(a.status()) + a.output
        # A wrong password: the store and the breaker fail and say so, without the URL's password.
        wrong = url.replace(PASSWORD, "wrong-" + PASSWORD)
        (tmp_path / "c").mkdir()
        with Ambassador(tmp_path / "c", shared_profile(wrong, flaky, origin)) as c:
            assert c.get("/s/secret")[1]["X-Cache"] == "MISS"
            assert c.get("/flaky/x")[0] == 200
            deadline = time.monotonic() + 10
            while "cache store failed" not in c.output or "shared breaker state unreachable" not in c.output:
                assert time.monotonic() < deadline, c.output
                c.get("/flaky/x")
                time.sleep(0.05)
            assert PASSWORD not in json.dumps(c.status()) + c.output
    # A profile whose state is not valid names it with the password hidden.
    shared_profile(url.replace("rediss://", "rediss+nope://"), origin, origin).write(tmp_path / "bad.yaml")
    checked = run_sh("check", str(tmp_path / "bad.yaml"))
    said = checked.stdout + checked.stderr
    assert checked.returncode != 0 and "state:" in said and ":***@" in said and PASSWORD not in said


def test_a_cluster_going_down_fails_no_request(tmp_path):
    with RedisCluster(tmp_path) as cluster, FakeUpstream(Switch()) as flaky, FakeUpstream(cached) as origin:
        (tmp_path / "a").mkdir()
        with Ambassador(tmp_path / "a", shared_profile(cluster.url, flaky, origin)) as a:
            assert a.get("/flaky/x")[0] == 200 and a.get("/s/down")[1]["X-Cache"] == "MISS"
            assert a.get("/s/down")[1]["X-Cache"] == "HIT"
            cluster.kill()
            deadline = time.monotonic() + 15
            while "shared breaker state unreachable" not in a.output or "cache store failed" not in a.output:
                assert a.get("/flaky/x")[0] == 200
                assert a.get("/s/down")[:1] == (200,)
                assert time.monotonic() < deadline, a.output
                time.sleep(0.1)
            # Redis is asked again after a pause, when a cluster client fails differently.
            until = time.monotonic() + SHARED_RETRY + 1
            while time.monotonic() < until:
                assert a.get("/flaky/x")[0] == 200
                assert a.get("/s/down")[:1] == (200,)
                time.sleep(0.05)
            assert "Traceback" not in a.output
