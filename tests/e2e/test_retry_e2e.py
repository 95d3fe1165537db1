"""Retries through the real ambassador against flaky, hanging and resetting upstreams."""

import json
import threading
import time

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply
from profiles import profile, upstream


class Scripted:
    """Upstream handler: each test scripts the replies for its own path, then 200 "ok"."""

    def __init__(self):
        self.scripts: dict[str, list[Reply]] = {}
        self.seen: dict[str, list[Received]] = {}
        self.lock = threading.Lock()

    def script(self, key: str, *replies: Reply) -> str:
        with self.lock:
            self.scripts[key] = list(replies)
            self.seen[key] = []
        return key

    def __call__(self, req: Received) -> Reply:
        key = req.path.split("?")[0].rsplit("/", 1)[-1]
        with self.lock:
            self.seen.setdefault(key, []).append(req)
            replies = self.scripts.get(key)
            return replies.pop(0) if replies else Reply(200, body=b"ok")


@pytest.fixture(scope="module")
def server():
    handler = Scripted()
    with FakeUpstream(handler) as up:
        up.scripted = handler
        yield up


@pytest.fixture(scope="module")
def amb(server, tmp_path_factory):
    retrying = profile(
        upstream(
            "partner", f"{server.url}/api", path_prefix="/partner", timeout="3s",
            retry={"attempts": 3, "backoff": "50ms", "try_timeout": "1s"},
        ),
        upstream("patient", f"{server.url}/api", path_prefix="/patient", timeout="3s", retry={"attempts": 3, "backoff": "50ms"}),
        upstream(
            "guarded", f"{server.url}/api", path_prefix="/guarded", timeout="3s", retry={"attempts": 3, "backoff": "50ms"},
            breaker={"fail_max": 2, "reset_timeout": "30s"},
        ),
        upstream(
            "writer", f"{server.url}/api", path_prefix="/writer", timeout="3s",
            retry={"attempts": 3, "backoff": "50ms", "methods": ["POST"]},
        ),
        upstream("plain", f"{server.url}/api", path_prefix="/plain"),
    )
    with Ambassador(tmp_path_factory.mktemp("retry"), retrying) as a:
        yield a


def test_a_flaky_upstream_looks_reliable(amb, server):
    key = server.scripted.script("flaky", Reply(503), Reply(502), Reply(200, body=b"finally"))
    status, headers, body = amb.get(f"/partner/{key}")
    assert (status, body) == (200, b"finally")
    assert headers["X-Ambassador-Attempts"] == "3"
    assert len(server.scripted.seen[key]) == 3


def test_connection_resets_are_retried_and_listed_methods_too(amb, server):
    # POST, listed in this upstream's methods: aiohttp itself never resends a POST, so every
    # try seen here is the retry stage's.
    key = server.scripted.script("reset", Reply(close=True), Reply(close=True), Reply(200, body=b"after reset"))
    status, headers, body = amb.request("POST", f"/writer/{key}", body=b"{}")
    assert (status, body, headers["X-Ambassador-Attempts"]) == (200, b"after reset", "3")
    assert [r.body for r in server.scripted.seen[key]] == [b"{}"] * 3


def test_a_hanging_try_is_retried_within_the_timeout(amb, server):
    key = server.scripted.script("hang", Reply(delay=5, body=b"too late"), Reply(200, body=b"quick"))
    started = time.monotonic()
    status, headers, body = amb.get(f"/partner/{key}")
    elapsed = time.monotonic() - started
    assert (status, body, headers["X-Ambassador-Attempts"]) == (200, b"quick", "2")
    assert elapsed < 3  # the first try had its try_timeout (1s) of the 3s timeout, not all of it


def test_a_slow_but_healthy_upstream_is_not_cut_short(amb, server):
    key = server.scripted.script("slow-ok", Reply(200, body=b"worth the wait", delay=1.4))
    status, headers, body = amb.get(f"/patient/{key}")
    assert (status, body, headers["X-Ambassador-Attempts"]) == (200, b"worth the wait", "1")
    assert len(server.scripted.seen[key]) == 1


