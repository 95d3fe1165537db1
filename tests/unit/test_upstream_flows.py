"""The pure parts behind the stock tools: sidecar defaults, child flows of upstream exchanges,
the flow list's admin filter and replay's index of recorded exchanges."""

import time

import pytest
from mitmproxy import http
from mitmproxy.test import tflow
from multidict import CIMultiDict

from addons.defaults import bound_to, sidecar_changes
from addons.exchange import UpstreamExchange, UpstreamRequest, UpstreamResponse
from addons.flow_list import HIDE_ADMIN_FLOWS, view_filter_for
from addons.replay import Recording
from addons.upstream_flows import EXCHANGE_MARKER, FAILED_MARKER, child_flow, describe, marker, wanted

SECRET = "s3cr3t-token"


def redact(text: str) -> str:
    return text.replace(SECRET, "[redacted]")


def exchange(status: int | None = 200, kind: str = "try", error: str | None = None, body: bytes = b"{}") -> UpstreamExchange:
    now = time.time()
    response = UpstreamResponse(status, "OK", CIMultiDict({"Content-Type": "application/json", "X-Echo": SECRET}), body) if status else None
    return UpstreamExchange(
        kind, "billing", "GET", f"https://partner.example:8443/v2/invoices?key={SECRET}",
        CIMultiDict({"Authorization": f"Bearer {SECRET}"}), b"", now, now + 0.05, response, error,
    )


@pytest.mark.parametrize(
    "current, changed",
    [
        ({"listen_host": "", "connection_strategy": "eager", "body_size_limit": None, "flow_detail": 1},
         {"listen_host": "127.0.0.1", "connection_strategy": "lazy", "body_size_limit": "64m", "flow_detail": 0}),
        ({"listen_host": "0.0.0.0", "connection_strategy": "eager"}, {"connection_strategy": "lazy"}),  # the user's host stays
        ({"body_size_limit": "1g"}, {}),
        ({}, {}),  # a tool without these options
    ],
)
def test_sidecar_defaults_change_only_what_is_still_mitmproxys_default(current, changed):
    assert sidecar_changes(current) == changed


def test_a_listener_counts_as_moved_only_when_every_address_is_the_host():
    assert bound_to((("127.0.0.1", 8080),), "127.0.0.1")
    assert not bound_to((("0.0.0.0", 8080),), "127.0.0.1")
    assert not bound_to((("127.0.0.1", 8080), ("::", 8080)), "127.0.0.1")
    assert not bound_to((), "127.0.0.1")


@pytest.mark.parametrize(
    "mode, flow_list, saving, made",
    [("auto", False, False, False), ("auto", True, False, True), ("auto", False, True, True), ("on", False, False, True), ("off", True, True, False)],
)
def test_child_flows_are_made_where_someone_can_see_or_keep_them(mode, flow_list, saving, made):
    assert wanted(mode, flow_list, saving) is made


def test_a_child_flow_is_the_exchange_as_sent_with_every_secret_redacted():
    client = tflow.tflow()
    child = child_flow(exchange(body=f'{{"token": "{SECRET}"}}'.encode()), redact, client)
    assert not child.live
    assert child.request.url == "https://partner.example:8443/v2/invoices?key=[redacted]"
    assert child.request.headers["Authorization"] == "Bearer [redacted]"
    assert child.response.status_code == 200
    assert child.response.headers["X-Echo"] == "[redacted]"
    assert child.response.content == b'{"token": "[redacted]"}'
    assert child.server_conn.address == ("partner.example", 8443)
    assert child.client_conn.peername == client.client_conn.peername
    assert SECRET not in repr(child.get_state())


def test_a_failed_exchange_is_a_child_flow_with_its_error():
    child = child_flow(exchange(status=None, error="upstream billing did not answer within 2s"), redact, None)
    assert child.response is None and child.error.msg == "upstream billing did not answer within 2s"
    assert marker(exchange(status=None, error="x")) == FAILED_MARKER
    assert marker(exchange(status=503)) == FAILED_MARKER
    assert marker(exchange(status=404)) == EXCHANGE_MARKER


def test_the_comment_says_what_the_exchange_was_first():
    assert describe(exchange(status=503), 1, "abc").startswith("upstream billing · try 1: 503 · ")
    assert describe(exchange(status=503), 1, "abc").endswith(" · for client flow abc")
    assert describe(exchange(kind="token"), 0, None).startswith("upstream billing · token fetch: 200")


@pytest.mark.parametrize(
    "show, current, result",
    [(False, None, HIDE_ADMIN_FLOWS), (False, "~d example.com", "~d example.com"), (True, HIDE_ADMIN_FLOWS, None), (True, "~m GET", "~m GET")],
)
def test_admin_flows_are_hidden_unless_shown_or_the_user_filters_the_view_himself(show, current, result):
    assert view_filter_for(show, current) == result


def recorded(upstream: str, path: str, status: int, kind: str = "try", body: bytes = b"") -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request.method = "GET"
    flow.request.content = body
    flow.response.status_code = status
    flow.response.content = f"{upstream} {path} {status}".encode()
    flow.metadata["ambassador"] = {"upstream": upstream, "exchange": kind, "upstream_path": path}
    return flow


def test_replay_answers_each_exchange_from_the_last_recorded_try_of_the_same_upstream():
    client = tflow.tflow(resp=True)
    client.metadata["ambassador"] = {"upstream": "billing", "upstream_url": "http://x/v2/a"}
    recording = Recording.of([
        client,  # a client's flow: not an exchange
        recorded("billing", "/v2/a", 503),
        recorded("billing", "/v2/a", 200),  # the retry: the answer that was used
        recorded("billing", "/v2/a", 200, kind="token"),
        recorded("orders", "/v2/a", 200),
    ])
    request = UpstreamRequest("GET", "/v2/a", CIMultiDict())
    assert recording.answer("billing", request).body == b"billing /v2/a 200"
    assert recording.answer("orders", request).body == b"orders /v2/a 200"
    assert recording.answer("prices", request) is None  # one upstream's recording never answers another
    assert recording.answer("billing", UpstreamRequest("GET", "/v2/a", CIMultiDict(), body=b"x")) is None
    assert recording.answer("billing", UpstreamRequest("POST", "/v2/a", CIMultiDict())) is None
