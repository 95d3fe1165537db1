"""Faults through the real ambassador: every request ends with the
upstream's answer or the ambassador's JSON error within its timeout, and the ambassador keeps serving."""

import hashlib
import json
import socket
import time

import pytest

from harness import Ambassador, FakeUpstream, RawUpstream, Received, Reply, raw_exchange
from profiles import profile, upstream

BIG = 10 * 1024 * 1024


def reset_mid_body(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST


def truncated(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nonly this")


def malformed(conn):
    conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")


def hangs(conn):
    time.sleep(5)


BIG_BODY = bytes(range(256)) * (BIG // 256)


def origin(req: Received) -> Reply:
    if req.path == "/big":
        return Reply(200, [("Content-Type", "application/octet-stream")], BIG_BODY)
    if req.path == "/upload":
        return Reply.json({"sha256": hashlib.sha256(req.body).hexdigest(), "size": len(req.body)})
    if req.path == "/slow":
        return Reply.json({"slow": True}, delay=1.0)
    return Reply.json({"ok": True})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    raws = {name: RawUpstream(script) for name, script in
            {"reset": reset_mid_body, "truncated": truncated, "malformed": malformed, "hangs": hangs}.items()}
    with FakeUpstream(origin) as good:
        faulty = [upstream(name, raw.url, path_prefix=f"/{name}", timeout="1500ms") for name, raw in raws.items()]
        routes = profile(*faulty, upstream("good", good.url, path_prefix="/good", timeout="10s"))
        with Ambassador(tmp_path_factory.mktemp("faults"), routes) as amb:
            yield amb, good
    for raw in raws.values():
        raw.close()


def still_serving(amb):
    status, _, body = amb.get("/good/ping")
    assert (status, json.loads(body)) == (200, {"ok": True})


@pytest.mark.parametrize("name, reason", [
    ("reset", "connect_error"), ("truncated", "connect_error"), ("malformed", "connect_error"), ("hangs", "timeout"),
])
def test_broken_upstreams_get_the_spec_error_within_the_timeout(setup, name, reason):
    amb, _ = setup
    started = time.monotonic()
    status, headers, body = amb.get(f"/{name}/x")
    assert time.monotonic() - started < 4
    payload = json.loads(body)
    assert (payload["reason"], payload["upstream"]) == (reason, name), payload
    assert status == (504 if reason == "timeout" else 502)
    still_serving(amb)


def test_ten_megabyte_bodies_both_ways(setup):
    amb, _ = setup
    status, _, body = amb.get("/good/big")
    assert status == 200 and body == BIG_BODY
    upload = bytes(reversed(BIG_BODY))
    status, _, body = amb.request("POST", "/good/upload", {"Content-Type": "application/octet-stream"}, upload)
    assert json.loads(body) == {"sha256": hashlib.sha256(upload).hexdigest(), "size": BIG}


def test_client_that_disconnects_early_does_not_hurt(setup):
    amb, good = setup
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", amb.port)) as s:
            s.sendall(b"GET /good/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    still_serving(amb)


def test_slow_clients_do_not_block_others(setup):
    amb, _ = setup
    slow = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", amb.port))
        s.sendall(b"GET /good/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finishes its headers
        slow.append(s)
    try:
        started = time.monotonic()
        for _ in range(10):
            still_serving(amb)
        assert time.monotonic() - started < 5
    finally:
        for s in slow:
            s.close()


def test_malformed_http_from_a_client_gets_4xx(setup):
    amb, _ = setup
    answer = raw_exchange(amb.port, b"NONSENSE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    still_serving(amb)


def test_huge_request_headers_are_refused_not_forwarded(setup):
    amb, good = setup
    before = len(good.received)
    answer = raw_exchange(amb.port, b"GET /good/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"a" * 2_000_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["reason"] == "headers_too_large"
    assert len(good.received) == before
    still_serving(amb)


def test_upstream_that_goes_away_and_comes_back(tmp_path):
    def handler(req):
        return Reply.json({"ok": True})

    first = FakeUpstream(handler).__enter__()
    port = first.port
    with Ambassador(tmp_path, profile(upstream("app", f"http://127.0.0.1:{port}", path_prefix="/app", timeout="2s"))) as amb:
        assert amb.get("/app/x")[0] == 200
        first.__exit__(None, None, None)
        status, _, body = amb.get("/app/x")
        assert status == 502 and json.loads(body)["reason"] == "connect_error"
        with FakeUpstream(handler, port=port):
            assert amb.get("/app/x")[0] == 200


def test_request_bodies_beyond_the_limit_are_refused(tmp_path):
    with FakeUpstream(origin) as good:
        with Ambassador(tmp_path, profile(upstream("good", good.url, path_prefix="/good")), "--set", "body_size_limit=1m") as amb:
            status, _, _ = amb.request("POST", "/good/upload", {"Content-Type": "application/octet-stream"}, b"x" * 2_000_000)
            assert status == 413
            assert good.received == []
            status, _, body = amb.request("POST", "/good/upload", {}, b"x" * 500_000)
            assert status == 200 and json.loads(body)["size"] == 500_000


def test_upstream_answers_beyond_the_limit_are_refused(tmp_path):
    """Answers are held in memory whole, so body_size_limit bounds them as it bounds requests:
    502 `upstream_error` whether the upstream announces the size or streams it."""
    def announced(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 2_000_000)

    def chunked(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(40):
            conn.sendall(b"c350\r\n" + b"y" * 50_000 + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    def small_chunked(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nsmall\r\n0\r\n\r\n")

    upstreams = [RawUpstream(script) for script in (announced, chunked, small_chunked)]
    try:
        routes = profile(
            *(upstream(name, u.url, path_prefix=f"/{name}", timeout="10s") for name, u in zip(("announced", "chunked", "small"), upstreams))
        )
        with Ambassador(tmp_path, routes, "--set", "body_size_limit=1m") as amb:
            for name in ("announced", "chunked"):
                status, headers, body = amb.get(f"/{name}/x")
                assert (status, json.loads(body)["reason"], headers["X-Ambassador-Upstream"]) == (502, "upstream_error", name)
                assert "body_size_limit" in json.loads(body)["error"]
            assert amb.get("/small/x")[::2] == (200, b"small")
        with Ambassador(tmp_path, routes, "--set", "body_size_limit=3m") as amb:
            for name in ("announced", "chunked"):
                status, _, body = amb.get(f"/{name}/x")
                assert (status, len(body)) == (200, 2_000_000)
    finally:
        for u in upstreams:
            u.close()
