"""The guarded upstream pool against a real raw-socket upstream, and the private aiohttp parts it
leans on: an aiohttp upgrade that changes them fails here, not in production."""

import asyncio
import inspect
import socket

import aiohttp
from aiohttp.client_proto import ResponseHandler

from addons.pool import GuardedConnector, GuardedResponseHandler
from harness import KeepAliveRawUpstream, Received

INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
WAIT = 10.0  # an upper bound for events that take milliseconds


def answer(req: Received) -> bytes:
    body = f"answer to {req.path}".encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        return await response.read()


def test_the_private_aiohttp_parts_the_pool_relies_on():
    assert list(inspect.signature(aiohttp.TCPConnector._release).parameters) == ["self", "key", "protocol", "should_close"]
    assert isinstance(inspect.getattr_static(ResponseHandler, "should_close"), property)

    async def factory_protocol():
        connector = GuardedConnector("test")
        try:
            return connector._factory()
        finally:
            await connector.close()

    assert isinstance(asyncio.run(factory_protocol()), GuardedResponseHandler)


def test_a_well_framed_answer_keeps_the_connection_pooled():
    upstream = KeepAliveRawUpstream(answer)

    async def three():
        async with aiohttp.ClientSession(connector=GuardedConnector("test")) as session:
            return [await get(session, f"{upstream.url}/{n}") for n in range(3)]

    try:
        assert asyncio.run(three()) == [b"answer to /0", b"answer to /1", b"answer to /2"]
        assert upstream.accepted == 1
    finally:
        upstream.close()


def test_bytes_arriving_while_pooled_close_the_connection():
    upstream = KeepAliveRawUpstream(answer)

    async def injected_while_idle():
        async with aiohttp.ClientSession(connector=GuardedConnector("test")) as session:
            first = await get(session, f"{upstream.url}/first")
            upstream.send(0, INJECTED)
            closed = await asyncio.to_thread(upstream.closed[0].wait, WAIT)
            return first, closed, await get(session, f"{upstream.url}/second")

    try:
        assert asyncio.run(injected_while_idle()) == (b"answer to /first", True, b"answer to /second")
        assert upstream.accepted == 2
    finally:
        upstream.close()


def test_a_second_answer_in_the_same_read_closes_the_connection():
    upstream = KeepAliveRawUpstream(lambda req: answer(req) + (INJECTED if req.path == "/first" else b""))

    async def two():
        async with aiohttp.ClientSession(connector=GuardedConnector("test")) as session:
            first = await get(session, f"{upstream.url}/first")
            closed = await asyncio.to_thread(upstream.closed[0].wait, WAIT)
            return first, closed, await get(session, f"{upstream.url}/second")

    try:
        assert asyncio.run(two()) == (b"answer to /first", True, b"answer to /second")
        assert upstream.accepted == 2
    finally:
        upstream.close()


def test_a_second_answer_right_behind_the_body_closes_the_connection():
    """The body ends inside a read that carries a second answer too: aiohttp pools the
    connection at the body's end, before it parses the rest of the read."""
    body = b"answer to /first"
    upstream = KeepAliveRawUpstream(
        lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) if req.path == "/first" else answer(req)
    )

    async def two():
        async with aiohttp.ClientSession(connector=GuardedConnector("test")) as session:
            async with session.get(f"{upstream.url}/first") as response:  # its head is in
                upstream.send(0, body + INJECTED)
                first = await response.read()
            closed = await asyncio.to_thread(upstream.closed[0].wait, WAIT)
            return first, closed, await get(session, f"{upstream.url}/second")

    try:
        assert asyncio.run(two()) == (body, True, b"answer to /second")
        assert upstream.accepted == 2
    finally:
        upstream.close()


def small_send_buffer(addr_info) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return sock


def test_an_answer_before_the_request_was_sent_closes_the_connection():
    """The body is small enough for aiohttp to hand it over without waiting, too large for the
    small socket buffers: the answer comes while part of it is still ours to send."""
    upstream = KeepAliveRawUpstream(answer, body_read=False)
    upstream.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async def two():
        connector = GuardedConnector("test", socket_factory=small_send_buffer)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
            async with session.post(f"{upstream.url}/first", data=b"u" * 60_000) as response:
                first = await response.read()
            closed = await asyncio.to_thread(upstream.closed[0].wait, WAIT)
            return first, closed, await get(session, f"{upstream.url}/second")

    try:
        assert asyncio.run(two()) == (b"answer to /first", True, b"answer to /second")
        assert upstream.accepted == 2
    finally:
        upstream.close()


def test_an_upstream_closing_after_its_answer_is_not_reported(caplog):
    upstream = KeepAliveRawUpstream(lambda req: answer(req).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))

    async def one():
        async with aiohttp.ClientSession(connector=GuardedConnector("test")) as session:
            async with session.get(f"{upstream.url}/only") as response:  # the head first, then the body
                return await response.read()

    try:
        assert asyncio.run(one()) == b"answer to /only"
        assert upstream.closed[0].wait(WAIT)
        assert "nobody asked for" not in caplog.text
    finally:
        upstream.close()
