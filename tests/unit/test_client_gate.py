"""The client gate's decision over plain data, and its hook on a flow."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mitmproxy.test import taddons, tflow

from addons.client_gate import Arrival, ClientGate, refusal
from addons.gateway import Gateway
from addons.profile import load_profile
from profiles import profile, upstream

LISTENER = ("127.0.0.1", 8080)
ORIGINS = frozenset({"https://app.example.com", "http://localhost:3000"})
HOSTS = frozenset({"ambassador.internal"})


def arrival(**changes) -> Arrival:
    """A curl-like request for the ambassador itself; `changes` make it something else."""
    base = Arrival(
        method="GET", scheme="http", host="127.0.0.1", port=8080, path="/app/x",
        fields=((b"Host", b"127.0.0.1:8080"), (b"Accept", b"*/*")),
        origin=None, fetch_site=None, listener=LISTENER, proxy_host=False,
    )
    return base._replace(**changes)


def verdict(a: Arrival) -> tuple[str, int] | None:
    error = refusal(a, ORIGINS, HOSTS)
    return None if error is None else (error.reason, error.status)


NOT_ALLOWED = ("not_allowed", 403)

CASES = [
    # who: apps and curl send neither Origin nor Sec-Fetch-Site
    ("curl-like", arrival(), None),
    ("listed origin", arrival(origin="https://app.example.com"), None),
    ("listed origin, other spelling", arrival(origin="HTTPS://App.Example.com:443"), None),
    ("listed origin, cross-site", arrival(origin="http://localhost:3000", fetch_site="cross-site"), None),
    ("same origin", arrival(origin="http://127.0.0.1:8080"), None),
    ("same origin by name", arrival(host="localhost", origin="http://localhost:8080", fetch_site="same-origin"), None),
    ("same origin, IPv6", arrival(host="::1", origin="http://[::1]:8080"), None),
    ("same origin, allowed host", arrival(host="ambassador.internal", port=9000, origin="http://ambassador.internal:9000"), None),
    ("fetch-site same-origin", arrival(fetch_site="same-origin"), None),
    ("fetch-site none", arrival(fetch_site="none"), None),
    ("other site", arrival(origin="http://attacker.example"), NOT_ALLOWED),
    ("null", arrival(origin="null"), NOT_ALLOWED),
    ("two origins", arrival(origin="https://app.example.com, http://attacker.example"), NOT_ALLOWED),
    ("listed origin with a path", arrival(origin="https://app.example.com/x"), NOT_ALLOWED),
    ("listed origin, other port", arrival(origin="https://app.example.com:8443"), NOT_ALLOWED),
    ("another loopback name", arrival(origin="http://localhost:8080"), NOT_ALLOWED),
    ("ambassador origin, other port", arrival(origin="http://127.0.0.1:3000"), NOT_ALLOWED),
    ("same origin, but https", arrival(origin="https://127.0.0.1:8080"), NOT_ALLOWED),
    ("proxy request, its own origin", arrival(host="app.internal", port=80, proxy_host=True, origin="http://app.internal"), NOT_ALLOWED),
    ("cross-site, no origin", arrival(fetch_site="cross-site"), NOT_ALLOWED),
    ("same-site, no origin", arrival(fetch_site=" Same-Site"), NOT_ALLOWED),
    # where: DNS rebinding
    ("rebinding", arrival(host="attacker.example"), NOT_ALLOWED),
    ("rebinding, admin", arrival(host="attacker.example", path="/_ambassador/status"), NOT_ALLOWED),
    ("allowed host", arrival(host="Ambassador.Internal", port=9000), None),
    ("proxy request", arrival(host="app.internal", port=80, proxy_host=True), None),
    ("listen address", arrival(host="10.0.0.5", listener=("10.0.0.5", 8080)), None),
    ("loopback, other port (the Router's open-proxy refusal)", arrival(port=5432), None),
    ("admin, loopback, other port", arrival(port=5432, path="/_ambassador/status"), NOT_ALLOWED),
    ("admin, proxy host", arrival(host="app.internal", port=80, proxy_host=True, path="/_ambassador/status"), None),
    # what
    ("TRACE", arrival(method="TRACE"), ("method_not_allowed", 405)),
    ("TRACK", arrival(method="TRACK"), ("method_not_allowed", 405)),
    ("trace", arrival(method="trace"), ("method_not_allowed", 405)),
    ("TRACE, proxy", arrival(method="TRACE", host="app.internal", port=80, proxy_host=True), ("method_not_allowed", 405)),
    ("HTAB in a value", arrival(fields=((b"X-A", b"a\tb"),)), None),
    ("obs-fold", arrival(fields=((b"X-A", b"a\r\n b"),)), ("bad_request", 400)),
    ("bare CR", arrival(fields=((b"X-A", b"a\rb"),)), ("bad_request", 400)),
    ("LF", arrival(fields=((b"X-A", b"a\nb"),)), ("bad_request", 400)),
    ("NUL", arrival(fields=((b"X-A", b"a\x00b"),)), ("bad_request", 400)),
    ("0x01", arrival(fields=((b"X-A", b"\x01"),)), ("bad_request", 400)),
    ("0x1f", arrival(fields=((b"X-A", b"\x1f"),)), ("bad_request", 400)),
    ("DEL", arrival(fields=((b"X-A", b"a\x7f"),)), ("bad_request", 400)),
    ("control byte in a name", arrival(fields=((b"X\x01A", b"a"),)), ("bad_request", 400)),
    ("latin-1 text", arrival(fields=((b"X-A", "caf\u00e9".encode("latin-1")),)), None),
]


@pytest.mark.parametrize("a, expected", [(a, e) for _, a, e in CASES], ids=[name for name, _, _ in CASES])
def test_refusal(a, expected):
    assert verdict(a) == expected


def test_errors_name_the_key_that_would_let_the_request_in():
    assert "allowed_origins" in refusal(arrival(origin="null"), ORIGINS, HOSTS).message
    assert "allowed_origins" in refusal(arrival(fetch_site="cross-site"), ORIGINS, HOSTS).message
    assert "allowed_hosts" in refusal(arrival(host="attacker.example"), ORIGINS, HOSTS).message


def test_without_lists_only_the_ambassadors_own_pages_and_names_pass():
    assert refusal(arrival(origin="https://app.example.com"), frozenset(), frozenset()).reason == "not_allowed"
    assert refusal(arrival(host="ambassador.internal"), frozenset(), frozenset()).reason == "not_allowed"
    assert refusal(arrival(origin="http://127.0.0.1:8080"), frozenset(), frozenset()) is None


PROFILE = profile(
    upstream("app", "http://127.0.0.1:9", path_prefix="/app", host="app.internal"), allowed_origins=["https://app.example.com"]
)


def gate_flow(tmp_path, **headers):
    gate = ClientGate(SimpleNamespace(gateway=Gateway(load_profile(PROFILE.write(tmp_path / "p.yaml")))))  # the manager's running gateway
    flow = tflow.tflow()
    flow.client_conn.sockname = ("127.0.0.1", 8080)
    flow.request.host, flow.request.port, flow.request.path = "127.0.0.1", 8080, "/app/x"
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    with taddons.context():
        gate.requestheaders(flow)
    return flow


def test_the_hook_answers_a_refused_request_at_its_header_block(tmp_path):
    flow = gate_flow(tmp_path, Origin="http://attacker.example")
    assert flow.response.status_code == 403
    assert flow.response.headers["Content-Type"] == "application/json"
    assert b'"reason": "not_allowed"' in flow.response.content


def test_the_hook_leaves_other_requests_alone(tmp_path):
    assert gate_flow(tmp_path).response is None
    assert gate_flow(tmp_path, Origin="https://app.example.com", Sec_Fetch_Site="cross-site").response is None
