"""UpstreamService driven directly: stages in order, deadline, offline (replay) mode."""

import asyncio
from pathlib import Path

import pytest
from multidict import CIMultiDict

from addons.errors import AmbassadorError
from addons.exchange import UpstreamRequest
from addons.gateway import Gateway
from addons.profile import parse_profile
from addons.replay import Recording
from harness import FakeUpstream, Reply


def gateway_for(url: str) -> Gateway:
    document = {"upstreams": {"app": {"url": url, "match": {"path_prefix": "/app"}, "timeout": "2s"}}}
    return Gateway(parse_profile(document, Path("/tmp/p.yaml")))


def test_a_replaying_service_never_contacts_its_upstream():
    with FakeUpstream(lambda req: Reply.json({})) as up:
        gateway = gateway_for(up.url)
        gateway.set_replay(Recording({}))

        async def call():
            try:
                await gateway.services["app"].handle(UpstreamRequest("GET", "/x", CIMultiDict()))
            finally:
                await gateway.services["app"].close()

        with pytest.raises(AmbassadorError) as e:
            asyncio.run(call())
        assert (e.value.reason, e.value.status) == ("not_recorded", 502)
        assert up.received == []


def test_client_timeout_only_shortens():
    gateway = gateway_for("http://127.0.0.1:9")
    service = gateway.services["app"]
    request = UpstreamRequest("GET", "/x", CIMultiDict(), timeout=0.5)
    assert service.deadline_of(request) == pytest.approx(request.started + 0.5)
    request = UpstreamRequest("GET", "/x", CIMultiDict(), timeout=60)
    assert service.deadline_of(request) == pytest.approx(request.started + 2)
