"""Upstream connection hygiene through the real ambassador: a pooled connection that delivers
bytes nobody asked for is closed, and those bytes never reach a later client or the cache."""

import json
import time

import pytest

from harness import Ambassador, KeepAliveRawUpstream, Received, raw_exchange
from profiles import profile, upstream

INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nCache-Control: max-age=60\r\n\r\nINJECTED"
TRAILING = b"INJECTED BYTES AFTER THE BODY"
CLOSE_WAIT = 10.0  # an upper bound for the ambassador to close a connection; met in milliseconds


def answer(req: Received, after: bytes = b"") -> bytes:
    """A well-framed, cacheable answer naming the request it answers, then `after`."""
    body = f"answer to {req.method} {req.path}".encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nCache-Control: max-age=60\r\n\r\n%s%s" % (len(body), body, after)


# How each upstream misbehaves on the first request of a connection: bytes sent with the first
# answer (`with_answer`) or later, once the connection idles in the ambassador's pool (`later`).
MISBEHAVIOURS = {
    "second-answer": {"with_answer": INJECTED},
    "second-answer-later": {"later": INJECTED},
    "longer-body": {"with_answer": TRAILING},
    "longer-body-later": {"later": TRAILING},
}

# Bytes after the body in the same read are not HTTP: the framing is broken and which body the
# upstream meant is unknown, so the first client gets a 502 connect_error, not a truncated body.
BROKEN_FRAMING = {"longer-body"}


def misbehaving(how: dict):
    def script(req: Received) -> bytes:
        return answer(req, how.get("with_answer", b"") if req.path == "/first" else b"")
    return script


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    raws = {}
    for name, how in MISBEHAVIOURS.items():
        for cached in (False, True):
            raws[name + ("-cached" if cached else "")] = KeepAliveRawUpstream(misbehaving(how))
    raws["early"] = KeepAliveRawUpstream(answer, body_read=False)
    raws["switch"] = KeepAliveRawUpstream(lambda req: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
    raws["steady"] = KeepAliveRawUpstream(answer)
    raws["expect"] = KeepAliveRawUpstream(answer)
    def route(name: str, raw: KeepAliveRawUpstream) -> dict:
        sections = {"cache": {"ttl": "60s"}} if name.endswith("-cached") else {}
        return upstream(name, raw.url, path_prefix=f"/{name}", timeout="2s", **sections)

    with Ambassador(tmp_path_factory.mktemp("hygiene"), profile(*(route(name, raw) for name, raw in raws.items()))) as amb:
        yield amb, raws
        assert "Traceback" not in amb.output  # no misbehaviour left one
    for raw in raws.values():
        raw.close()


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cached"])
@pytest.mark.parametrize("name", list(MISBEHAVIOURS))
def test_unasked_bytes_close_the_connection_and_reach_no_one(setup, name, cached):
    amb, raws = setup
    route = name + ("-cached" if cached else "")
    upstream = raws[route]

    status, _, body = amb.get(f"/{route}/first")
    if name in BROKEN_FRAMING:
        assert (status, json.loads(body)["reason"]) == (502, "connect_error"), body
    else:
        assert (status, body) == (200, b"answer to GET /first")
    if later := MISBEHAVIOURS[name].get("later"):
        upstream.send(0, later)
        amb.wait_for_log(rf"upstream {route} sent bytes nobody asked for \({len(later)} in the last read\)")
    closed = upstream.closed[0].wait(CLOSE_WAIT)

    # The next client, the same route: its own answer, never the bytes sent after the first.
    status, _, body = amb.get(f"/{route}/second")
    assert (status, body) == (200, b"answer to GET /second")
    assert closed, "the connection that delivered unasked bytes is still open"
    assert upstream.accepted == 2, "the misbehaving connection was reused"
    if cached:  # what the cache stored for the second client is its own answer
        status, headers, body = amb.get(f"/{route}/second")
        assert (status, body) == (200, b"answer to GET /second")
        assert len(upstream.received) == 2, "not answered from the cache"


def test_a_well_framed_answer_keeps_the_connection(setup):
    amb, raws = setup
    upstream = raws["steady"]
    for path in ("/steady/a", "/steady/b", "/steady/c"):
        status, _, body = amb.get(path)
        assert (status, body) == (200, f"answer to GET /{path.rsplit('/', 1)[1]}".encode())
    assert upstream.accepted == 1


def test_an_answer_before_the_request_was_sent_closes_the_connection(setup):
    amb, raws = setup
    upstream = raws["early"]
    upload = b"u" * (8 * 1024 * 1024)  # beyond what the socket buffers hold unread

    status, _, body = amb.request("POST", "/early/first", body=upload)
    assert (status, body) == (200, b"answer to POST /first")
    assert upstream.closed[0].wait(CLOSE_WAIT), "the connection with half a request on it is still open"

    status, _, body = amb.request("POST", "/early/second", body=b"small")
    assert (status, body) == (200, b"answer to POST /second")
    assert upstream.accepted == 2


def test_a_switch_of_protocols_nobody_asked_for_is_an_error_within_the_timeout(setup):
    amb, raws = setup
    started = time.monotonic()
    status, _, body = amb.get("/switch/x", headers={"Connection": "Upgrade", "Upgrade": "h2c"})
    assert time.monotonic() - started < 2
    payload = json.loads(body)
    assert (status, payload["reason"], payload["upstream"]) == (502, "upstream_error", "switch"), payload
    assert "101" in payload["error"]
    assert raws["switch"].received[0].header("Upgrade") is None  # the client's Upgrade ends at this hop
    assert raws["switch"].closed[0].wait(CLOSE_WAIT)


def test_expect_100_continue_is_not_forwarded(setup):
    """The ambassador holds the whole body before it calls the upstream: an upstream that never
    sends `100 Continue` answers at once, whether the client's Expect came on its request (which
    mitmproxy answers itself) or in a batch item."""
    amb, raws = setup
    upstream = raws["expect"]
    started = time.monotonic()
    reply = raw_exchange(
        amb.port,
        b"POST /expect/upload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello" % amb.port,
    )
    assert reply.endswith(b"\r\n\r\nanswer to POST /upload"), reply
    item = {"method": "POST", "path": "/expect/item", "headers": {"Expect": "100-continue"}, "body": "hello"}
    status, _, body = amb.request("POST", "/_ambassador/batch", {"Content-Type": "application/json"}, json.dumps([item]).encode())
    assert time.monotonic() - started < 2  # the timeout, had either waited for a 100
    answers = json.loads(body)
    assert (status, answers[0]["status"], answers[0]["body"]) == (200, 200, "answer to POST /item"), answers
    for received in upstream.received[-2:]:
        assert (received.body, received.header("Expect")) == (b"hello", None)

