"""The bounds on client requests: the pure decisions, and the guard driving mitmproxy's real
HTTP/1 server layer (no proxy server around it: the commands it yields are what we check)."""

from __future__ import annotations

import json

import pytest
from mitmproxy import exceptions, http, options
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
    RequestProtocolError,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
)
from mitmproxy.test import taddons, tflow

from addons.client_limits import LINGER_BYTES, ClientDeadline, ClientLimits, Limits, check_internals, head_too_large, parse_limits

ORIGINAL_READ_HEADERS = _http1.Http1Server.read_headers


@pytest.fixture
def tctx():
    addon = ClientLimits()
    with taddons.context(addon) as tctx:
        yield tctx, addon
    addon.done()


def server_layer() -> _http1.Http1Server:
    client = tflow.tclient_conn()
    client.state = ConnectionState.OPEN
    layer = _http1.Http1Server(Context(client, options.Options()))
    assert list(layer.handle_event(events.Start())) == []
    return layer


def feed(layer, data: bytes) -> list[commands.Command]:
    return list(layer.handle_event(events.DataReceived(layer.conn, data)))


def sent(cmds) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, commands.SendData))


def received(cmds) -> list:
    return [c.event for c in cmds if isinstance(c, ReceiveHttp)]


def closed(cmds) -> bool:
    return any(type(c) is commands.CloseConnection for c in cmds)


def deadlines(cmds) -> list[ClientDeadline]:
    return [c for c in cmds if isinstance(c, ClientDeadline)]


