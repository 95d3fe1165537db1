"""RouteTable, driven directly: no mitmproxy, no sockets."""

from pathlib import Path

import pytest

from addons.errors import AmbassadorError
from addons.profile import parse_profile
from addons.routing import MAX_DECODINGS, RouteTable, check_no_dot_segments, join_path, names_ambassador


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


# Paths that read as a climb out of the prefix to some decoder on the way, and why.
CLIMBS = [
    ("/a/%25252e%25252e/x", "percent-encoded three times over"),
    ("/a/%2525252e%2525252e/x", "four times over"),
    ("/a/%c0%ae%c0%ae/x", "overlong UTF-8 dots"),
    ("/a/%C0%AE./x", "overlong dot beside a plain one"),
    ("/a/%e0%80%ae%e0%80%ae/x", "three-byte overlong dots"),
    ("/a/%25c0%25ae%25c0%25ae/x", "overlong UTF-8, encoded again"),
    ("/a/\uff0e\uff0e/x", "fullwidth dots, as mitmproxy hands raw UTF-8 over"),
    ("/a/%ef%bc%8e%ef%bc%8e/x", "fullwidth dots, percent-encoded"),
    ("/a/%25ef%25bc%258e./x", "a fullwidth dot encoded twice, and a plain one"),
    ("/a/..\uff0fx", "a fullwidth solidus after '..'"),
    ("/a/\ufe52\ufe52/x", "small full stops"),
    ("/a/..%00/x", "NUL cut"),
    ("/a/..%2500/x", "NUL cut, encoded twice"),
    ("/a/.%00./x", "a NUL inside"),
    ("/a/%2e%252e%5c..%c0%ae;x/y", "a mix"),
    ("/a/..%ef%bc%bcx", "a fullwidth backslash"),
    ("/a/x%00", "NUL anywhere"),
    ("/a/%" + "25" * MAX_DECODINGS + "2e/x", "encoded deeper than anyone decodes"),
]


@pytest.mark.parametrize("path", [p for p, _ in CLIMBS], ids=[why for _, why in CLIMBS])
def test_every_reading_of_a_climb_is_refused(path):
    with pytest.raises(AmbassadorError) as e:
        check_no_dot_segments(path)
    assert (e.value.reason, e.value.status) == ("bad_request", 400)
    with pytest.raises(AmbassadorError):
        ROUTES.for_proxy(ROUTES.for_host("billing.internal", 80), path)


@pytest.mark.parametrize("path", [
    "/a/b", "/a/file..txt", "/a/%41%42", "/a/caf%c3%a9", "/a/caf\u00e9", "/a/%2541", "/a/...", "/a/.hidden",
    "/a/\uff0e\uff0e\uff0ex", "/a/%e9t%e9", "/a/b?x=../..",
])
def test_paths_that_climb_nowhere_pass(path):
    check_no_dot_segments(path)


def test_a_path_encoded_as_deep_as_allowed_passes():
    check_no_dot_segments("/a/%" + "25" * (MAX_DECODINGS - 1) + "41")  # MAX_DECODINGS rounds to "A"


def test_names_of_the_ambassador_itself():
    listener, allowed = ("127.0.0.1", 8080), frozenset({"ambassador.internal"})
    for host in ("127.0.0.1", "localhost", "LocalHost.", "app.localhost", "::1", "127.9.9.9"):
        assert names_ambassador(host, 8080, listener, allowed), host
        assert not names_ambassador(host, 80, listener, allowed), host  # a proxy request elsewhere
    assert names_ambassador("Ambassador.Internal", 9000, listener, allowed)  # behind a port mapping
    assert names_ambassador("10.0.0.5", 8080, ("10.0.0.5", 8080), frozenset())  # its listen address
    for host in ("attacker.example", "ambassador.internal.attacker.example", "10.0.0.5", "0.0.0.0"):
        assert not names_ambassador(host, 8080, listener, allowed), host
