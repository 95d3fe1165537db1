"""Keep-alive connections to an upstream, reused only when nothing unexplained arrived on them.

aiohttp puts a connection back in its pool once an answer is read, and when it takes it again
checks only that the socket is open. Bytes the upstream sends in between (a second answer, a
body longer than its Content-Length) are then parsed as the answer to whatever request goes out
next on it: another client gets them, and a cacheable route stores them. Once that next request
is sent nothing tells such bytes from its real answer, so they are caught while the connection
idles: any byte arriving then closes it, and aiohttp drops closed connections from the pool.
aiohttp itself already closes a connection whose answer leaves bytes queued at the moment it is
released; what it misses is the rest of the read that completed the answer, and an answer that
comes while part of the request still waits in our send buffer. Both are closed here too.

This leans on two private parts of aiohttp's connector (`_factory`, which makes the protocol of
each new connection, and `_release`, which takes a connection back into the pool);
tests/unit/test_pool.py pins both, so an aiohttp upgrade that changes them fails a test.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import aiohttp
from aiohttp.client_proto import ResponseHandler

log = logging.getLogger(__name__)


class GuardedResponseHandler(ResponseHandler):
    """aiohttp's protocol for one upstream connection, closing itself on bytes nobody asked for."""

    idle = False  # back in the pool: no request is outstanding on it

    def __init__(self, loop: asyncio.AbstractEventLoop, upstream: str):
        super().__init__(loop)
        self.upstream = upstream  # its name, for the log

    def data_received(self, data: bytes) -> None:
        if self.idle and data:  # aiohttp feeds b"" itself to resume reading: not from the upstream
            self.close_unasked(len(data))
            return
        super().data_received(data)
        if self.idle and self.should_close and self.is_connected():
            # The answer ended inside this read and went back to the pool; the rest of the read
            # (parsed as a queued second answer, or broken framing) belongs to no request. (Not
            # connected: the pool closed it already, as after `Connection: close`.)
            self.close_unasked(len(data))

    def set_response_params(self, **kwargs) -> None:
        self.idle = False  # taken from the pool: a request is about to go out
        super().set_response_params(**kwargs)

    def close_unasked(self, size: int) -> None:
        log.warning("upstream %s sent bytes nobody asked for (%d in the last read); closed that connection", self.upstream, size)
        self.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector whose pooled connections close on any byte that arrives while they idle."""

    def __init__(self, upstream: str, **kwargs):
        super().__init__(**kwargs)
        self._factory = functools.partial(GuardedResponseHandler, loop=asyncio.get_running_loop(), upstream=upstream)

    def _release(self, key, protocol: GuardedResponseHandler, *, should_close: bool = False) -> None:
        if protocol.transport is not None and protocol.transport.get_write_buffer_size():
            # The answer is complete while part of the request is still ours to send: the
            # upstream answered before reading it all, and whatever it makes of the rest (a
            # request of its own?) would come back as bytes nobody asked for.
            should_close = True
        super()._release(key, protocol, should_close=should_close)
        protocol.idle = True  # pooled, or closed just now: either way no byte may follow