def error_of(answer: bytes) -> tuple[bytes, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


HEAD = b"GET /app/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"


# --- decisions -------------------------------------------------------------------------------


def test_the_options_parse_to_limits():
    assert parse_limits("64KB", "10s", "10s", None) == Limits(64 * 1024, 10.0, 10.0, None)
    assert parse_limits("1MB", "250ms", "1m", 1000) == Limits(1024 * 1024, 0.25, 60.0, 1024 * 1024 + 1000)
    assert parse_limits("4096", "3", "4", None) == Limits(4096, 3.0, 4.0)


@pytest.mark.parametrize("max_head, head_timeout, body_timeout, named", [
    ("64 kilobytes", "10s", "10s", "ambassador_max_head"),
    ("0", "10s", "10s", "ambassador_max_head"),
    ("64KB", "0s", "10s", "ambassador_head_timeout"),
    ("64KB", "soon", "10s", "ambassador_head_timeout"),
    ("64KB", "10s", "-1", "ambassador_body_timeout"),
])
def test_bad_option_values_are_refused_naming_the_option(max_head, head_timeout, body_timeout, named):
    with pytest.raises(exceptions.OptionsError, match=named):
        parse_limits(max_head, head_timeout, body_timeout, None)


def test_a_head_is_too_large_only_without_an_end_within_the_limit():
    assert not head_too_large(b"x" * 100, 100)  # not over yet: may still end in time
    assert head_too_large(b"x" * 101, 100)
    head = b"GET / HTTP/1.1\r\n\r\n"
    assert not head_too_large(head + b"body" * 100, len(head))  # a complete head, then its body
    assert head_too_large(head + b"body" * 100, len(head) - 1)  # its blank line counts
    assert not head_too_large(b"GET / HTTP/1.1\n\nbody" * 10, 20)  # bare LF, as mitmproxy's reader accepts


# --- the addon -------------------------------------------------------------------------------


def test_defaults_are_64KB_and_10s(tctx):
    tctx, addon = tctx
    assert tctx.options.ambassador_max_head == "64KB"
    assert tctx.options.ambassador_head_timeout == "10s"
    assert tctx.options.ambassador_body_timeout == "10s"
    assert addon.guard.limits == Limits(65536, 10.0, 10.0)


def test_the_options_change_the_limits_and_bad_values_are_refused(tctx):
    tctx, addon = tctx
    tctx.configure(addon, ambassador_max_head="8KB", ambassador_head_timeout="2s", ambassador_body_timeout="3s")
    assert addon.guard.limits == Limits(8192, 2.0, 3.0)
    with pytest.raises(exceptions.OptionsError, match="ambassador_max_head"):
        tctx.configure(addon, ambassador_max_head="lots")
    assert addon.guard.limits == Limits(8192, 2.0, 3.0)


def test_done_puts_mitmproxys_layer_back():
    addon = ClientLimits()
    with taddons.context(addon):
        assert _http1.Http1Server.read_headers is not ORIGINAL_READ_HEADERS
    addon.done()
    assert _http1.Http1Server.read_headers is ORIGINAL_READ_HEADERS


def test_the_installed_mitmproxy_is_what_the_guard_relies_on():
    check_internals()


def test_a_changed_mitmproxy_fails_loudly_at_load(monkeypatch):
    monkeypatch.setattr(_http1, "make_body_reader", lambda size, strict=True: None)
    monkeypatch.setattr(_http1.Http1Connection, "__annotations__", {})
    with pytest.raises(RuntimeError, match="make_body_reader.*Http1Connection.buf"):
        check_internals()
    with pytest.raises(RuntimeError, match="mitmproxy upgraded"), taddons.context() as tctx:
        tctx.master.addons.add(ClientLimits())


# --- the real HTTP/1 server layer ------------------------------------------------------------


def test_a_head_over_the_limit_is_answered_431_and_nothing_is_parsed(tctx):
    layer = server_layer()
    cmds = feed(layer, HEAD + b"X-Huge: " + b"a" * 70_000)
    status, error = error_of(sent(cmds))
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert error["reason"] == "headers_too_large" and "ambassador_max_head" in error["error"]
    assert received(cmds) == []  # no request: nothing reaches the flow hooks or an upstream
    assert any(isinstance(c, commands.CloseTcpConnection) and c.half_close for c in cmds)


def test_after_a_refusal_what_still_arrives_is_dropped_and_the_connection_closed(tctx):
    layer = server_layer()
    feed(layer, HEAD + b"X-Huge: " + b"a" * 70_000)
    chunk = b"a" * 65535
    for _ in range(LINGER_BYTES // len(chunk)):
        assert feed(layer, chunk) == []
        assert len(layer.buf) == 0  # never buffered
    assert closed(feed(layer, chunk))


def test_many_small_headers_count_like_one_large_one(tctx):
    tctx, addon = tctx
    tctx.configure(addon, ambassador_max_head="4KB")
    layer = server_layer()
    total = 0
    for i in range(1000):
        line = b"X-%d: v\r\n" % i if i else HEAD
        total += len(line)
        if answer := sent(feed(layer, line)):
            break
    assert error_of(answer)[1]["reason"] == "headers_too_large"
    assert total - len(line) <= 4096 < total  # refused on the read that went over


def test_a_head_within_the_limit_is_parsed_as_before(tctx):
    layer = server_layer()
    head = HEAD + b"X-Big: " + b"a" * 60_000 + b"\r\n\r\n"
    cmds = feed(layer, head[:30_000]) + feed(layer, head[30_000:])
    [request] = [e for e in received(cmds) if isinstance(e, RequestHeaders)]
    assert len(request.request.headers["X-Big"]) == 60_000
    assert sent(cmds) == b""


def test_a_head_arriving_whole_starts_no_clock(tctx):
    layer = server_layer()
    assert deadlines(feed(layer, HEAD + b"\r\n")) == []


def test_a_slow_head_is_closed_when_its_clock_runs_out(tctx):
    tctx, addon = tctx
    tctx.configure(addon, ambassador_head_timeout="3s")
    layer = server_layer()
    [deadline] = deadlines(feed(layer, b"GET /app/x HTTP/1.1\r\n"))
    assert deadline.delay == 3.0
    assert deadlines(feed(layer, b"Host: 127.0.0.1\r\n")) == []  # one clock per head, from its first byte
    assert closed(layer.handle_event(events.Wakeup(deadline)))


def test_a_head_finished_in_time_outlives_its_clock(tctx):
    layer = server_layer()
    [deadline] = deadlines(feed(layer, HEAD))
    cmds = feed(layer, b"Content-Length: 5\r\n\r\nab")  # now reading the body
    assert [type(e) for e in received(cmds)] == [RequestHeaders, RequestData]
    assert list(layer.handle_event(events.Wakeup(deadline))) == []  # mitmproxy's reader would raise on it
    assert [type(e) for e in received(feed(layer, b"cde"))] == [RequestData, RequestEndOfMessage]


def test_the_next_head_on_a_kept_alive_connection_gets_its_own_clock(tctx):
    layer = server_layer()
    [first] = deadlines(feed(layer, HEAD))
    feed(layer, b"\r\n")
    answered = [ResponseHeaders(1, http.Response.make(200, b"", {"Content-Length": "0"})), ResponseEndOfMessage(1)]
    assert [c for event in answered for c in layer.handle_event(event) if isinstance(c, commands.CloseConnection)] == []
    assert layer.stream_id == 3 and layer.state == layer.read_headers  # kept alive, waiting for the next head
    [second] = deadlines(feed(layer, HEAD))
    assert list(layer.handle_event(events.Wakeup(first))) == []
    assert closed(layer.handle_event(events.Wakeup(second)))


def test_chunked_trailers_end_the_body_instead_of_crashing_the_reader(tctx):
    layer = server_layer()
    cmds = feed(layer, b"POST /app/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n")
    assert [type(e) for e in received(cmds)] == [RequestHeaders, RequestData, RequestEndOfMessage]


def test_chunk_framing_over_the_limit_is_a_protocol_error(tctx):
    tctx, addon = tctx
    tctx.configure(addon, ambassador_max_head="1KB")
    layer = server_layer()
    cmds = feed(layer, b"POST /app/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n")
    cmds += feed(layer, b"X-Trailer: " + b"a" * 2000)
    assert closed(cmds)
    assert any(isinstance(e, RequestProtocolError) for e in received(cmds))


def test_a_body_over_body_size_limit_gets_the_ambassadors_413(tctx):
    layer = server_layer()
    feed(layer, HEAD + b"Content-Length: 100\r\n\r\n")
    cmds = list(layer.handle_event(ResponseProtocolError(layer.stream_id, "too large", ErrorCode.REQUEST_TOO_LARGE)))
    status, error = error_of(sent(cmds))
    assert status == b"HTTP/1.1 413 Payload Too Large" and error["reason"] == "too_large"


def test_other_protocol_errors_stay_mitmproxys(tctx):
    layer = server_layer()
    feed(layer, HEAD + b"\r\n")
    cmds = list(layer.handle_event(ResponseProtocolError(layer.stream_id, "gone", ErrorCode.CONNECT_FAILED)))
    assert sent(cmds).startswith(b"HTTP/1.1 502") and b"reason" not in sent(cmds)



def test_a_body_that_keeps_coming_winds_its_clock_on(tctx, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("addons.client_limits.time.monotonic", lambda: now[0])
    layer = server_layer()
    [deadline] = deadlines(feed(layer, HEAD + b"Content-Length: 10\r\n\r\nab"))
    assert (deadline.kind, deadline.delay) == ("body", 10.0)
    now[0] += 6
    assert deadlines(feed(layer, b"cd")) == []  # one clock per body, not per read
    now[0] += 4
    [wound_on] = deadlines(layer.handle_event(events.Wakeup(deadline)))
    assert wound_on.delay == 6.0  # ten seconds from the last bytes
    now[0] += 6
    cmds = list(layer.handle_event(events.Wakeup(wound_on)))
    assert closed(cmds)
    [error] = received(cmds)
    assert isinstance(error, RequestProtocolError) and "no body bytes for 10s" in error.message


def test_a_body_arriving_with_its_head_starts_no_clock(tctx):
    layer = server_layer()
    assert deadlines(feed(layer, HEAD + b"Content-Length: 2\r\n\r\nab")) == []


def test_bytes_sent_ahead_of_the_answer_are_bounded(tctx):
    tctx, addon = tctx
    addon.guard.limits = Limits(max_head=1024, max_ahead=4096)
    layer = server_layer()
    feed(layer, HEAD + b"\r\n" + HEAD)  # a request, and the next one pipelined: kept
    assert not closed(feed(layer, b"X: " + b"a" * 3000))
    cmds = feed(layer, b"a" * 2000)
    assert closed(cmds) and len(layer.buf) == 0
    assert isinstance(received(cmds)[0], RequestProtocolError)


def test_http2_header_lists_are_bounded_by_h2_itself():
    """Why the guard leaves mitmproxy's HTTP/2 layer alone: h2 ends a connection whose header
    list is over 64 KiB (should an upgrade drop that, this fails)."""
    import h2.config
    import h2.connection
    from mitmproxy.addons.proxyserver import Proxyserver
    from mitmproxy.proxy.layers.http._http2 import Http2Server

    with taddons.context(Proxyserver()) as tctx:
        client = tflow.tclient_conn()
        client.alpn = b"h2"
        layer = Http2Server(Context(client, tctx.options))
        list(layer.handle_event(events.Start()))
        peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        peer.initiate_connection()
        for stream_id, size, refused in ((1, 60_000, False), (3, 70_000, True)):
            fields = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "h"), ("x-big", "a" * size)]
            peer.send_headers(stream_id, fields, end_stream=True)
            cmds = list(layer.handle_event(events.DataReceived(client, peer.data_to_send())))
            assert closed(cmds) is refused
            assert any(isinstance(e, RequestHeaders) for e in received(cmds)) is not refused


@pytest.mark.parametrize("head, refused", [
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b", False),
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a", False),  # raw UTF-8 in a path: the path guard's to judge
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: caf\xe9", False),  # obs-text in a value passes
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\r\n folded", False),  # obs-fold: the client gate refuses it
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX\x01A: a", True),
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX A: a", True),
    (b"GET /x HTTP/1.1\r\nHost: a\r\nCaf\xc3\xa9: a", True),
    (b"GET /x\x01 HTTP/1.1\r\nHost: a", True),
    (b"GET http://a/caf\xc3\xa9 HTTP/1.1\r\nHost: a", True),
])
def test_what_mitmproxy_would_refuse_with_its_own_page_is_found_first(head, refused):
    from addons.client_limits import malformed_head

    assert (malformed_head(head) is not None) is refused
