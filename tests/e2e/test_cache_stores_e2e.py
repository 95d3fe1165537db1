"""The persistent (sqlite) and shared (redis) cache stores through the real ambassador."""

import concurrent.futures
import subprocess
import sys
import time

import redis as redis_client

from harness import ROOT, Ambassador, FakeUpstream, Received, Reply
from profiles import Profile, profile, upstream
from redis_server import RedisServer


def cacheable(req: Received) -> Reply:
    if req.method != "GET":
        return Reply(204)
    return Reply(200, [("Cache-Control", "max-age=300"), ("ETag", '"e"')], f"body of {req.path}".encode())


def count(upstream: FakeUpstream, path: str) -> int:
    return sum(1 for r in upstream.received if r.path == path and r.method == "GET")


def stored_profile(url: str, store: str, state: str | None = None, max_bytes: str = "1MB") -> Profile:
    return profile(upstream("stored", url, path_prefix="/s", cache={"store": store, "max_bytes": max_bytes}), state=state)


# --- sqlite ---------------------------------------------------------------------------------------


def test_sqlite_store_survives_a_restart(tmp_path):
    with FakeUpstream(cacheable) as origin:
        caching = stored_profile(origin.url, "sqlite:cache/entries.db")
        with Ambassador(tmp_path, caching) as amb:
            assert amb.get("/s/a")[1]["X-Cache"] == "MISS"
            assert amb.get("/s/a")[1]["X-Cache"] == "HIT"
        assert (tmp_path / "cache" / "entries.db").is_file()
        with Ambassador(tmp_path, caching) as amb:
            status, headers, body = amb.get("/s/a")
            assert (status, headers["X-Cache"], body) == (200, "HIT", b"body of /a")
            assert amb.status()["upstreams"]["stored"]["cache"]["entries"] == 1
        assert count(origin, "/a") == 1


def test_sqlite_store_under_concurrent_requests(tmp_path):
    with FakeUpstream(cacheable) as origin, Ambassador(tmp_path, stored_profile(origin.url, "sqlite:c.db")) as amb:
        paths = [f"/s/k{i % 10}" for i in range(60)]
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(amb.get, paths))
        assert all(s == 200 and b == f"body of {p[2:]}".encode() for p, (s, _, b) in zip(paths, answers))
        assert {h["X-Cache"] for _, h, _ in answers} <= {"HIT", "MISS"}
        assert all(count(origin, f"/k{i}") == 1 for i in range(10))  # coalesced, then stored


def test_sqlite_file_shared_by_two_processes(tmp_path):
    with FakeUpstream(cacheable) as origin:
        caching = stored_profile(origin.url, "sqlite:shared.db")
        with Ambassador(tmp_path, caching) as a, Ambassador(tmp_path, caching) as b:
            paths = [f"/s/p{i % 8}" for i in range(48)]
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda ip: (a if ip[0] % 2 else b).get(ip[1]), enumerate(paths)))
            assert all(s == 200 and body == f"body of {p[2:]}".encode() for p, (s, _, body) in zip(paths, answers))
            fetched = [count(origin, f"/p{i}") for i in range(8)]
            assert all(n <= 2 for n in fetched), (fetched, a.output[-2000:], b.output[-2000:])  # at most once per process
            assert b.get("/s/p0")[1]["X-Cache"] == "HIT" and a.get("/s/p0")[1]["X-Cache"] == "HIT"
            a.request("PUT", "/s/p0", body=b"x")  # invalidated for both
            assert b.get("/s/p0")[1]["X-Cache"] == "MISS"
        assert "Traceback" not in a.output + b.output


OPEN_AT_ONCE = """
import asyncio, sys, time
from pathlib import Path
from addons.cache.stores import SqliteStore

async def use(store):
    try:
        await store.put("k", [], 60)
        await store.get("k")
        print("ok")
    except Exception as e:
        print(f"{type(e).__name__}: {e}")
    finally:
        await store.close()

start = float(sys.argv[2])
while time.time() < start:
    pass
asyncio.run(use(SqliteStore(Path(sys.argv[1]), 1 << 20)))
"""


def test_processes_opening_a_new_sqlite_file_at_once_both_get_it(tmp_path):
    """Switching a new file to WAL takes a lock SQLite does not wait for: without waiting for
    it ourselves, one of two processes starting together got "database is locked" (and its
    cache went to pass-through for a while)."""
    for trial in range(8):
        start = str(time.time() + 1.0)
        both = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(tmp_path / f"new{trial}.db"), start],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        assert [p.communicate(timeout=60)[0].strip() for p in both] == ["ok", "ok"], trial


# --- redis ----------------------------------------------------------------------------------------


def cache_keys(origin: FakeUpstream) -> dict[str, str]:
    """The `stored` upstream's cache keys in Redis by part: blobs, used, expires, bytes."""
    return {part: f"ambassador:{{stored}}:cache:stored {origin.url}:{part}" for part in ("blobs", "used", "expires", "bytes")}


