"""Batch parsing, per-item decisions and the answer's total bound as plain Python (the
endpoint itself: test_batch_e2e.py)."""

import json
from pathlib import Path

import pytest

from addons.batch import AnswerBudget, BatchItem, parse_batch
from addons.errors import AmbassadorError
from addons.profile import parse_profile
from addons.routing import RouteTable


def test_item_bodies_are_taken_from_the_budget_until_it_is_used_up():
    budget = AnswerBudget(total=10)
    budget.take(6, "a")
    budget.take(4, "b")  # exactly the total
    with pytest.raises(AmbassadorError) as refused:
        budget.take(1, "c")
    error = refused.value
    assert (error.status, error.reason, error.upstream) == (502, "too_large", "c")
    assert "10 bytes" in error.message and "body_size_limit" in error.message
    assert budget.left == 0



def routes() -> RouteTable:
    profile = parse_profile(
        {
            "upstreams": {
                "crm": {"url": "http://127.0.0.1:9/v1", "match": {"path_prefix": "/crm"}},
                "billing": {"url": "http://127.0.0.1:9/v2", "match": {"host": "billing.internal"}},
                "ledger": {"url": "http://127.0.0.1:9", "match": {"host": "ledger.internal:8443"}},
            }
        },
        Path("/tmp/p.yaml"),
    )
    return RouteTable(profile)


def parse(*items) -> list:
    return parse_batch(json.dumps(items).encode(), routes())


@pytest.mark.parametrize("body, problem", [
    (b"{not json", "not valid JSON"),
    (b'{"path": "/crm/x"}', "JSON list"),
    (json.dumps([{"path": "/crm/x"}, "GET /crm/y"]).encode(), "batch item 1 must be an object"),
    (json.dumps([{"path": "/crm/x"}, None]).encode(), "batch item 1 must be an object"),
    (json.dumps([{"path": "/crm/x"}] * 101).encode(), "at most 100"),
    (json.dumps([{"path": "/crm/x", "body": "x" * (1024 * 1024)}]).encode(), "at most 1048576 bytes"),
    (b"[" * 100000, "not valid JSON"),
])
def test_only_what_is_no_batch_is_refused_whole(body, problem):
    with pytest.raises(AmbassadorError) as refused:
        parse_batch(body, routes())
    assert refused.value.reason == "bad_request" and problem in refused.value.message


def test_items_by_path_and_by_url_are_routed_like_requests_through_those_doors():
    by_path, by_url, by_https_url, with_port, bare_host = parse(
        {"method": "post", "path": "/crm/contacts?x=1", "body": {"a": 1}},
        {"url": "http://billing.internal/invoices?y=2#frag"},
        {"url": "https://BILLING.internal/invoices/1"},
        {"url": "https://ledger.internal:8443/entries"},
        {"url": "http://billing.internal"},
    )
    assert (by_path.route.upstream.name, by_path.request.method, by_path.request.path) == ("crm", "POST", "/v1/contacts?x=1")
    assert by_path.request.body == b'{"a": 1}' and by_path.request.headers["Content-Type"] == "application/json"
    assert (by_url.route.upstream.name, by_url.request.path) == ("billing", "/v2/invoices?y=2")
    assert (by_https_url.route.upstream.name, by_https_url.request.path) == ("billing", "/v2/invoices/1")
    assert (with_port.route.upstream.name, with_port.request.path) == ("ledger", "/entries")
    assert bare_host.request.path == "/v2"


