"""Upstreams reached through a corporate egress proxy (`proxy:` per upstream), end to end.

The real ambassador in front of a real forwarding proxy on 127.0.0.1 (tests/egress_proxy.py),
itself in front of real HTTP and HTTPS servers (certificates from trustme): absolute-form
requests for http upstreams, CONNECT tunnels for https ones with the upstream's own TLS
settings inside, proxy credentials, and the proxy's failures. The upstreams are named
`*.partner.test`, which only the proxy resolves: nothing reaches them around it.
"""

import base64
import json
import ssl
from urllib.parse import quote

import pytest
import trustme
from mitmproxy import io

from egress_proxy import EgressProxy
from harness import Ambassador, FakeUpstream, Received, Reply, TlsHangUp, echo, free_port
from oauth_fakes import IdentityProvider
from profiles import Profile, profile, upstream
from test_tls_e2e import https_upstream

USER, PASSWORD = "svc", "pr0xy#pass/word"
CREDENTIALS = f"{USER}:{PASSWORD}"
BASIC = base64.b64encode(CREDENTIALS.encode()).decode()
IN_URL = f"{USER}:{quote(PASSWORD, safe='')}"  # as it is written in a proxy URL


def echo_proxy_authorization(req: Received) -> Reply:
    """An upstream echoing the Proxy-Authorization it got (from a proxy that forwarded it)."""
    return Reply.json({"proxy_authorization": req.header("Proxy-Authorization")})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    partner_ca, client_ca = trustme.CA(), trustme.CA()
    partner_ca.cert_pem.write_to_path(folder / "partner-ca.pem")
    client_ca.issue_cert("ambassador@example.com").private_key_and_cert_chain_pem.write_to_path(folder / "client.pem")
    return {"folder": folder, "partner_ca": partner_ca, "client_ca": client_ca}


