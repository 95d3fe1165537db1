"""Routing and the upstream exchange through the real ambassador."""

import json

import pytest

from harness import Ambassador, FakeUpstream, echo
from profiles import profile, upstream


@pytest.fixture(scope="module")
def upstreams():
    with FakeUpstream(echo) as billing, FakeUpstream(echo) as billing_v2, FakeUpstream(echo) as root:
        yield {"billing": billing, "billing_v2": billing_v2, "root": root}


@pytest.fixture(scope="module")
def amb(upstreams, tmp_path_factory):
    routes = profile(
        upstream("billing", f"{upstreams['billing'].url}/v2", path_prefix="/billing", host="billing.internal"),
        upstream("billing-reports", f"{upstreams['billing_v2'].url}/reports/", path_prefix="/billing/reports"),
        upstream("rooted", upstreams["root"].url, path_prefix="/root"),
    )
    with Ambassador(tmp_path_factory.mktemp("routing"), routes) as a:
        yield a


def test_path_prefix_is_replaced_by_the_base_path_and_query_kept(amb, upstreams):
    status, headers, body = amb.get("/billing/invoices/7?x=1&y=%20z")
    assert status == 200
    assert headers["X-Ambassador-Upstream"] == "billing"
    assert json.loads(body)["path"] == "/v2/invoices/7?x=1&y=%20z"


def test_longest_prefix_wins(amb):
    status, headers, body = amb.get("/billing/reports/q1")
    assert headers["X-Ambassador-Upstream"] == "billing-reports"
    assert json.loads(body)["path"] == "/reports/q1"


def test_prefix_matches_whole_segments_only(amb):
    status, _, body = amb.get("/billingfoo")
    assert status == 404
    assert json.loads(body) == {"error": "no upstream serves /billingfoo", "reason": "no_route", "upstream": None}


def test_bare_prefix_goes_to_the_base_path(amb):
    _, _, body = amb.get("/billing")
    assert json.loads(body)["path"] == "/v2"
    _, _, body = amb.get("/root?q=1")
    assert json.loads(body)["path"] == "/?q=1"


def test_proxy_request_for_a_matched_host(amb):
    status, headers, body = amb.request("GET", "http://billing.internal/invoices?id=3", {"Host": "billing.internal"})
    assert status == 200
    assert headers["X-Ambassador-Upstream"] == "billing"
    assert json.loads(body)["path"] == "/v2/invoices?id=3"


def test_proxy_request_for_another_host_is_refused_without_contact(amb, upstreams):
    before = sum(len(u.received) for u in upstreams.values())
    status, _, body = amb.request("GET", "http://evil.example/steal", {"Host": "evil.example"})
    assert status == 403
    assert json.loads(body)["reason"] == "not_allowed"
    status, _, body = amb.request("CONNECT", "evil.example:443", {"Host": "evil.example:443"})
    assert status == 403
    assert sum(len(u.received) for u in upstreams.values()) == before


def test_dot_segments_cannot_climb_out_of_the_prefix(amb, upstreams):
    for path in ("/billing/../admin", "/billing/%2e%2e/admin", "/billing/%252e%252e/admin", "/billing/a/..%2f..%2fx"):
        status, _, body = amb.get(path)
        assert status == 400, path
        assert json.loads(body)["reason"] == "bad_request"


def test_admin_prefix_is_reserved(amb):
    status, _, body = amb.get("/_ambassador/nope")
    assert status == 404 and json.loads(body)["reason"] == "no_route"


def test_status_lists_upstreams(amb):
    status = amb.status()
    assert status["profile"] == str(amb.profile_path.resolve())
    assert set(status["upstreams"]) == {"billing", "billing-reports", "rooted"}
    assert status["upstreams"]["billing"]["url"].endswith("/v2")
