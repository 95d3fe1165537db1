"""`limit` through the real ambassador: pacing instead of refusing, the queue and its bounds,
clients going away, the upstream's own limits, the retry budget, status and metrics."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import Ambassador, FakeUpstream, Reply
from profiles import profile, upstream


class Paced:
    """An upstream handler noting when each request arrived; its answer is switchable."""

    def __init__(self, reply: Reply = Reply(200, body=b"ok")):
        self.reply = reply
        self.arrivals: list[float] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)

    def __call__(self, req) -> Reply:
        with self.lock:
            self.arrivals.append(time.monotonic())
            self.paths.append(req.path)
            self.arrived.notify_all()
            reply = self.reply
        return reply(req) if callable(reply) else reply

    def wait_for(self, count: int, timeout: float = 10) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.arrivals) >= count, timeout), self.paths


def most_in_one_second(arrivals: list[float]) -> int:
    """The most arrivals in any one-second window."""
    return max(sum(1 for t in arrivals if start <= t < start + 1) for start in arrivals)


NAMES = {  # name: its sections
    "rate": {"limit": {"rate": "20/s", "burst": 2}},
    "tight": {"limit": {"rate": "1/m", "queue": 5, "max_wait": "2s"}},
    "slots": {"limit": {"concurrency": 1, "queue": 1, "max_wait": "10s"}},
    "follow": {"limit": {"max_wait": "10s"}},
    "quota": {"limit": {"quota": "2/h", "max_wait": "2s"}},
    "budget": {"retry": {"attempts": 3, "backoff": "1ms", "budget": "10%"}},
}


@pytest.fixture(scope="module")
def upstreams():
    handlers = {name: Paced() for name in NAMES}
    servers = {name: FakeUpstream(handlers[name]).__enter__() for name in NAMES}
    yield {name: (handlers[name], servers[name]) for name in NAMES}
    for server in servers.values():
        server.__exit__()


@pytest.fixture(scope="module")
def amb(upstreams, tmp_path_factory):
    paced = profile(
        *(upstream(name, upstreams[name][1].url, path_prefix=f"/{name}", timeout="5s", **sections) for name, sections in NAMES.items())
    )
    with Ambassador(tmp_path_factory.mktemp("limit"), paced) as amb:
        yield amb


def test_requests_over_the_rate_wait_instead_of_failing(amb, upstreams):
    handler, _ = upstreams["rate"]
    started = time.monotonic()
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda i: amb.get(f"/rate/{i}"), range(30)))
    assert [status for status, _, _ in answers] == [200] * 30
    assert len(handler.arrivals) == 30
    assert most_in_one_second(handler.arrivals) <= 20 + 2 + 2  # rate + burst, and a little for timing
    # 28 after the burst at 20 a second: about 1.4 s for the last one
    assert time.monotonic() - started >= 1.2


def test_a_wait_longer_than_max_wait_is_refused_at_once_with_an_honest_retry_after(amb, upstreams):
    handler, _ = upstreams["tight"]
    assert amb.get("/tight/first")[0] == 200
    asked = time.monotonic()
    status, headers, body = amb.get("/tight/second")
    assert status == 429
    assert json.loads(body) == {
        "error": json.loads(body)["error"], "reason": "rate_limited", "upstream": "tight",
    }
    assert "max_wait" in json.loads(body)["error"]
    assert 55 <= int(headers["Retry-After"]) <= 60  # the next token of 1/m
    assert time.monotonic() - asked < 1.5  # refused without waiting for max_wait
    assert handler.paths == ["/first"]
    metrics = amb.get("/_ambassador/metrics")[2].decode()
    assert 'ambassador_limit_refused_total{upstream="tight"} 1.0' in metrics


def test_a_wait_longer_than_the_requests_timeout_is_refused(amb, upstreams):
    handler, _ = upstreams["rate"]
    # 40 at once at 20/s: the last ones would wait ~2 s, past a 1 s timeout.
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda i: amb.get(f"/rate/t{i}", {"X-Ambassador-Timeout": "1s"}), range(40)))
    refused = [json.loads(body) for status, _, body in answers if status == 429]
    assert refused and all(r["reason"] == "rate_limited" and "timeout" in r["error"] for r in refused)
    # One whose turn came just before its time was up may still run out of it on the way.
    others = [json.loads(body)["reason"] for status, _, body in answers if status not in (200, 429)]
    assert set(others) <= {"timeout"}, others
    assert sum(status == 200 for status, _, _ in answers) >= 20


def hold_connection(amb, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", amb.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{amb.port}\r\n\r\n".encode())
    return sock


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_concurrency_queue_full_and_a_client_leaving_the_queue(amb, upstreams):
    handler, _ = upstreams["slots"]
    release = threading.Event()
    handler.reply = lambda req: (release.wait(10), Reply(200, body=b"ok"))[1]
    waiting = lambda: amb.status()["upstreams"]["slots"]["limit"]["waiting"]  # noqa: E731
    first = hold_connection(amb, "/slots/first")
    handler.wait_for(1)
    leaver = hold_connection(amb, "/slots/leaver")
    wait_until(lambda: waiting() == 1)
    # queue: 1 is full: refused at once, no upstream contact
    status, headers, body = amb.get("/slots/full")
    assert status == 429 and json.loads(body)["reason"] == "rate_limited" and int(headers["Retry-After"]) >= 1
    leaver.close()  # the client goes away while waiting
    wait_until(lambda: waiting() == 0)
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(amb.get, "/slots/later")
        wait_until(lambda: waiting() == 1)
        release.set()
        assert later.result()[0] == 200
    assert first.recv(12).startswith(b"HTTP/1.1 200")
    first.close()
    assert handler.paths == ["/first", "/later"]  # the one that left was never sent


def test_follow_upstream_pauses_sending_until_its_retry_after(amb, upstreams):
    handler, _ = upstreams["follow"]
    handler.reply = Reply(429, [("Retry-After", "2")], b"slow down")
    status, _, _ = amb.get("/follow/refused")
    assert status == 429  # the upstream's own answer, passed on
    paused_at = handler.arrivals[0]
    handler.reply = Reply(200, body=b"ok")
    assert amb.status()["upstreams"]["follow"]["limit"]["paused_until"] is not None
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda i: amb.get(f"/follow/{i}"), range(3)))
    assert [status for status, _, _ in answers] == [200] * 3
    assert min(handler.arrivals[1:]) - paused_at >= 1.8  # none sent while paused
    assert amb.status()["upstreams"]["follow"]["limit"]["paused_until"] is None


def test_follow_upstream_obeys_ratelimit_remaining_zero_with_a_unix_reset(amb, upstreams):
    handler, _ = upstreams["follow"]
    count = len(handler.arrivals)
    handler.reply = lambda req: Reply(200, [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", str(int(time.time()) + 2))], b"last")
    assert amb.get("/follow/last")[0] == 200
    first = handler.arrivals[-1]
    handler.reply = Reply(200, body=b"ok")
    assert amb.get("/follow/after")[0] == 200
    assert len(handler.arrivals) == count + 2
    assert handler.arrivals[-1] - first >= 0.8  # waited for the next whole second at least


def test_retries_stay_within_their_budget(amb, upstreams):
    handler, _ = upstreams["budget"]
    handler.reply = Reply(503, body=b"down")
    answers = [amb.get(f"/budget/{i}") for i in range(20)]
    assert all(status == 503 for status, _, _ in answers)
    # 20 requests of 3 tries would be 60; 10% of 20 plus one a second is far fewer
    retries = len(handler.arrivals) - 20
    assert 1 <= retries <= 2 + 2 * (1 + int(time.monotonic() - handler.arrivals[0]))


def test_status_and_metrics_show_the_limit(amb, upstreams):
    limit = amb.status()["upstreams"]["rate"]["limit"]
    assert limit["waiting"] == 0 and limit["rate"]["per_second"] == 20 and limit["rate"]["burst"] == 2
    metrics = amb.get("/_ambassador/metrics")[2].decode()
    assert 'ambassador_limit_waiting{upstream="rate"} 0.0' in metrics
    count = next(line for line in metrics.splitlines() if line.startswith('ambassador_limit_wait_seconds_count{upstream="rate"}'))
    assert float(count.split()[-1]) >= 30


def test_a_spent_quota_refuses_until_the_next_calendar_window(amb, upstreams):
    handler, _ = upstreams["quota"]
    assert [amb.get(f"/quota/{i}")[0] for i in range(2)] == [200, 200]
    status, headers, body = amb.get("/quota/third")
    assert status == 429 and json.loads(body)["reason"] == "rate_limited"
    now = time.time()
    next_hour = (int(now) // 3600 + 1) * 3600
    assert abs(int(headers["Retry-After"]) - (next_hour - now)) <= 2  # the next full hour, UTC
    assert handler.paths == ["/0", "/1"]
    quota = amb.status()["upstreams"]["quota"]["limit"]["quota"]
    assert quota["limit"] == 2 and quota["used"] == 2 and quota["resets_at"].endswith(":00:00.000Z")
