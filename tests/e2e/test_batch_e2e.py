"""`POST /_ambassador/batch` through the real ambassador."""

import json
import time

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply, echo
from profiles import profile, upstream

DELAY = 0.6


def slow_echo(req: Received) -> Reply:
    reply = echo(req)
    reply.delay = DELAY if "slow" in req.path else 0
    if "fail" in req.path:
        return Reply(500, [("Content-Type", "text/plain")], b"broken")
    return reply


@pytest.fixture(scope="module")
def upstreams():
    with FakeUpstream(slow_echo) as billing, FakeUpstream(echo) as crm:
        yield {"billing": billing, "crm": crm}


@pytest.fixture(scope="module")
def amb(upstreams, tmp_path_factory):
    batching = profile(
        upstream("billing", f"{upstreams['billing'].url}/v2", path_prefix="/billing"),
        upstream("crm", upstreams["crm"].url, path_prefix="/crm", timeout="300ms"),
        upstream("dead", "http://127.0.0.1:1", path_prefix="/dead"),
        upstream(
            "partner", f"{upstreams['crm'].url}/partner", path_prefix="/partner",
            auth={"type": "header", "name": "X-Api-Key", "value": "partner-key"},
        ),
        upstream("ledger", f"{upstreams['crm'].url}/books", host="ledger.internal"),
    )
    with Ambassador(tmp_path_factory.mktemp("batch"), batching) as a:
        yield a


def batch(amb, items) -> tuple[int, object]:
    body = items if isinstance(items, bytes) else json.dumps(items).encode()
    status, _, raw = amb.request("POST", "/_ambassador/batch", {"Content-Type": "application/json"}, body)
    return status, json.loads(raw)


def contacts(upstreams) -> int:
    return sum(len(u.received) for u in upstreams.values())


def test_items_run_concurrently_through_routing_and_answer_in_order(amb):
    items = [{"method": "GET", "path": f"/billing/slow/{n}?q={n}", "headers": {"X-Trace": str(n)}, "body": None} for n in range(5)]
    items.append({"method": "POST", "path": "/crm/contacts", "headers": {"Content-Type": "text/plain"}, "body": "hello"})
    items.append({"method": "put", "path": "/crm/contacts/1", "body": {"name": "Ada"}})
    started = time.monotonic()
    status, answers = batch(amb, items)
    elapsed = time.monotonic() - started
    assert status == 200
    assert len(answers) == len(items)
    for n in range(5):
        assert answers[n]["status"] == 200
        assert answers[n]["headers"]["X-Ambassador-Upstream"] == "billing"
        assert "Content-Length" not in answers[n]["headers"]  # it described the body on the wire
        assert answers[n]["body"]["path"] == f"/v2/slow/{n}?q={n}"
        assert ["X-Trace", str(n)] in answers[n]["body"]["headers"]
    assert answers[5]["body"]["method"] == "POST" and answers[5]["body"]["body"] == "hello"
    put = answers[6]["body"]
    assert put["method"] == "PUT" and json.loads(put["body"]) == {"name": "Ada"}
    assert ["Content-Type", "application/json"] in put["headers"]
    assert elapsed < 3 * DELAY, elapsed  # five slow items, one after another, would take 3 s


def test_failures_are_answered_per_item(amb):
    status, answers = batch(amb, [
        {"path": "/billing/fail"},
        {"path": "/dead/x"},
        {"path": "/crm/ok"},
    ])
    assert status == 200
    assert answers[0]["status"] == 500 and answers[0]["body"] == "broken"
    assert answers[1]["status"] == 502
    assert answers[1]["body"]["reason"] == "connect_error" and answers[1]["body"]["upstream"] == "dead"
    assert answers[2]["status"] == 200


def test_an_empty_batch_is_an_empty_answer(amb):
    assert batch(amb, []) == (200, [])


@pytest.mark.parametrize("body, problem", [
    (b"{not json", "not valid JSON"),
    (b'{"path": "/crm/x"}', "JSON list"),
    (json.dumps([{"path": "/crm/x"}, "GET /crm/y"]).encode(), "item 1"),
    (json.dumps([{"path": "/crm/x"}] * 101).encode(), "at most 100"),
    (json.dumps([{"path": "/crm/x", "body": "x" * (1024 * 1024)}]).encode(), "at most 1048576 bytes"),
    (b"[" * 100000, "not valid JSON"),
])
def test_what_is_no_batch_is_refused_whole_without_upstream_contact(amb, upstreams, body, problem):
    before = contacts(upstreams)
    status, answer = batch(amb, body)
    assert status == 400, answer
    assert answer["reason"] == "bad_request"
    assert problem in answer["error"]
    assert contacts(upstreams) == before


