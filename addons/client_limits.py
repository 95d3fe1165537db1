"""Bounds on what an HTTP/1 client may send and how slowly: heads, bodies, bytes sent ahead.

mitmproxy reads a request head into a buffer until the blank line that ends it, however long
that takes and however large it grows (`FIXME: protect against header size DoS` in
`Http1Server.read_headers`), and only then do addons see a flow. So the bounds live below the
addon hooks, in mitmproxy's HTTP/1 server layer, and this addon puts them there while it is
loaded:

- a header block over `ambassador_max_head` (64KB) is answered `431 headers_too_large`; the
  bytes beyond the bound are never kept (those still arriving are read and dropped);
- a header block not complete `ambassador_head_timeout` (10s) after its first byte ends the
  connection. The clock starts at the first byte of a head, not at the connection or the
  previous answer: keeping an idle connection open between requests is what HTTP clients'
  connection pools do, and costs no buffer; mitmproxy's `tcp_timeout` ends idle ones;
- a request body that pauses longer than `ambassador_body_timeout` (10s) ends the connection
  (and its flow, in an error). A pause, not a total: a large upload on a slow link is fine,
  one that stopped is not; there is no upstream yet to take a timeout from (routing needs the
  whole request), and bytes must flow, so a client holds a connection only while it sends;
- a client that sends more ahead of its answer (a pipelined next request) than a head and a
  body may hold is cut off: mitmproxy would buffer it all while the answer is pending;
- a request body over mitmproxy's `body_size_limit` (or an `Expect: 100-continue` request
  announcing one) gets the ambassador's own `413 too_large` instead of mitmproxy's HTML page;
- chunked trailer fields are dropped instead of crashing mitmproxy's HTTP/1 reader ("HTTP
  trailers are not implemented yet"): the ambassador sends request bodies upstream with a
  Content-Length, where trailers have no place, and a recipient that removes the chunked
  coding may discard them (RFC 9112, 7.1.2).

Why a patch of `Http1Server` rather than something less intimate: mitmproxy has no hook
before the head is parsed; `next_layer` sees the connection only until the HTTP layer is
chosen, and a `ConnectionHandler` patch would see bytes without knowing where a head ends
(after the first request, only the HTTP layer knows). `Http1Server` is the one place that
knows both. The patch wraps two of its methods and its body-reader factory, and replaces
none of their logic; the state it keeps lives on the layer. `check_internals()` checks what
it relies on when the addon loads, so that a mitmproxy upgrade that changes them stops the
start instead of silently unbounding the heads (tests/unit/test_client_limits.py drives the real
layer).

HTTP/2 clients need no size bound here: h2 refuses a header list over 64 KiB (its
MAX_HEADER_LIST_SIZE, a connection error) and at most 64 CONTINUATION frames of a header
block (tests/unit/test_client_limits.py pins the first).
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass

import h11
from h11._readers import ChunkedReader
from h11._receivebuffer import ReceiveBuffer
from mitmproxy import ctx, exceptions
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import ErrorCode, RequestProtocolError, ResponseProtocolError
from mitmproxy.utils import human

from .answers import error_response
from .defaults import body_size_limit
from .errors import AmbassadorError
from .profile import InvalidValue, positive_duration, size

Http1Server = _http1.Http1Server

# Where a head ends, as mitmproxy's reader (h11's ReceiveBuffer) finds it.
HEAD_END = re.compile(rb"\n\r?\n")
# After a refusal, what the client already sent is read and dropped for a while, so that it
# can read the answer: closing a socket with unread data resets the connection, and the
# client loses the answer. Past either bound the connection is closed.
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_head: int = 64 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    # What a client may send ahead while its request is being answered (a pipelined next
    # request): no more than a whole request could be, head and body.
    max_ahead: int | None = None


def parse_limits(max_head: str, head_timeout: str, body_timeout: str, body_limit: int | None) -> Limits:
    """The options' values, checked; raises OptionsError naming the option."""
    values = {}
    for option, value, convert in (
        ("ambassador_max_head", max_head, size),
        ("ambassador_head_timeout", head_timeout, positive_duration),
        ("ambassador_body_timeout", body_timeout, positive_duration),
    ):
        try:
            values[option] = convert(value)
        except InvalidValue as e:
            raise exceptions.OptionsError(f"{option} {e}") from None
    max_head = values["ambassador_max_head"]
    return Limits(
        max_head, values["ambassador_head_timeout"], values["ambassador_body_timeout"], max_head + body_limit if body_limit else None
    )


