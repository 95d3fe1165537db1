"""RouteTable, driven directly: no mitmproxy, no sockets."""

from pathlib import Path

import pytest

from addons.errors import AmbassadorError
from addons.profile import parse_profile
from addons.routing import RouteTable, join_path


def table(upstreams: dict) -> RouteTable:
    return RouteTable(parse_profile({"upstreams": upstreams}, Path("/tmp/p.yaml")))


ROUTES = table(
    {
        "billing": {"url": "https://partner.example.com/v2", "match": {"path_prefix": "/billing", "host": "billing.internal"}},
        "reports": {"url": "http://reports.example.com/r/", "match": {"path_prefix": "/billing/reports/"}},
        "fallback": {"url": "http://legacy.example.com", "match": {"path_prefix": "/"}},
        "pinned": {"url": "http://pinned.example.com", "match": {"host": "pinned.internal:8443"}},
    }
)


@pytest.mark.parametrize(
    "path, upstream, upstream_path",
    [
        ("/billing", "billing", "/v2"),
        ("/billing/", "billing", "/v2/"),
        ("/billing/x/y?a=1&b=%20", "billing", "/v2/x/y?a=1&b=%20"),
        ("/billing?a=1", "billing", "/v2?a=1"),
        ("/billing/reports", "reports", "/r"),
        ("/billing/reports/q1?x", "reports", "/r/q1?x"),
        ("/billingx", "fallback", "/billingx"),
        ("/", "fallback", "/"),
        ("/other/path", "fallback", "/other/path"),
    ],
)
def test_longest_whole_segment_prefix_wins(path, upstream, upstream_path):
    route = ROUTES.for_path(path)
    assert (route.upstream.name, route.path) == (upstream, upstream_path)


def test_no_route_without_a_catch_all():
    routes = table({"a": {"url": "http://a.example", "match": {"path_prefix": "/a"}}})
    with pytest.raises(AmbassadorError) as e:
        routes.for_path("/b")
    assert (e.value.reason, e.value.status) == ("no_route", 404)


@pytest.mark.parametrize("path", ["/billing/../x", "/billing/%2E%2E/x", "/billing/%252e%252e/x", "/billing/.", "/billing/..%5cx"])
def test_dot_segments_are_refused(path):
    with pytest.raises(AmbassadorError) as e:
        ROUTES.for_path(path)
    assert e.value.reason == "bad_request"


def test_dots_inside_names_are_fine():
    assert ROUTES.for_path("/billing/file..txt").path == "/v2/file..txt"


def test_host_match_ignores_case_and_port_unless_pinned():
    assert ROUTES.for_host("Billing.Internal", 80).name == "billing"
    assert ROUTES.for_host("billing.internal", 8080).name == "billing"
    assert ROUTES.for_host("pinned.internal", 8443).name == "pinned"
    assert ROUTES.for_host("pinned.internal", 80) is None
    assert ROUTES.for_host("evil.example", 80) is None


def test_proxy_path_is_appended_to_the_base_path():
    billing = ROUTES.for_host("billing.internal", 80)
    assert ROUTES.for_proxy(billing, "/").path == "/v2"
    assert ROUTES.for_proxy(billing, "/?q=1").path == "/v2?q=1"
    assert ROUTES.for_proxy(billing, "/inv/1").path == "/v2/inv/1"


def test_join_path():
    assert join_path("", "") == "/"
    assert join_path("", "?q") == "/?q"
    assert join_path("/v2", "") == "/v2"
    assert join_path("/v2", "/a") == "/v2/a"
