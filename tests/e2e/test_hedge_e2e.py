"""Hedging through the real ambassador: a slow first copy loses to a second one sent `after`
later, and is cancelled with its connection closed (never pooled with half an answer)."""

import json
import threading
import time

from mitmproxy.io import FlowReader

from harness import Ambassador, FakeUpstream, KeepAliveRawUpstream, Received, Reply
from profiles import Profile, profile, upstream

AFTER = 0.2  # hedge.after of the profiles, seconds
FULL = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Copy: %d\r\n\r\n0123456789"


def hedged(url: str, hedge: dict | None = None, **sections) -> Profile:
    """The `slow` upstream, hedged after AFTER unless `hedge` says otherwise."""
    hedge = hedge or {"after": AFTER}
    return profile(upstream("slow", f"{url}/api", path_prefix="/slow", timeout="10s", hedge=hedge, **sections))


class FirstCopyStalls:
    """Answers each request by its number: the first gets `first` (bytes) and then nothing
    more, the others a whole answer naming their number."""

    def __init__(self, first: bytes):
        self.first = first
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, req: Received) -> bytes:
        with self.lock:
            self.count += 1
            number = self.count
        return self.first if number == 1 else FULL % number


def test_second_copy_wins_and_the_first_is_cancelled_before_its_answer(tmp_path):
    upstream = KeepAliveRawUpstream(FirstCopyStalls(b""))
    try:
        with Ambassador(tmp_path, hedged(upstream.url)) as amb:
            started = time.monotonic()
            status, headers, body = amb.get("/slow/x")
            took = time.monotonic() - started
            assert (status, body, headers["X-Copy"]) == (200, b"0123456789", "2")
            assert headers["X-Ambassador-Attempts"] == "2"
            assert AFTER <= took < 5
            assert upstream.closed[0].wait(5), "the losing copy's connection stayed open"
            assert [r.path for r in upstream.received] == ["/api/x", "/api/x"]
            hedge = amb.status()["upstreams"]["slow"]["hedge"]
            assert hedge == {"sent": 1, "won": 1}
            _, _, metrics = amb.get("/_ambassador/metrics")
            assert b'ambassador_hedges_total{outcome="sent",upstream="slow"} 1.0' in metrics
            assert b'ambassador_hedges_total{outcome="won",upstream="slow"} 1.0' in metrics
    finally:
        upstream.close()


def test_a_copy_cancelled_halfway_through_its_body_is_closed_not_pooled(tmp_path):
    half = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Copy: 1\r\n\r\n01234"
    upstream = KeepAliveRawUpstream(FirstCopyStalls(half))
    try:
        with Ambassador(tmp_path, hedged(upstream.url)) as amb:
            status, headers, body = amb.get("/slow/x")
            assert (status, body, headers["X-Copy"]) == (200, b"0123456789", "2")
            assert upstream.closed[0].wait(5), "the half-read connection stayed open"
            # Had it gone back to the pool, its last five body bytes would start this answer.
            status, headers, body = amb.get("/slow/y")
            assert (status, body) == (200, b"0123456789")
            assert headers["X-Copy"] == "3"
    finally:
        upstream.close()


def test_a_fast_answer_sends_no_copy(tmp_path):
    with FakeUpstream() as up, Ambassador(tmp_path, hedged(up.url)) as amb:
        status, headers, _ = amb.get("/slow/x")
        assert status == 200
        assert "X-Ambassador-Attempts" not in headers
        assert len(up.received) == 1
        assert amb.status()["upstreams"]["slow"]["hedge"] == {"sent": 0, "won": 0}


def test_post_is_never_hedged(tmp_path):
    with FakeUpstream(lambda req: Reply(200, body=b"done", delay=AFTER * 3)) as up, Ambassador(tmp_path, hedged(up.url)) as amb:
        status, headers, body = amb.request("POST", "/slow/orders", {"Content-Type": "text/plain"}, b"one order")
        assert (status, body) == (200, b"done")
        assert "X-Ambassador-Attempts" not in headers
        assert [r.method for r in up.received] == ["POST"]


def numbered(replies):
    """A handler giving the n-th request `replies[n - 1]` (the last one to all after it)."""
    lock, count = threading.Lock(), [0]

    def handler(req: Received) -> Reply:
        with lock:
            count[0] += 1
            return replies[min(count[0], len(replies)) - 1]

    return handler


def test_up_to_max_copies_each_after_apart(tmp_path):
    replies = [Reply(200, body=b"late", delay=3), Reply(200, body=b"late", delay=3), Reply(200, body=b"third")]
    with FakeUpstream(numbered(replies)) as up, Ambassador(tmp_path, hedged(up.url, {"after": "150ms", "max": 2})) as amb:
        started = time.monotonic()
        status, headers, body = amb.get("/slow/x")
        took = time.monotonic() - started
        assert (status, body) == (200, b"third")
        assert headers["X-Ambassador-Attempts"] == "3"
        assert 0.3 <= took < 2.5  # the third copy went out two `after`s in, not later
        assert len(up.received) == 3
        assert amb.status()["upstreams"]["slow"]["hedge"] == {"sent": 2, "won": 1}


def test_failed_copies_end_the_try_and_the_retry_counts_every_copy(tmp_path):
    # Try 1: the first copy answers 503 late, the hedge copy 503 at once: both failed, so the
    # try fails; try 2 is answered at once. Three copies went out.
    replies = [Reply(503, body=b"busy", delay=0.4), Reply(503, body=b"busy"), Reply(200, body=b"fine")]
    retry = {"attempts": 2, "backoff": "10ms"}
    with FakeUpstream(numbered(replies)) as up, Ambassador(tmp_path, hedged(up.url, {"after": "100ms"}, retry=retry)) as amb:
        status, headers, body = amb.get("/slow/x")
        assert (status, body) == (200, b"fine")
        assert headers["X-Ambassador-Attempts"] == "3"
        assert len(up.received) == 3
        assert amb.status()["upstreams"]["slow"]["hedge"] == {"sent": 1, "won": 0}


def test_each_copy_is_a_flow_of_its_own_and_the_loser_is_reported_cancelled(tmp_path):
    upstream = KeepAliveRawUpstream(FirstCopyStalls(b""))
    flow_file = tmp_path / "hedged.flows"
    try:
        with Ambassador(tmp_path, hedged(upstream.url), command=("record", str(flow_file))) as amb:
            assert amb.get("/slow/x")[0] == 200
            assert upstream.closed[0].wait(5)
    finally:
        upstream.close()
    with open(flow_file, "rb") as f:
        flows = list(FlowReader(f).stream())
    [client] = [f for f in flows if "exchange" not in f.metadata.get("ambassador", {})]
    copies = [f for f in flows if f.id in client.metadata["ambassador"]["exchanges"]]
    assert len(copies) == 2
    assert sorted((f.response is not None, f.error.msg if f.error else None) for f in copies) == [
        (False, "cancelled: its answer was no longer needed"),
        (True, None),
    ]
    assert "hedged: 1 extra copy" in client.comment
    assert "attempts 2" in client.comment
    assert json.loads(json.dumps(client.metadata["ambassador"]))["hedged"] == 1
