"""The upstream exchange through the real ambassador: bodies and headers pass unchanged,
hop-by-hop fields do not, and failures get the ambassador's own JSON errors (error, reason, upstream)
within the upstream's timeout."""

import gzip
import json
import os
import time

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply, free_port
from profiles import profile, upstream


def scripted(req: Received) -> Reply:
    if req.path.startswith("/raw"):
        return Reply(200, [("Content-Type", "application/octet-stream")], req.body)
    if req.path == "/multi":
        return Reply(200, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Multi", "x"), ("X-Multi", "y")], b"ok")
    if req.path == "/hop":
        return Reply(200, [("Connection", "X-Resp-Hop"), ("X-Resp-Hop", "1"), ("X-Kept", "1")], b"ok")
    if req.path == "/head":
        return Reply(200, [("Content-Length", "1234")], b"")
    if req.path == "/nocontent":
        return Reply(204, [("X-Kept", "1")])
    if req.path == "/notmodified":
        return Reply(304, [("ETag", '"v1"')])
    if req.path == "/gzip":
        return Reply(200, [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")], gzip.compress(b"hello " * 100))
    if req.path == "/slow":
        return Reply(200, [], b"late", delay=3)
    if req.path == "/reset":
        return Reply(close=True)
    if req.path == "/status/503":
        return Reply.json({"busy": True}, status=503)
    return Reply.json({"path": req.path, "headers": req.headers})



@pytest.fixture(scope="module")
def origin():
    with FakeUpstream(scripted) as up:
        yield up


@pytest.fixture(scope="module")
def amb(origin, tmp_path_factory):
    exchanged = profile(
        upstream("legacy", origin.url, path_prefix="/legacy", timeout="1s"),
        upstream("gone", f"http://127.0.0.1:{free_port()}", path_prefix="/gone"),
    )
    with Ambassador(tmp_path_factory.mktemp("exchange"), exchanged) as a:
        yield a


def last(origin) -> Received:
    return origin.received[-1]


def test_binary_body_round_trips_byte_for_byte(amb):
    payload = bytes(range(256)) * 64 + os.urandom(4096)
    status, headers, body = amb.request("POST", "/legacy/raw", {"Content-Type": "application/octet-stream"}, payload)
    assert status == 200
    assert body == payload


def test_multi_valued_headers_pass_both_ways(amb, origin):
    status, headers, _ = amb.request("GET", "/legacy/multi", [("X-Multi", "1"), ("X-Multi", "2")])
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert headers.get_all("X-Multi") == ["x", "y"]
    assert last(origin).header_all("X-Multi") == ["1", "2"]


def test_hop_by_hop_fields_are_not_forwarded(amb, origin):
    status, headers, _ = amb.request(
        "GET", "/legacy/hop",
        [("Connection", "X-Req-Hop"), ("X-Req-Hop", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
         ("Proxy-Authorization", "Basic eA=="), ("X-End-To-End", "yes")],
    )
    seen = last(origin)
    for name in ("X-Req-Hop", "Keep-Alive", "TE", "Proxy-Authorization"):
        assert seen.header(name) is None, name
    assert seen.header("X-End-To-End") == "yes"
    assert headers["X-Kept"] == "1"
    assert headers["X-Resp-Hop"] is None


def test_upstream_sees_its_own_host_and_no_ambassador_headers(amb, origin):
    amb.get("/legacy/echo", {"X-Ambassador-Timeout": "900ms", "User-Agent": "app/1.0"})
    seen = last(origin)
    assert seen.header("Host") == f"127.0.0.1:{origin.port}"
    assert seen.header("X-Ambassador-Timeout") is None
    assert seen.header("User-Agent") == "app/1.0"
    assert seen.header("Accept-Encoding") is None  # nothing added that the client did not send


def test_head_keeps_content_length_without_body(amb):
    status, headers, body = amb.request("HEAD", "/legacy/head")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == "1234"


def test_204_and_304_have_no_body(amb):
    status, headers, body = amb.get("/legacy/nocontent")
    assert (status, body, headers["X-Kept"]) == (204, b"", "1")
    status, headers, body = amb.get("/legacy/notmodified", {"If-None-Match": '"v1"'})
    assert (status, body, headers["ETag"]) == (304, b"", '"v1"')


def test_content_encoding_passes_through_untouched(amb):
    status, headers, body = amb.get("/legacy/gzip", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == b"hello " * 100


def test_upstream_error_statuses_pass_through(amb):
    status, headers, body = amb.get("/legacy/status/503")
    assert status == 503 and json.loads(body) == {"busy": True}
    assert headers["X-Ambassador-Upstream"] == "legacy"


def test_timeout_bounds_the_exchange(amb):
    started = time.monotonic()
    status, headers, body = amb.get("/legacy/slow")
    elapsed = time.monotonic() - started
    assert status == 504
    assert json.loads(body) == {"error": "upstream legacy did not answer within 1s", "reason": "timeout", "upstream": "legacy"}
    assert elapsed < 2.5


def test_client_can_shorten_the_timeout_but_not_lengthen_it(amb):
    started = time.monotonic()
    status, _, body = amb.get("/legacy/slow", {"X-Ambassador-Timeout": "200ms"})
    assert status == 504 and time.monotonic() - started < 0.9
    status, _, _ = amb.get("/legacy/slow", {"X-Ambassador-Timeout": "10s"})
    assert status == 504
    status, _, body = amb.get("/legacy/x", {"X-Ambassador-Timeout": "soon"})
    assert status == 400 and json.loads(body)["reason"] == "bad_request"


def test_refused_connection_is_connect_error(amb):
    status, headers, body = amb.get("/gone/x")
    payload = json.loads(body)
    assert status == 502
    assert payload["reason"] == "connect_error" and payload["upstream"] == "gone"
    assert headers["X-Ambassador-Upstream"] == "gone"


def test_reset_connection_is_connect_error(amb):
    status, _, body = amb.get("/legacy/reset")
    assert status == 502
    assert json.loads(body)["reason"] == "connect_error"


def test_status_counts_answers_per_upstream(amb):
    amb.get("/gone/y")
    report = amb.status()["upstreams"]
    assert report["gone"]["errors"]["connect_error"] >= 1
    assert report["legacy"]["responses"]["200"] >= 1