def head_too_large(buffered: bytes, max_bytes: int) -> bool:
    """Whether a head starting `buffered` is over `max_bytes`, blank line included: no
    complete head within the first `max_bytes`, and more bytes than that."""
    return len(buffered) > max_bytes and HEAD_END.search(buffered, 0, max_bytes) is None


def malformed_head(head: bytes) -> str | None:
    """What in a complete head mitmproxy would refuse with its own page, not the ambassador's
    JSON: a control byte in the request line, a byte outside ASCII in an absolute-form target,
    a control byte, space or non-ASCII byte in a field name. (Field values, obs-fold lines
    included, reach the client gate.)"""
    line, *fields = head.split(b"\n")
    line = line.rstrip(b"\r")
    if any(b < 0x20 or b == 0x7F for b in line):
        return "the request line holds a control byte"
    target = line.split(b" ")[1] if line.count(b" ") >= 2 else b""
    if not target.startswith(b"/") and not target.isascii():
        return "the request target holds bytes outside ASCII"
    for field in fields:
        if field[:1] in (b" ", b"\t", b"\r", b""):
            continue  # a continuation line (obs-fold) or the end of the head
        name = field.split(b":", 1)[0]
        if any(b <= 0x20 or b >= 0x7F for b in name):
            return "a header field name holds a control byte, a space or a byte outside ASCII"
    return None


def refusal(error: AmbassadorError) -> bytes:
    """The answer on the wire, rendered like every other answer of the ambassador."""
    response = error_response(error)
    response.headers["Connection"] = "close"
    return http1.assemble_response(response)


class ClientDeadline(commands.RequestWakeup):
    """A wakeup for the Http1Server that asked: `head` ends a slow head, `body` a stalled
    body, `linger` the wait after a refusal."""

    def __init__(self, delay: float, kind: str, stream_id: int):
        super().__init__(delay)
        self.kind = kind
        self.stream_id = stream_id


