"""The ambassador is never an open proxy: it forwards only to the profile's
upstreams, whatever the request says, and listens on loopback unless told otherwise."""

import json

import pytest

from harness import Ambassador, FakeUpstream, echo, listening_addresses
from profiles import profile, upstream


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with FakeUpstream(echo) as app, FakeUpstream(echo) as bystander:
        routes = profile(upstream("app", f"{app.url}/base", path_prefix="/app", host="app.internal"))
        with Ambassador(tmp_path_factory.mktemp("security"), routes) as amb:
            yield amb, app, bystander


def refused(answer):
    status, _, body = answer
    return status == 403 and json.loads(body)["reason"] == "not_allowed"


def test_absolute_form_urls_for_other_hosts_are_refused(setup):
    amb, app, bystander = setup
    assert refused(amb.request("GET", "http://evil.example/", {"Host": "evil.example"}))
    # userinfo in the request target is not valid HTTP: mitmproxy itself refuses it with 400
    assert amb.request("GET", "http://app.internal@evil.example/", {"Host": "evil.example"})[0] == 400
    assert refused(amb.request("GET", f"http://127.0.0.1:{bystander.port}/secret", {"Host": f"127.0.0.1:{bystander.port}"}))
    assert refused(amb.request("CONNECT", f"127.0.0.1:{bystander.port}", {"Host": f"127.0.0.1:{bystander.port}"}))
    assert bystander.received == []


def test_host_header_cannot_redirect_the_exchange(setup):
    amb, app, bystander = setup
    assert refused(amb.request("GET", "/app/x", {"Host": "evil.example"}))
    assert refused(amb.request("GET", "/app/x", {"Host": f"127.0.0.1:{bystander.port}"}))
    # Requests for the ambassador itself name it by a local name: loopback or its address.
    for host in (f"127.0.0.1:{amb.port}", f"localhost:{amb.port}", f"[::1]:{amb.port}"):
        status, _, body = amb.request("GET", "/app/x", {"Host": host})
        assert status == 200, host
        seen = json.loads(body)
        assert seen["path"] == "/base/x"
        assert dict(seen["headers"])["Host"] == f"127.0.0.1:{app.port}"
    assert bystander.received == []


def test_dns_rebinding_gets_nothing(setup):
    """A web page whose name resolves to 127.0.0.1 reaches the port, but not the upstreams
    (with their injected credentials) nor the admin endpoints."""
    amb, app, _ = setup
    before = len(app.received)
    rebound = {"Host": f"attacker.example:{amb.port}"}
    assert refused(amb.request("GET", "/app/x", rebound))
    assert refused(amb.request("GET", "/_ambassador/status", rebound))
    assert refused(amb.request("POST", "/_ambassador/batch", {**rebound, "Content-Type": "text/plain"}, b'[{"path": "/app/x"}]'))
    assert len(app.received) == before


def test_cross_site_browser_requests_to_admin_endpoints_are_refused(setup):
    amb, app, _ = setup
    before = len(app.received)
    batch = b'[{"path": "/app/x"}]'
    assert refused(amb.request("POST", "/_ambassador/batch", {"Origin": "http://attacker.example", "Content-Type": "text/plain"}, batch))
    # A page the ambassador served itself: the request's own origin (http.client names 127.0.0.1).
    status, _, _ = amb.request("POST", "/_ambassador/batch", {"Origin": f"http://127.0.0.1:{amb.port}"}, batch)
    assert status == 200
    # Another origin to a browser, though also the ambassador: refused as any other.
    assert refused(amb.request("POST", "/_ambassador/batch", {"Origin": f"http://localhost:{amb.port}"}, batch))
    assert len(app.received) == before + 1


@pytest.mark.parametrize("path", [
    "/app/../../etc/passwd", "/app/%2e%2e/%2e%2e/secret", "/app/%2E%2E%2Fsecret", "/app/..%2F..%2Fsecret",
    "/app/%252e%252e/secret", "/app/.%2e/secret", "/app/..\\secret",
])
def test_encoded_paths_cannot_climb_out_of_the_prefix(setup, path):
    amb, app, _ = setup
    before = len(app.received)
    status, _, body = amb.get(path)
    assert status == 400 and json.loads(body)["reason"] == "bad_request"
    assert len(app.received) == before


def test_listens_on_loopback_only(setup):
    amb, _, _ = setup
    assert listening_addresses(amb.port) == ["0100007F"]  # 127.0.0.1, and nothing on tcp6 or other addresses


@pytest.mark.parametrize("path", ["/app/..;/secret", "/app/%2e%2e%3b/secret", "/app/.;x/secret", "/app/..;jsessionid=1/x"])
def test_dot_segments_with_parameters_are_refused(setup, path):
    amb, app, _ = setup
    before = len(app.received)
    status, _, body = amb.get(path)
    assert status == 400 and json.loads(body)["reason"] == "bad_request"
    assert len(app.received) == before


def test_asterisk_form_gets_json_not_a_crash(setup):
    amb, app, _ = setup
    status, _, body = amb.request("OPTIONS", "*")
    assert status in (400, 404) and json.loads(body)["reason"] in ("bad_request", "no_route")


def test_connect_to_an_upstream_host_is_intercepted_and_routed(setup):
    """CONNECT is allowed for an upstream's host only; mitmproxy terminates the TLS with its own
    CA (in the ambassador's confdir) and the request inside goes to the profile's url."""
    import http.client
    import ssl

    amb, app, _ = setup
    context = ssl.create_default_context(cafile=str(amb.tmp_path / "mitmproxy-conf" / "mitmproxy-ca-cert.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", amb.port, context=context, timeout=15)
    conn.set_tunnel("app.internal", 443)
    try:
        conn.request("GET", "/inside?x=1")
        answer = conn.getresponse()
        body = json.loads(answer.read())
    finally:
        conn.close()
    assert answer.status == 200 and answer.headers["X-Ambassador-Upstream"] == "app"
    assert body["path"] == "/base/inside?x=1"