# Each problem is the answer in its item's slot: (status, reason, text in the error, upstream).
@pytest.mark.parametrize("item, status, reason, problem, upstream", [
    ({"path": "/nowhere/x"}, 404, "no_route", "no upstream serves /nowhere/x", None),
    ({"url": "http://evil.example/x"}, 403, "not_allowed", "no upstream matches evil.example:80", None),
    ({"url": "http://ledger.internal/x"}, 403, "not_allowed", "ledger.internal:80", None),  # its match.host names port 8443
    ({"url": "http://billing.internal@evil.example/x"}, 400, "bad_request", "user or password", None),
    ({"url": "http://billing.internal:99999/x"}, 400, "bad_request", "http:// or https://", None),
    ({"url": "http://billing.internal:x/x"}, 400, "bad_request", "http:// or https://", None),
    ({"url": "http://[::1/x"}, 400, "bad_request", "http:// or https://", None),
    ({"url": "http://billing.internal\uff0fevil.example/x"}, 400, "bad_request", "http:// or https://", None),
    ({"url": "http:///x"}, 400, "bad_request", "http:// or https://", None),
    ({"url": "ftp://billing.internal/x"}, 400, "bad_request", "http:// or https://", None),
    ({"url": "/crm/x"}, 400, "bad_request", "http:// or https://", None),
    ({"url": "http://billing.internal/x\r\nX-Injected: 1"}, 400, "bad_request", "url must be", None),
    ({"url": 7}, 400, "bad_request", "url must be", None),
    ({"url": "http://billing.internal/x", "path": "/crm/x"}, 400, "bad_request", "not both", None),
    ({"url": "http://billing.internal/a/%2e%2e/b"}, 400, "bad_request", "'..'", None),
    ({"url": "http://billing.internal/_ambassador/status"}, 400, "bad_request", "cannot be batched", None),
    ({"method": "BREW", "path": "/crm/x"}, 400, "bad_request", "method must be one of", None),
    ({"method": ["GET"], "path": "/crm/x"}, 400, "bad_request", "method must be one of", None),
    ({"method": "trace", "path": "/crm/x"}, 405, "method_not_allowed", "TRACE is not allowed", None),
    ({"method": "TRACK", "path": "/crm/x"}, 405, "method_not_allowed", "TRACK is not allowed", None),
    ({"method": "GET"}, 400, "bad_request", "got neither", None),
    ({"path": None}, 400, "bad_request", "path must be", None),
    ({"path": "crm/x"}, 400, "bad_request", "path must be", None),
    ({"path": "/crm/x\r\nX-Injected: 1"}, 400, "bad_request", "path must be", None),
    ({"path": "/crm/../billing/x"}, 400, "bad_request", "'..'", None),
    ({"path": "/crm/%252e%252e/x"}, 400, "bad_request", "'..'", None),
    ({"path": "/crm/%c0%ae%c0%ae/x"}, 400, "bad_request", "overlong UTF-8", None),
    ({"path": "/_ambassador/batch"}, 400, "bad_request", "cannot be batched", None),
    ({"path": "/crm/x", "headers": {"X-A": "1\r\nX-B: 2"}}, 400, "bad_request", "header 'X-A'", None),
    ({"path": "/crm/x", "headers": {"bad name": "1"}}, 400, "bad_request", "header 'bad name'", None),
    ({"path": "/crm/x", "headers": {"X-A": 1}}, 400, "bad_request", "header 'X-A'", None),
    ({"path": "/crm/x", "headers": ["X-A", "1"]}, 400, "bad_request", "headers must be an object", None),
    ({"path": "/crm/x", "headers": {"X-A": "\u20ac"}}, 400, "bad_request", "ISO-8859-1", None),
    ({"path": "/crm/x", "body": "\ud800"}, 400, "bad_request", "lone surrogate", None),
    ({"path": "/crm/x", "body": {"a": 1}, "headers": {"content-type": "text/plain"}}, 400, "bad_request", "JSON Content-Type", None),
    ({"path": "/crm/x", "header": {}}, 400, "bad_request", "unknown keys ['header']", None),
    ({"path": "/crm/x", "headers": {"X-Ambassador-Timeout": "soon"}}, 400, "bad_request", "X-Ambassador-Timeout", "crm"),
])
def test_a_bad_item_is_its_own_slots_error_and_the_others_still_parse(item, status, reason, problem, upstream):
    first, bad, last = parse({"path": "/crm/a"}, item, {"url": "http://billing.internal/b"})
    assert isinstance(bad, AmbassadorError)
    assert (bad.status, bad.reason, bad.upstream) == (status, reason, upstream)
    assert problem in bad.message
    assert isinstance(first, BatchItem) and isinstance(last, BatchItem)


def test_a_json_body_keeps_a_json_content_type_the_item_gives():
    (item,) = parse({"path": "/crm/x", "body": [1], "headers": {"Content-Type": "application/merge-patch+json"}})
    assert item.request.headers["Content-Type"] == "application/merge-patch+json" and item.request.body == b"[1]"