@pytest.fixture(scope="module")
def hang_up(pki):
    """A TLS server that hangs up right after the handshake, with no alert: how some servers
    refuse a missing client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki["partner_ca"].issue_cert("strict.partner.test").configure_cert(context)
    server = TlsHangUp(context)
    yield f"https://strict.partner.test:{server.port}"
    server.close()


@pytest.fixture(scope="module")
def net(pki, hang_up):
    idp = IdentityProvider("app", "client-secret")
    with (
        EgressProxy() as open_proxy,
        EgressProxy(credentials=CREDENTIALS) as guarded,
        EgressProxy(credentials=CREDENTIALS, forward_authorization=True) as leaky,
        behind_proxy(FakeUpstream(echo), "plain") as plain,
        behind_proxy(FakeUpstream(echo_proxy_authorization), "reflector") as reflector,
        behind_proxy(FakeUpstream(idp.token_endpoint), "auth") as auth,
        behind_proxy(FakeUpstream(idp.resource), "api") as api,
        https_upstream(echo, pki["partner_ca"], name="partner.partner.test") as partner,
        https_upstream(echo, pki["partner_ca"], client_ca=pki["client_ca"], name="bank.partner.test") as bank,
    ):
        yield {
            "open": open_proxy, "guarded": guarded, "leaky": leaky, "plain": plain, "reflector": reflector,
            "auth": auth, "api": api, "partner": partner, "bank": bank, "idp": idp, "strict": hang_up,
        }


def behind_proxy(upstream: FakeUpstream, name: str) -> FakeUpstream:
    upstream.url = f"http://{name}.partner.test:{upstream.port}"
    return upstream


def with_credentials(proxy: EgressProxy, userinfo: str) -> str:
    return proxy.url.replace("http://", f"http://{userinfo}@")


def egress_profile(net) -> Profile:
    open_proxy, guarded, leaky = net["open"].url, net["guarded"], net["leaky"]
    plain, partner, bank = net["plain"].url, net["partner"].url, net["bank"].url
    with_password = with_credentials(guarded, IN_URL)
    wrong_password = f"{USER}:{quote(PASSWORD[::-1], safe='')}"
    oauth = dict(type="oauth2_client_credentials", token_url=f"{net['auth'].url}/token", client_id="app", client_secret="client-secret")
    return profile(
        upstream("plain", f"{plain}/v1", path_prefix="/plain", proxy=open_proxy),
        upstream("partner", partner, path_prefix="/partner", tls={"ca": "partner-ca.pem"}, proxy=open_proxy),
        upstream("bank", bank, path_prefix="/bank", tls={"ca": "partner-ca.pem", "client_cert": "client.pem"}, proxy=open_proxy),
        upstream("bank-without-cert", bank, path_prefix="/bank-without-cert", tls={"ca": "partner-ca.pem"}, proxy=open_proxy),
        upstream("strict", net["strict"], path_prefix="/strict", tls={"ca": "partner-ca.pem"}, timeout="3s", proxy=open_proxy),
        upstream("secured", plain, path_prefix="/secured", proxy=with_password),
        upstream("secured-tls", partner, path_prefix="/secured-tls", tls={"ca": "partner-ca.pem"}, proxy=with_password),
        upstream("no-credentials", plain, path_prefix="/no-credentials", proxy=guarded.url),
        upstream("no-credentials-tls", partner, path_prefix="/no-credentials-tls", tls={"ca": "partner-ca.pem"}, proxy=guarded.url),
        upstream("wrong-password", plain, path_prefix="/wrong-password", proxy=with_credentials(guarded, wrong_password)),
        upstream("reflected", net["reflector"].url, path_prefix="/reflected", proxy=with_credentials(leaky, IN_URL)),
        upstream("proxy-down", plain, path_prefix="/proxy-down", proxy=f"http://127.0.0.1:{free_port()}"),
        upstream("oauth", net["api"].url, path_prefix="/oauth", auth=oauth, proxy=with_password),
    )


@pytest.fixture(scope="module")
def profile_file(pki, net):
    # relative certificate paths are relative to the profile's folder
    return egress_profile(net).write(pki["folder"] / "egress.yaml")


@pytest.fixture(scope="module")
def amb(profile_file, tmp_path_factory):
    with Ambassador(tmp_path_factory.mktemp("amb"), profile_file) as amb:
        yield amb


def error_of(body: bytes) -> dict:
    answer = json.loads(body)
    return {"reason": answer["reason"], "message": answer["error"]}


def test_an_http_upstream_is_reached_in_absolute_form_through_the_proxy(amb, net):
    status, _, body = amb.get("/plain/items?x=1", headers={"X-Trace": "t1"})
    assert status == 200, body
    assert f"{net['plain'].url}/v1/items?x=1" in net["open"].forwarded
    seen = json.loads(body)
    assert seen["path"] == "/v1/items?x=1"  # the proxy's own forwarding, in origin form
    assert ["X-Trace", "t1"] in seen["headers"]


def test_an_https_upstream_is_reached_through_a_connect_tunnel_with_its_own_ca(amb, net):
    tunnels = len(net["open"].tunnels)
    status, _, body = amb.get("/partner/a")
    assert status == 200, body
    assert json.loads(body)["path"] == "/a"
    assert net["open"].tunnels[tunnels:] == [f"partner.partner.test:{net['partner'].port}"]
    assert "partner.partner.test" not in "".join(net["open"].forwarded)  # never in clear


def test_tunnels_are_kept_alive_and_reused(amb, net):
    amb.get("/partner/warm")
    tunnels = len(net["open"].tunnels)
    for i in range(3):
        assert amb.get(f"/partner/again-{i}")[0] == 200
    assert len(net["open"].tunnels) == tunnels


def test_mtls_goes_end_to_end_through_the_tunnel(amb, net):
    status, _, body = amb.get("/bank/accounts")
    assert status == 200, body
    assert f"bank.partner.test:{net['bank'].port}" in net["open"].tunnels


def test_a_missing_client_certificate_through_the_tunnel_is_named(amb):
    status, _, body = amb.get("/bank-without-cert/accounts")
    error = error_of(body)
    assert status == 502 and error["reason"] == "connect_error", body
    assert "TLS handshake with upstream bank-without-cert failed" in error["message"]
    assert "client certificate" in error["message"]


def test_a_server_hanging_up_after_the_handshake_is_probed_through_the_tunnel(amb, net):
    """The probe that tells such a refusal from a broken exchange goes through the proxy too."""
    status, _, body = amb.get("/strict/x")
    error = error_of(body)
    assert status == 502 and error["reason"] == "connect_error", body
    assert "TLS handshake with upstream strict failed" in error["message"]
    assert "does it require a client certificate?" in error["message"]  # only the probe can tell


def test_proxy_credentials_are_sent_as_proxy_authorization(amb, net):
    before = len(net["guarded"].authorizations)
    assert amb.get("/secured/x")[0] == 200
    status, _, body = amb.get("/secured-tls/y")
    assert status == 200, body
    assert net["guarded"].authorizations[before:] == [f"Basic {BASIC}"] * 2
    upstream_saw = [r for r in net["plain"].received if r.path == "/x"][-1]
    assert upstream_saw.header("Proxy-Authorization") is None  # for the proxy only


@pytest.mark.parametrize("route", ["/no-credentials/x", "/no-credentials-tls/x"])
def test_a_proxy_wanting_credentials_is_a_502_connect_error_naming_it(amb, net, route):
    status, headers, body = amb.get(route)
    error = error_of(body)
    assert status == 502 and error["reason"] == "connect_error", body
    assert f"proxy {net['guarded'].url}" in error["message"] and "407" in error["message"]
    assert "http://user:password@host:port" in error["message"]
    assert "Proxy-Authenticate" not in headers


def test_refused_credentials_are_named_but_never_shown(amb, net):
    status, _, body = amb.get("/wrong-password/x")
    error = error_of(body)
    assert status == 502 and error["reason"] == "connect_error", body
    assert f"proxy {net['guarded'].url}" in error["message"] and "did not accept the credentials" in error["message"]
    assert PASSWORD[::-1].encode() not in body and quote(PASSWORD[::-1], safe="").encode() not in body


def test_a_proxy_that_is_down_is_a_502_connect_error_naming_it(amb):
    status, _, body = amb.get("/proxy-down/x")
    error = error_of(body)
    assert status == 502 and error["reason"] == "connect_error", body
    assert error["message"].startswith("cannot connect to proxy http://127.0.0.1:")
    assert "for upstream proxy-down" in error["message"]


def test_the_token_endpoint_is_reached_through_the_upstreams_proxy(amb, net):
    status, _, body = amb.get("/oauth/r")
    assert status == 200, body
    assert f"{net['auth'].url}/token" in net["guarded"].forwarded
    assert f"{net['api'].url}/r" in net["guarded"].forwarded


def test_credentials_a_proxy_lets_through_never_reach_the_client(amb, net):
    status, _, body = amb.get("/reflected/x")
    assert status == 200, body
    assert json.loads(body) == {"proxy_authorization": "Basic [redacted]"}


def test_status_names_the_proxy_without_its_credentials(amb, net):
    upstreams = json.dumps(amb.status())
    assert net["guarded"].url in upstreams
    assert USER + ":" not in upstreams and BASIC not in upstreams


def test_proxy_credentials_stay_out_of_logs_and_recordings(profile_file, net, tmp_path):
    flow_file = tmp_path / "flows.mitm"
    args = ("-v", "--set", "flow_detail=4", "--set", "termlog_verbosity=debug")
    with Ambassador(tmp_path, profile_file, *args, command=("record", str(flow_file))) as amb:
        for route in ("/secured/x", "/secured-tls/x", "/reflected/x", "/oauth/x", "/wrong-password/x", "/no-credentials/x"):
            amb.get(route)
    raw, log = flow_file.read_bytes(), amb.output
    with flow_file.open("rb") as f:
        flows = list(io.FlowReader(f).stream())
    assert any(flow.metadata.get("ambassador", {}).get("exchange") == "token" for flow in flows)  # child flows recorded
    assert "[redacted]" in raw.decode("latin-1")
    for secret in (PASSWORD, quote(PASSWORD, safe=""), BASIC, CREDENTIALS):
        assert secret.encode() not in raw, f"{secret} is in the flow file"
        assert secret not in log, f"{secret} is in the log"