class Guard:
    """The wrappers of Http1Server's methods, with the bounds they enforce."""

    def __init__(self) -> None:
        self.limits = Limits()
        # Another guard's wrappers, when one is installed already (two loaded addons in a
        # test): wrapping them would check everything twice.
        installed = getattr(Http1Server.read_headers, "guard", None)
        self.original_handle_event = installed.original_handle_event if installed else Http1Server._handle_event
        self.original_read_headers = installed.original_read_headers if installed else Http1Server.read_headers
        self.original_make_body_reader = installed.original_make_body_reader if installed else _http1.make_body_reader

    def install(self) -> None:
        guard = self

        def _handle_event(layer, event):
            return guard.handle_event(layer, event)

        def read_headers(layer, event):
            return guard.read_headers(layer, event)

        def make_body_reader(expected_size):
            if expected_size is None:
                return BoundedChunkedReader(guard.limits.max_head)
            return guard.original_make_body_reader(expected_size)

        read_headers.guard = self
        Http1Server._handle_event = _handle_event
        Http1Server.read_headers = read_headers
        _http1.make_body_reader = make_body_reader

    def uninstall(self) -> None:
        Http1Server._handle_event = self.original_handle_event
        Http1Server.read_headers = self.original_read_headers
        _http1.make_body_reader = self.original_make_body_reader

    def handle_event(self, layer, event):
        if getattr(layer, "lingering", None) is not None:
            yield from self.linger(layer, event)
        elif isinstance(event, events.Wakeup) and isinstance(event.command, ClientDeadline):
            yield from self.deadline(layer, event.command)
        elif (
            isinstance(event, ResponseProtocolError)
            and event.code is ErrorCode.REQUEST_TOO_LARGE
            and layer.response is None
            and layer.conn.state & ConnectionState.CAN_WRITE
        ):
            limit = body_size_limit()
            error = AmbassadorError("too_large", f"the request body exceeds {human.pretty_size(limit) if limit else 'the limit'} (body_size_limit)")
            yield from self.refuse(layer, error)
        else:
            yield from self.original_handle_event(layer, event)
            if type(event) is events.DataReceived:
                state = layer.state
                if state == layer.read_body:
                    yield from self.body_clock(layer)
                elif state == layer.wait and self.limits.max_ahead and len(layer.buf) > self.limits.max_ahead:
                    yield from self.end_request(layer, f"sent more than {self.limits.max_ahead} bytes ahead of its answer")

    def read_headers(self, layer, event):
        limits = self.limits
        if isinstance(event, events.DataReceived) and len(layer.buf) > limits.max_head:
            if head_too_large(bytes(layer.buf), limits.max_head):
                error = AmbassadorError("headers_too_large", f"the request's header block exceeds {limits.max_head} bytes (ambassador_max_head)")
                yield commands.Log(f"{human.format_address(layer.conn.peername)}: header block over {limits.max_head} bytes refused")
                yield from self.refuse(layer, error)
                return
        if isinstance(event, events.DataReceived) and (end := HEAD_END.search(buffered := bytes(layer.buf))) is not None:
            if problem := malformed_head(buffered[: end.start()]):
                yield commands.Log(f"{human.format_address(layer.conn.peername)}: {problem}; refused")
                yield from self.refuse(layer, AmbassadorError("bad_request", f"malformed request: {problem}"))
                return
        yield from self.original_read_headers(layer, event)
        if layer.state == layer.read_headers and layer.buf and getattr(layer, "head_clock_of", None) != layer.stream_id:
            # A head begun and not finished: the one case that needs a clock (most heads
            # arrive whole in one read and never start one).
            layer.head_clock_of = layer.stream_id
            yield ClientDeadline(limits.head_timeout, "head", layer.stream_id)

    def body_clock(self, layer):
        """Note that body bytes came; start the body's clock on its first incomplete read."""
        layer.body_seen = time.monotonic()
        if getattr(layer, "body_clock_of", None) != layer.stream_id:
            layer.body_clock_of = layer.stream_id
            yield ClientDeadline(self.limits.body_timeout, "body", layer.stream_id)

    def deadline(self, layer, deadline: ClientDeadline):
        if layer.stream_id != deadline.stream_id:
            return  # that request is over
        if deadline.kind == "head" and layer.state == layer.read_headers and layer.buf:
            yield commands.Log(
                f"{human.format_address(layer.conn.peername)}: header block not complete within {deadline.delay:g}s; connection closed"
            )
            yield commands.CloseConnection(layer.conn)
            layer.state = layer.done
        elif deadline.kind == "body" and layer.state == layer.read_body:
            # One clock per body, wound on by the bytes that came meanwhile: no timer per read.
            idle = time.monotonic() - layer.body_seen
            if idle < self.limits.body_timeout:
                yield ClientDeadline(self.limits.body_timeout - idle, "body", layer.stream_id)
            else:
                yield from self.end_request(layer, f"sent no body bytes for {self.limits.body_timeout:g}s")
        # else: the head or body finished in time, or a refusal's linger already ended

    def end_request(self, layer, why: str):
        """Close the connection; the request's flow ends in an error, as when a client goes away."""
        message = f"{human.format_address(layer.conn.peername)}: {why}; connection closed"
        yield commands.Log(message)
        yield commands.CloseConnection(layer.conn)
        layer.buf = ReceiveBuffer()
        layer.state = layer.done
        yield ReceiveHttp(RequestProtocolError(layer.stream_id, message, code=ErrorCode.CLIENT_DISCONNECTED))

    def refuse(self, layer, error: AmbassadorError):
        """Answer `error`, then linger: drop what the client still sends, and close."""
        yield commands.SendData(layer.conn, refusal(error))
        yield commands.CloseTcpConnection(layer.conn, half_close=True)
        layer.buf = ReceiveBuffer()
        layer.lingering = 0
        yield ClientDeadline(LINGER_SECONDS, "linger", layer.stream_id)

    def linger(self, layer, event):
        if isinstance(event, events.DataReceived):
            layer.lingering += len(event.data)
            if layer.lingering <= LINGER_BYTES:
                return
        elif isinstance(event, events.Wakeup) and isinstance(event.command, ClientDeadline):
            if event.command.kind != "linger":
                return
        elif not isinstance(event, events.ConnectionClosed):
            return  # the flow's own events: the answer has been given
        if layer.conn.state is not ConnectionState.CLOSED:
            yield commands.CloseConnection(layer.conn)
        layer.state = layer.done


