"""Fast checks of what `operations.Exchange` makes of a flow's notes: the mitmweb comment and
marker, and the log line (the e2e tests show them through the real ambassador)."""

import pytest
from mitmproxy.test import tflow

from addons.operations import DEGRADED_MARKER, ERROR_MARKER, REPLAY_MARKER, Exchange


def answered(status: int = 200, path: str = "/billing/x", **notes):
    flow = tflow.tflow(resp=True)
    flow.request.path = path
    flow.response.status_code = status
    flow.request.timestamp_start = 100.0
    if notes:
        flow.metadata["ambassador"] = notes
    return flow


def test_everything_the_stages_noted():
    flow = answered(
        upstream="billing", cache="MISS", breaker="closed", attempts=2, auth="oauth2",
        shown_headers={"Authorization": "Bearer [redacted]"},
    )
    exchange = Exchange.of(flow, now=100.25)
    assert exchange.comment() == (
        "upstream billing · cache MISS · breaker closed · attempts 2 · auth oauth2 (Authorization: Bearer [redacted])"
    )
    assert exchange.marker() == DEGRADED_MARKER  # it took a retry
    assert exchange.log_line() == "billing GET /billing/x 200 cache=MISS attempts=2 250ms"


@pytest.mark.parametrize(
    "status, notes, marker",
    [
        (200, {"upstream": "billing"}, ""),
        (200, {"upstream": "billing", "cache": "HIT", "attempts": 1, "breaker": "closed"}, ""),
        (200, {"upstream": "billing", "cache": "STALE"}, DEGRADED_MARKER),
        (200, {"upstream": "billing", "breaker": "half-open"}, DEGRADED_MARKER),
        (503, {"upstream": "billing", "breaker": "open", "reason": "circuit_open"}, ERROR_MARKER),
        (504, {"upstream": "billing", "reason": "timeout"}, ERROR_MARKER),
    ],
)
def test_marker_flags_what_is_unusual(status, notes, marker):
    assert Exchange.of(answered(status, **notes), now=101).marker() == marker


def test_own_answer_is_named_in_comment_and_log():
    exchange = Exchange.of(answered(503, upstream="billing", breaker="open", reason="circuit_open"), now=100.002)
    assert exchange.comment() == "upstream billing · answered by the ambassador: circuit_open · breaker open"
    assert exchange.log_line() == "billing GET /billing/x 503 cache=- attempts=- reason=circuit_open 2ms"


def test_flow_without_upstream():
    exchange = Exchange.of(answered(404, path="/nowhere"), now=100.001)
    assert exchange.upstream is None
    assert exchange.comment() == "no upstream"
    assert exchange.log_line() == "- GET /nowhere 404 cache=- attempts=- 1ms"


def test_replayed_flow_takes_its_upstream_from_the_recorded_answer():
    flow = answered(200)
    flow.is_replay = "response"
    flow.response.headers["X-Ambassador-Upstream"] = "partner"
    exchange = Exchange.of(flow, now=100.003)
    assert exchange.upstream == "partner"
    assert exchange.comment() == "upstream partner · replayed from recording"
    assert exchange.marker() == REPLAY_MARKER
    assert exchange.log_line() == "partner GET /billing/x 200 cache=- attempts=- replayed 3ms"


def test_a_request_that_waited_for_the_limit_says_how_long():
    exchange = Exchange.of(answered(upstream="billing", attempts=1, waited=1.234), now=101.5)
    assert exchange.comment() == "upstream billing · attempts 1 · waited 1.23s for the limit"


def test_a_refusal_carries_its_reason_to_the_comment_and_the_marker():
    """Refusals made before any upstream (the client gate, routing, admin endpoints) are
    rendered by `refuse`, which keeps the reason on the flow."""
    from addons.answers import refuse
    from addons.errors import AmbassadorError

    flow = tflow.tflow()
    refuse(flow, AmbassadorError("not_allowed", "Origin https://evil.example is not in allowed_origins"))
    assert flow.response.status_code == 403
    exchange = Exchange.of(flow, flow.request.timestamp_start)
    assert exchange.reason == "not_allowed" and exchange.marker() == ERROR_MARKER
    assert "answered by the ambassador: not_allowed" in exchange.comment()
