"""Header values with bytes outside ASCII (obs-text) cross the ambassador byte for byte.

A raw client sends what an HTTP library would re-encode (latin-1 `caf\\xe9`, raw UTF-8); a
raw upstream records the exact bytes it got and answers with such bytes of its own.
"""

import pytest

from harness import Ambassador, KeepAliveRawUpstream, raw_exchange
from profiles import profile, upstream

LATIN1, UTF8 = b"caf\xe9", "café €".encode()


def answer_with_obs_text(req) -> bytes:
    return b"HTTP/1.1 200 OK\r\nX-Latin1: na\xefve\r\nX-Utf8: " + UTF8 + b"\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(scope="module")
def server():
    server = KeepAliveRawUpstream(answer_with_obs_text)
    yield server
    server.close()


@pytest.fixture(scope="module")
def amb(server, tmp_path_factory):
    routes = profile(
        upstream("legacy", server.url, path_prefix="/legacy"),
        upstream("keyed", server.url, path_prefix="/keyed", auth={"type": "header", "name": "X-Api-Key", "value": "clé"}),
    )
    with Ambassador(tmp_path_factory.mktemp("amb"), routes) as amb:
        yield amb


def test_request_header_bytes_reach_the_upstream_unchanged(amb, server):
    request = f"GET /legacy/x HTTP/1.1\r\nHost: 127.0.0.1:{amb.port}\r\n".encode() + b"X-Latin1: " + LATIN1 + b"\r\nX-Utf8: " + UTF8 + b"\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(amb.port, request)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    received = server.received[-1]  # its fields as latin-1 text: one character per byte received
    assert received.header("X-Latin1").encode("latin-1") == LATIN1
    assert received.header("X-Utf8").encode("latin-1") == UTF8


def test_answer_header_bytes_reach_the_client_unchanged(amb):
    answer = raw_exchange(amb.port, f"GET /legacy/y HTTP/1.1\r\nHost: 127.0.0.1:{amb.port}\r\nConnection: close\r\n\r\n".encode())
    head = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"X-Latin1: na\xefve" in head, head
    assert b"X-Utf8: " + UTF8 in head, head


def test_a_non_ascii_credential_from_the_profile_goes_out_in_utf8(amb, server):
    answer = raw_exchange(amb.port, f"GET /keyed/z HTTP/1.1\r\nHost: 127.0.0.1:{amb.port}\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert server.received[-1].header("X-Api-Key").encode("latin-1") == "clé".encode()
