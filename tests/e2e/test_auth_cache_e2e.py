"""Stages together: an injected credential must not stop the cache from storing, and query
auth must not hide the URI an unsafe method invalidates (stages never change the request
that outer stages look at)."""

import pytest

from harness import Ambassador, FakeUpstream, Reply
from profiles import profile, upstream


def origin(req):
    if req.method == "PUT":
        return Reply(204)
    return Reply.json({"path": req.path}, headers=[("Cache-Control", "max-age=60")])


@pytest.fixture(scope="module")
def amb(tmp_path_factory):
    with FakeUpstream(origin) as up:
        cached = profile(
            upstream("bearer", up.url, path_prefix="/bearer", auth={"type": "bearer", "token": "s3cret-token"}, cache={}),
            upstream(
                "query", up.url, path_prefix="/query", auth={"type": "query", "name": "api_key", "value": "s3cret-key"}, cache={},
            ),
        )
        with Ambassador(tmp_path_factory.mktemp("authcache"), cached) as a:
            yield a, up


def x_cache(amb, path, method="GET"):
    status, headers, _ = amb.request(method, path)
    return status, headers["X-Cache"]


def test_injected_credentials_do_not_stop_caching(amb):
    a, up = amb
    assert x_cache(a, "/bearer/item") == (200, "MISS")
    assert x_cache(a, "/bearer/item") == (200, "HIT")
    assert up.received[-1].header("Authorization") == "Bearer s3cret-token"


def test_unsafe_method_invalidates_with_query_auth(amb):
    a, up = amb
    assert x_cache(a, "/query/item") == (200, "MISS")
    assert x_cache(a, "/query/item") == (200, "HIT")
    assert up.received[-1].path == "/item?api_key=s3cret-key"
    assert a.request("PUT", "/query/item", body=b"{}")[0] == 204
    assert x_cache(a, "/query/item") == (200, "MISS")
