"""Bounds on what clients send, through the real ambassador: heads over 64KB, heads that never
finish, bodies announced over body_size_limit, chunked trailers. Hostile requests go as raw
bytes; an HTTP client would refuse to send most of them."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from harness import Ambassador, FakeUpstream
from profiles import profile, upstream

HEAD_TIMEOUT = 2.0  # the defaults are 10s (tests/unit/test_client_limits.py); short keeps this fast
BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with FakeUpstream() as server:  # echoes what it received
        app = profile(upstream("app", server.url, path_prefix="/app"))
        args = (
            "--set", f"ambassador_head_timeout={HEAD_TIMEOUT:g}s",
            "--set", f"ambassador_body_timeout={BODY_TIMEOUT:g}s",
            "--set", "body_size_limit=1m",
        )
        with Ambassador(tmp_path_factory.mktemp("limits"), app, *args) as amb:
            yield amb, server


def head(amb, *lines: bytes) -> bytes:
    return b"\r\n".join([b"GET /app/x HTTP/1.1", b"Host: 127.0.0.1:%d" % amb.port, *lines, b"", b""])


def answer_of(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split()[1]), headers, body


def assert_refused(raw: bytes, status: int, reason: str) -> None:
    code, headers, body = answer_of(raw)
    assert (code, json.loads(body)["reason"]) == (status, reason), raw[:300]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"


def read_answer(s: socket.socket) -> bytes:
    """One answer with a Content-Length from a kept-alive connection."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += s.recv(65536)
    _, headers, body = answer_of(raw)
    while len(body) < int(headers["content-length"]):
        body += s.recv(65536)
    return raw


def still_serving(amb) -> None:
    status, _, body = amb.get("/app/ping")
    assert status == 200 and json.loads(body)["path"] == "/ping"
    assert "Traceback" not in amb.output


def test_a_two_megabyte_header_gets_431_and_is_not_forwarded(setup):
    amb, upstream = setup
    before = len(upstream.received)
    assert_refused(amb.raw(head(amb, b"X-Huge: " + b"a" * 2_000_000)), 431, "headers_too_large")
    assert len(upstream.received) == before
    still_serving(amb)


def test_ten_thousand_small_headers_get_431(setup):
    amb, upstream = setup
    before = len(upstream.received)
    assert_refused(amb.raw(head(amb, *(b"X-H%d: v" % i for i in range(10_000)))), 431, "headers_too_large")
    assert len(upstream.received) == before
    still_serving(amb)


def test_a_200_megabyte_head_is_cut_off_early_and_memory_stays_flat(setup):
    amb, upstream = setup
    before = amb.peak_rss_kib()
    chunk = b"a" * 65536
    sent = 0
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", amb.port), timeout=10) as s:

        def read() -> None:  # as a client would, while it is still sending
            try:
                while data := s.recv(65536):
                    answer.extend(data)
            except OSError:
                pass

        reader = threading.Thread(target=read)
        reader.start()
        s.sendall(head(amb)[:-2] + b"X-Endless: ")
        try:
            while sent < 200 * 1024 * 1024:
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the ambassador: what we expect
        reader.join(10)
    assert sent < 20 * 1024 * 1024, "the ambassador kept reading an endless head"
    assert_refused(bytes(answer), 431, "headers_too_large")
    assert amb.peak_rss_kib() - before < 50 * 1024
    still_serving(amb)


def test_a_sixty_kilobyte_head_still_works(setup):
    amb, upstream = setup
    status, _, body = answer_of(amb.raw(head(amb, b"X-Big: " + b"b" * 60_000, b"Connection: close")))
    assert status == 200
    assert dict(json.loads(body)["headers"])["X-Big"] == "b" * 60_000


def test_a_slowloris_head_is_closed_after_the_head_timeout(setup):
    amb, upstream = setup
    before = len(upstream.received)
    with socket.create_connection(("127.0.0.1", amb.port)) as s:
        s.sendall(b"GET /app/x HTTP/1.1\r\nX-Slow: ")
        started = time.monotonic()
        s.settimeout(0.5)  # one byte every half second, until the ambassador hangs up
        closed_after = None
        while time.monotonic() - started < 3 * HEAD_TIMEOUT:
            try:
                if s.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                s.sendall(b"a")
            except ConnectionResetError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "the slow head was never closed"
    assert HEAD_TIMEOUT - 0.2 < closed_after < HEAD_TIMEOUT + 1.5
    assert len(upstream.received) == before
    still_serving(amb)
    amb.wait_for_log(re.escape(f"not complete within {HEAD_TIMEOUT:g}s"))  # logged as it closes


