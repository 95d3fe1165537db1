"""Fixtures shared by the tests (the helpers themselves are modules beside this file:
harness.py, redis_server.py, oauth_fakes.py, webui.py, ...)."""

import pytest

from redis_server import RedisServer


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    """A real, throw-away redis-server for the tests of one module (redis.url)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