class BoundedChunkedReader(ChunkedReader):
    """h11's chunked body reader, bounding what it buffers and dropping trailer fields.

    It hands data on as it arrives; what it buffers is a chunk-size line or the trailer
    block, each bounded like a head (a protocol error beyond: mitmproxy closes the
    connection and the flow ends in an error).
    """

    def __init__(self, max_bytes: int):
        super().__init__()
        self.max_bytes = max_bytes

    def __call__(self, buf: ReceiveBuffer):
        event = super().__call__(buf)
        if event is None and len(buf) > self.max_bytes:
            raise h11.RemoteProtocolError(f"chunk framing or trailers over {self.max_bytes} bytes")
        if isinstance(event, h11.EndOfMessage) and event.headers:
            event = h11.EndOfMessage()
        return event


def check_internals() -> None:
    """What the guard relies on in mitmproxy's Http1Server; raises naming what changed."""
    problems = []
    installed = getattr(Http1Server.read_headers, "guard", None)  # mitmproxy's own, under a guard's wrappers
    for name, params in (("_handle_event", ["self", "event"]), ("read_headers", ["self", "event"]), ("read_body", ["self", "event"])):
        method = getattr(installed, f"original_{name.lstrip('_')}", None) or getattr(Http1Server, name, None)
        if not callable(method) or list(inspect.signature(method).parameters) != params:
            problems.append(f"Http1Server.{name}(self, event)")
    for name in ("done", "passthrough", "wait"):
        if not callable(getattr(Http1Server, name, None)):
            problems.append(f"Http1Server.{name}")
    factory = installed.original_make_body_reader if installed else getattr(_http1, "make_body_reader", None)
    if not callable(factory) or list(inspect.signature(factory).parameters) != ["expected_size"]:
        problems.append("make_body_reader(expected_size)")
    elif not isinstance(factory(None), ChunkedReader):
        problems.append("make_body_reader(None) as h11's ChunkedReader")
    annotations = inspect.get_annotations(_http1.Http1Connection)
    for name in ("buf", "body_reader", "state", "response", "stream_id"):
        if name not in annotations:
            problems.append(f"Http1Connection.{name}")
    if not isinstance(getattr(_http1, "ReceiveBuffer", None), type) or _http1.ReceiveBuffer is not ReceiveBuffer:
        problems.append("Http1Connection.buf as h11's ReceiveBuffer")
    if problems:
        raise RuntimeError(
            "mitmproxy's HTTP/1 server layer is not what addons/client_limits.py bounds "
            f"(mitmproxy upgraded?); missing or changed: {', '.join(problems)}"
        )


class ClientLimits:
    """The options, and the guard installed while the addon is loaded."""

    def __init__(self) -> None:
        self.guard: Guard | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "ambassador_max_head", str, "64KB",
            "Largest request header block a client may send (request line and headers); larger gets 431.",
        )
        loader.add_option(
            "ambassador_head_timeout", str, "10s",
            "Time a client has, from the first byte of a request, to finish its header block; then the connection is closed.",
        )
        loader.add_option(
            "ambassador_body_timeout", str, "10s",
            "Longest pause in a request body a client may make; then the connection is closed.",
        )
        check_internals()
        self.guard = Guard()
        self.guard.install()

    def configure(self, updated) -> None:
        if self.guard and {"ambassador_max_head", "ambassador_head_timeout", "ambassador_body_timeout", "body_size_limit"} & updated:
            options = ctx.options
            self.guard.limits = parse_limits(
                options.ambassador_max_head, options.ambassador_head_timeout, options.ambassador_body_timeout, body_size_limit()
            )

    def done(self) -> None:
        if self.guard:
            self.guard.uninstall()
            self.guard = None
