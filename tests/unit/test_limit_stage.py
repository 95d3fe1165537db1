"""LimitStage driven directly: a started request keeps its place in the bucket until the
transport writes it to the wire."""

import asyncio
import time
from pathlib import Path

from multidict import CIMultiDict

from addons.exchange import UpstreamRequest, UpstreamResponse
from addons.gateway import Gateway
from addons.limit import LimitStage
from addons.profile import LimitPolicy, parse_profile
from addons.transport import request_written
from harness import FakeUpstream, Reply


def test_the_transport_tells_when_the_request_is_written():
    with FakeUpstream(lambda req: Reply(200, body=b"ok")) as up:
        document = {"upstreams": {"app": {"url": up.url, "match": {"path_prefix": "/app"}}}}
        service = Gateway(parse_profile(document, Path("/tmp/p.yaml"))).services["app"]
        told = []

        async def call():
            request_written.set(lambda: told.append(len(up.received)))
            try:
                return await service.handle(UpstreamRequest("GET", "/x", CIMultiDict()))
            finally:
                await service.close()

        assert asyncio.run(call()).status == 200
    assert told == [0]  # as it was written, before the upstream had it


def test_a_request_slow_to_reach_the_wire_holds_its_place():
    """Burst 1: the first request takes 200 ms to be written (a connection opening on a busy
    loop); the second may start only a rate interval after that write, not after its start."""
    stage = LimitStage("app", LimitPolicy(rate=10.0, burst=1, max_wait=5.0), lambda request: time.monotonic() + 5)
    written_at = {}

    async def transport(request: UpstreamRequest, delay: float) -> UpstreamResponse:
        await asyncio.sleep(delay)
        request_written.get()()
        written_at[request.path] = time.monotonic()
        return UpstreamResponse(200, "OK", CIMultiDict())

    async def both():
        first = asyncio.create_task(stage(UpstreamRequest("GET", "/1", CIMultiDict()), lambda r: transport(r, 0.2)))
        await asyncio.sleep(0.01)
        await stage(UpstreamRequest("GET", "/2", CIMultiDict()), lambda r: transport(r, 0.0))
        await first

    asyncio.run(both())
    assert written_at["/2"] - written_at["/1"] >= 0.095