def test_redis_store_is_shared_by_instances_and_expires(tmp_path, redis):
    with FakeUpstream(cacheable) as origin:
        caching = stored_profile(origin.url, "redis", redis.url)
        with Ambassador(tmp_path, caching) as a, Ambassador(tmp_path, caching) as b:
            assert a.get("/s/shared")[1]["X-Cache"] == "MISS"
            assert b.get("/s/shared")[1]["X-Cache"] == "HIT"
            assert count(origin, "/shared") == 1
            # Unsafe methods invalidate for every instance.
            assert b.request("PUT", "/s/shared", body=b"x")[1]["X-Cache"] == "BYPASS"
            assert a.get("/s/shared")[1]["X-Cache"] == "MISS"
            client = redis_client.Redis.from_url(redis.url)
            stored = cache_keys(origin)
            assert client.hlen(stored["blobs"]) == 1
            ttl = client.pttl(stored["expires"])
            assert 0 < ttl <= (300 + 86400) * 1000  # freshness plus the time a validator keeps it useful
            deadline = time.monotonic() + 10
            while a.status()["upstreams"]["stored"]["cache"]["entries"] != 1:
                assert time.monotonic() < deadline
                time.sleep(0.1)


def test_redis_entries_expire_in_redis(tmp_path, redis):
    def short(req):
        return Reply(200, [("Cache-Control", "max-age=1")], b"short-lived")

    with FakeUpstream(short) as origin, Ambassador(tmp_path, stored_profile(origin.url, "redis", redis.url)) as amb:
        amb.get("/s/short")
        client = redis_client.Redis.from_url(redis.url)
        stored = cache_keys(origin)
        entry = f"stored {origin.url}/short".encode()  # upstream name, then the URI
        assert client.hexists(stored["blobs"], entry)
        assert 0 < client.pttl(stored["blobs"]) <= 1000  # its keys go with their last entry
        deadline = time.monotonic() + 10
        while client.exists(*stored.values()):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_redis_down_degrades_to_pass_through_with_one_warning(tmp_path):
    with RedisServer(tmp_path) as redis, FakeUpstream(cacheable) as origin:
        with Ambassador(tmp_path, stored_profile(origin.url, "redis", redis.url)) as amb:
            amb.get("/s/x")
            assert amb.get("/s/x")[1]["X-Cache"] == "HIT"
            redis.kill()
            for _ in range(3):
                status, headers, body = amb.get("/s/x")
                assert (status, headers["X-Cache"], body) == (200, "MISS", b"body of /x")
            assert amb.output.count("cache store failed") == 1
            redis.start()
            deadline = time.monotonic() + 15
            while "cache store recovered" not in amb.output:  # tried again after a pause
                assert time.monotonic() < deadline, amb.output
                amb.get("/s/x")  # stores again once the store is tried
                time.sleep(0.2)
            assert amb.get("/s/x")[1]["X-Cache"] == "HIT"


def test_unusable_sqlite_file_degrades_to_pass_through_with_one_warning(tmp_path):
    (tmp_path / "not-a-folder").write_text("a file where the store's folder should be")
    with FakeUpstream(cacheable) as origin, Ambassador(tmp_path, stored_profile(origin.url, "sqlite:not-a-folder/cache.db")) as amb:
        for _ in range(3):
            status, headers, body = amb.get("/s/y")
            assert (status, headers["X-Cache"], body) == (200, "MISS", b"body of /y")
        assert amb.output.count("cache store failed") == 1
        assert count(origin, "/y") == 3


def test_redis_store_keeps_to_max_bytes_across_instances_evicting_the_least_recently_used(tmp_path, redis):
    def large(req):
        return Reply(200, [("Cache-Control", "max-age=300")], req.path.encode().ljust(10_000, b"."))

    client = redis_client.Redis.from_url(redis.url)
    client.flushall()
    with FakeUpstream(large) as origin:
        caching = stored_profile(origin.url, "redis", redis.url, max_bytes="64KB")
        with Ambassador(tmp_path, caching) as a, Ambassador(tmp_path, caching) as b:
            for i in range(12):
                (a if i % 2 else b).get(f"/s/big{i}")
                if i >= 1:
                    assert a.get("/s/big0")[1]["X-Cache"] == "HIT"  # used again and again: never the least recent
            blobs = cache_keys(origin)["blobs"]
            stored = {k.decode().rsplit("/", 1)[1]: client.hstrlen(blobs, k) for k in client.hkeys(blobs)}
            assert sum(stored.values()) <= 64 * 1024
            assert sum(stored.values()) == int(client.get(cache_keys(origin)["bytes"]))
            assert 4 <= len(stored) < 12 and "big0" in stored and "big11" in stored and "big1" not in stored
            assert b.get("/s/big1")[1]["X-Cache"] == "MISS"  # evicted, fetched again
            assert b.get("/s/big11")[1]["X-Cache"] == "HIT"
        assert count(origin, "/big1") == 2 and count(origin, "/big0") == 1