def test_the_whole_exchange_never_exceeds_the_timeout(amb, server):
    key = server.scripted.script("slow", *[Reply(delay=5)] * 3)
    started = time.monotonic()
    status, headers, body = amb.get(f"/partner/{key}")
    elapsed = time.monotonic() - started
    assert status == 504 and json.loads(body)["reason"] == "timeout"
    assert 2.9 < elapsed < 4.5
    assert headers["X-Ambassador-Attempts"] == "3"


def test_non_idempotent_methods_are_not_retried(amb, server):
    key = server.scripted.script("post", Reply(503), Reply(200))
    status, headers, _ = amb.request("POST", f"/partner/{key}", body=b"{}")
    assert status == 503 and headers["X-Ambassador-Attempts"] == "1"
    assert len(server.scripted.seen[key]) == 1


def test_client_overrides(amb, server):
    key = server.scripted.script("override0", Reply(503), Reply(200))
    status, headers, _ = amb.get(f"/partner/{key}", {"X-Ambassador-Retries": "0"})
    assert status == 503 and headers["X-Ambassador-Attempts"] == "1"
    received = server.scripted.seen[key][0]
    assert received.header("X-Ambassador-Retries") is None

    key = server.scripted.script("override1", Reply(503), Reply(503), Reply(200))
    status, headers, _ = amb.get(f"/partner/{key}", {"X-Ambassador-Retries": "1"})
    assert status == 503 and headers["X-Ambassador-Attempts"] == "2"

    status, _, body = amb.get("/partner/whatever", {"X-Ambassador-Retries": "many"})
    assert status == 400 and json.loads(body)["reason"] == "bad_request"

    key = server.scripted.script("shorter", *[Reply(delay=5)] * 3)
    started = time.monotonic()
    status, _, _ = amb.get(f"/partner/{key}", {"X-Ambassador-Timeout": "1s"})
    assert status == 504 and time.monotonic() - started < 2


def test_retry_after_is_honoured_within_the_timeout(amb, server):
    key = server.scripted.script("busy", Reply(503, [("Retry-After", "1")]), Reply(200, body=b"ready"))
    started = time.monotonic()
    status, _, body = amb.get(f"/partner/{key}")
    assert (status, body) == (200, b"ready") and time.monotonic() - started >= 1.0

    key = server.scripted.script("too-busy", Reply(503, [("Retry-After", "60")]), Reply(200))
    started = time.monotonic()
    status, headers, _ = amb.get(f"/partner/{key}")
    assert status == 503 and headers["Retry-After"] == "60" and time.monotonic() - started < 2
    assert len(server.scripted.seen[key]) == 1

    key = server.scripted.script("limited", Reply(429, [("Retry-After", "1")]), Reply(200))
    status, _, _ = amb.get(f"/partner/{key}")  # 429 is not among the default retry statuses
    assert status == 429 and len(server.scripted.seen[key]) == 1


def test_a_retry_the_breaker_refuses_is_not_sent(amb, server):
    key = server.scripted.script("tripping", Reply(503), Reply(503), Reply(200))
    status, headers, _ = amb.get(f"/guarded/{key}")
    assert status == 503 and headers["X-Ambassador-Attempts"] == "2"
    assert len(server.scripted.seen[key]) == 2  # the third try met the open breaker
    status, headers, body = amb.get(f"/guarded/{key}")
    assert status == 503 and json.loads(body)["reason"] == "circuit_open"
    assert len(server.scripted.seen[key]) == 2


def test_upstreams_without_retry_are_tried_once(amb, server):
    key = server.scripted.script("once", Reply(503), Reply(200))
    status, headers, _ = amb.get(f"/plain/{key}")
    assert status == 503 and "X-Ambassador-Attempts" not in headers