def test_bad_items_are_answered_in_their_slots_and_the_others_run(amb, upstreams):
    """The per-item decisions are unit-tested (test_batch.py); here: they reach the client in
    their slots, unsent, while the good items around them are sent."""
    before = len(upstreams["crm"].received)
    bad_items = [
        {"path": "/nowhere/x"},
        {"url": "http://evil.example/x"},
        {"method": "TRACE", "path": "/crm/x"},
        {"method": "BREW", "path": "/crm/x"},
        {"path": "/crm/../billing/x"},
        {"path": "/crm/x", "headers": {"X-A": "1\r\nX-B: 2"}},
        {"path": "/crm/x", "body": {"a": 1}, "headers": {"Content-Type": "text/plain"}},
        {"path": "/crm/x", "url": "http://crm.internal/x"},
        {"path": "/crm/x", "headers": {"X-Ambassador-Timeout": "soon"}},
    ]
    status, answers = batch(amb, [{"path": "/crm/first"}, *bad_items, {"path": "/crm/last"}])
    assert status == 200
    assert [a["status"] for a in answers] == [200, 404, 403, 405, 400, 400, 400, 400, 400, 400, 200]
    assert answers[1]["body"] == {"error": "no upstream serves /nowhere/x", "reason": "no_route", "upstream": None}
    assert answers[1]["headers"] == {"Content-Type": "application/json"}  # no upstream was chosen
    assert answers[2]["body"]["reason"] == "not_allowed" and "evil.example:80" in answers[2]["body"]["error"]
    assert answers[3]["body"]["reason"] == "method_not_allowed"
    assert "'..'" in answers[5]["body"]["error"] and "header 'X-A'" in answers[6]["body"]["error"]
    assert "not both" in answers[8]["body"]["error"]
    assert answers[9]["body"]["upstream"] == "crm" and answers[9]["headers"]["X-Ambassador-Upstream"] == "crm"
    assert answers[10]["body"]["path"] == "/last"
    sent = [r.path for r in upstreams["crm"].received[before:]]
    assert sorted(sent) == ["/first", "/last"]


def test_items_by_url_reach_match_host_upstreams(amb, upstreams):
    status, answers = batch(amb, [
        {"url": "http://ledger.internal/entries?page=2", "headers": {"X-Trace": "1"}},
        {"method": "POST", "url": "https://LEDGER.internal/entries", "body": {"amount": 5}},
        {"url": "http://ledger.internal:8080/x"},  # its match.host names no port: any port
        {"url": "http://billing.internal/x"},  # billing is matched by path_prefix only
    ])
    assert status == 200
    assert [a["status"] for a in answers[:3]] == [200, 200, 200]
    assert {a["headers"]["X-Ambassador-Upstream"] for a in answers[:3]} == {"ledger"}
    assert answers[0]["body"]["path"] == "/books/entries?page=2"
    assert ["X-Trace", "1"] in answers[0]["body"]["headers"]
    assert answers[1]["body"]["method"] == "POST" and json.loads(answers[1]["body"]["body"]) == {"amount": 5}
    assert answers[2]["body"]["path"] == "/books/x"
    assert answers[3]["status"] == 403 and answers[3]["body"]["reason"] == "not_allowed"


def test_batch_answers_post_only(amb):
    status, _, raw = amb.get("/_ambassador/batch")
    assert status == 400 and json.loads(raw)["reason"] == "bad_request"


def test_item_timeout_override_and_upstream_timeout(amb, upstreams):
    status, answers = batch(amb, [
        {"path": "/billing/slow/x", "headers": {"X-Ambassador-Timeout": "100ms"}},
        {"path": "/billing/quick"},
    ])
    assert status == 200
    assert answers[0]["status"] == 504 and answers[0]["body"]["reason"] == "timeout"
    assert answers[1]["status"] == 200
    sent = next(r for r in reversed(upstreams["billing"].received) if r.path == "/v2/slow/x")
    assert sent.header("X-Ambassador-Timeout") is None  # the ambassador's override, not forwarded


def test_items_get_their_upstreams_policies(amb, upstreams):
    status, answers = batch(amb, [{"path": "/partner/x", "headers": {"X-Api-Key": "client-key", "Accept-Encoding": "gzip"}}])
    assert status == 200
    sent = next(r for r in reversed(upstreams["crm"].received) if r.path == "/partner/x")
    assert sent.header_all("X-Api-Key") == ["partner-key"]
    assert sent.header("Accept-Encoding") is None  # bodies are embedded in the answer: identity only
    echoed = dict((k.lower(), v) for k, v in answers[0]["body"]["headers"])
    assert echoed["x-api-key"] == "[redacted]"  # the secret the upstream echoed never reaches the client