def test_an_idle_kept_alive_connection_is_not_a_slow_head(setup):
    """The clock starts at a head's first byte: pooled connections wait between requests."""
    amb, upstream = setup
    with socket.create_connection(("127.0.0.1", amb.port)) as s:
        s.sendall(head(amb))
        s.settimeout(5)
        first = read_answer(s)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        s.settimeout(HEAD_TIMEOUT + 1)
        with pytest.raises(TimeoutError):  # nothing happens to it in longer than the head timeout
            s.recv(1)
        s.sendall(head(amb, b"Connection: close"))
        s.settimeout(5)
        second = b""
        while data := s.recv(65536):
            second += data
    assert second.startswith(b"HTTP/1.1 200"), second[:100]


def test_a_stalled_body_is_closed_after_the_body_timeout(setup):
    amb, upstream = setup
    before = len(upstream.received)
    with socket.create_connection(("127.0.0.1", amb.port), timeout=3 * BODY_TIMEOUT) as s:
        s.sendall(head(amb, b"Content-Length: 100").replace(b"GET", b"POST", 1) + b"only ten b")
        started = time.monotonic()
        try:
            assert s.recv(65536) == b""
        except ConnectionResetError:
            pass
        closed_after = time.monotonic() - started
    assert BODY_TIMEOUT - 0.2 < closed_after < BODY_TIMEOUT + 1.5
    assert len(upstream.received) == before
    amb.wait_for_log(re.escape(f"sent no body bytes for {BODY_TIMEOUT:g}s"))  # logged as it closes
    still_serving(amb)


def test_a_slow_body_that_keeps_coming_is_answered(setup):
    """The body bound is a pause, not a total: this one takes longer than the timeout."""
    amb, upstream = setup
    body = b"slowly"
    with socket.create_connection(("127.0.0.1", amb.port)) as s:
        s.sendall(head(amb, b"Content-Length: %d" % len(body), b"Connection: close").replace(b"GET", b"POST", 1))
        started = time.monotonic()
        s.settimeout(BODY_TIMEOUT / 3)  # a byte every so often; the ambassador must not hang up meanwhile
        for byte in body:
            with pytest.raises(TimeoutError):
                s.recv(1)
            s.sendall(bytes([byte]))
        assert time.monotonic() - started > BODY_TIMEOUT
        s.settimeout(5)
        raw = b""
        while data := s.recv(65536):
            raw += data
    status, _, answer = answer_of(raw)
    assert status == 200 and json.loads(answer)["body"] == "slowly"


def test_expect_100_continue_over_the_body_limit_gets_413_at_once(setup):
    amb, upstream = setup
    before = len(upstream.received)
    request = head(amb, b"Content-Type: application/octet-stream", b"Content-Length: 2000000", b"Expect: 100-continue")
    started = time.monotonic()
    raw = amb.raw(request.replace(b"GET", b"PUT", 1), timeout=5)
    assert time.monotonic() - started < 1
    assert_refused(raw, 413, "too_large")
    assert len(upstream.received) == before


def test_expect_100_continue_within_the_limit_continues(setup):
    amb, upstream = setup
    request = head(amb, b"Content-Length: 5", b"Expect: 100-continue", b"Connection: close").replace(b"GET", b"PUT", 1)
    with socket.create_connection(("127.0.0.1", amb.port), timeout=5) as s:
        s.sendall(request)
        assert s.recv(65536).startswith(b"HTTP/1.1 100")
        s.sendall(b"hello")
        raw = b""
        while data := s.recv(65536):
            raw += data
    status, _, body = answer_of(raw)
    assert status == 200 and json.loads(body)["body"] == "hello"


def test_chunked_trailers_are_answered_normally(setup):
    amb, upstream = setup
    request = head(amb, b"Transfer-Encoding: chunked", b"Trailer: X-Checksum", b"Connection: close").replace(b"GET", b"POST", 1)
    raw = amb.raw(request + b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Checksum: 1234\r\n\r\n", timeout=5)
    status, _, body = answer_of(raw)
    assert status == 200 and json.loads(body)["body"] == "abcdefg"
    still_serving(amb)
    assert "Traceback" not in amb.output and "crashed" not in amb.output
