"""TLS origination per upstream through the real ambassador.

Real HTTPS servers on 127.0.0.1 with certificates from trustme: two upstreams with different
CAs (one demanding a client certificate) in one ambassador, and the failures a careful user
must be told about: an unknown CA and a missing client certificate.
"""

import json
import ssl
import time

import pytest
import trustme

from harness import Ambassador, FakeUpstream, Received, Reply, TlsHangUp, echo, run_sh
from oauth_fakes import IdentityProvider
from profiles import profile, upstream


def https_upstream(handler, ca: trustme.CA, client_ca: trustme.CA | None = None, name: str = "127.0.0.1") -> FakeUpstream:
    """A FakeUpstream speaking TLS with a certificate for `name` from `ca`; with `client_ca`
    it demands a client certificate issued by that CA (mTLS)."""
    upstream = FakeUpstream(handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(name).configure_cert(context)
    if client_ca:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    # The handshake happens in the request's thread, so a failing one cannot stall the server.
    upstream.server.socket = context.wrap_socket(upstream.server.socket, server_side=True, do_handshake_on_connect=False)
    upstream.server.handle_error = lambda request, address: None  # failed handshakes are expected here
    upstream.url = f"https://{name}:{upstream.port}"
    return upstream


def echo_or_hang_up(req: Received) -> Reply:
    return Reply(close=True) if req.path.endswith("/hang-up") else echo(req)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    partner_ca, bank_ca, client_ca = trustme.CA(), trustme.CA(), trustme.CA()
    partner_ca.cert_pem.write_to_path(folder / "partner-ca.pem")
    bank_ca.cert_pem.write_to_path(folder / "bank-ca.pem")
    client = client_ca.issue_cert("ambassador@example.com")
    client.cert_chain_pems[0].write_to_path(folder / "client.pem")
    client.private_key_pem.write_to_path(folder / "client.key")
    client.private_key_and_cert_chain_pem.write_to_path(folder / "client-with-key.pem")
    partner_ca.issue_cert("stranger@example.com").private_key_and_cert_chain_pem.write_to_path(folder / "stranger.pem")
    return {"folder": folder, "partner_ca": partner_ca, "bank_ca": bank_ca, "client_ca": client_ca}


@pytest.fixture(scope="module")
def servers(pki):
    idp = IdentityProvider("app", "tls-client-secret")
    with (
        https_upstream(echo_or_hang_up, pki["partner_ca"]) as partner,
        https_upstream(echo, pki["bank_ca"], client_ca=pki["client_ca"]) as bank,
        https_upstream(idp.token_endpoint, pki["partner_ca"]) as auth,
        https_upstream(idp.resource, pki["partner_ca"]) as api,
    ):
        yield {"partner": partner, "bank": bank, "auth": auth, "api": api, "idp": idp}


@pytest.fixture(scope="module")
def amb(pki, servers, tmp_path_factory):
    partner, bank, api = servers["partner"].url, servers["bank"].url, servers["api"].url
    profile_dir = pki["folder"]  # relative certificate paths are relative to the profile's folder
    token_url = f"{servers['auth'].url}/oauth/token"
    oauth = dict(type="oauth2_client_credentials", token_url=token_url, client_id="app", client_secret="tls-client-secret")
    tls_profile = profile(
        upstream("partner", f"{partner}/v1", path_prefix="/partner", tls={"ca": "partner-ca.pem"}),
        upstream("bank", bank, path_prefix="/bank", tls={"ca": "bank-ca.pem", "client_cert": "client.pem", "client_key": "client.key"}),
        upstream("bank-combined-pem", bank, path_prefix="/bank-combined", tls={"ca": "bank-ca.pem", "client_cert": "client-with-key.pem"}),
        upstream("bank-without-cert", bank, path_prefix="/bank-without-cert", tls={"ca": "bank-ca.pem"}),
        upstream("bank-wrong-cert", bank, path_prefix="/bank-wrong-cert", tls={"ca": "bank-ca.pem", "client_cert": "stranger.pem"}),
        upstream("partner-unknown-ca", partner, path_prefix="/unknown-ca"),
        upstream("partner-wrong-ca", partner, path_prefix="/wrong-ca", tls={"ca": "bank-ca.pem"}),
        upstream("partner-insecure", partner, path_prefix="/insecure", tls={"verify": False}),
        upstream("partner-oauth", api, path_prefix="/oauth", tls={"ca": "partner-ca.pem"}, auth=oauth),
        upstream("partner-oauth-insecure", api, path_prefix="/oauth-insecure", timeout="1s", tls={"verify": False}, auth=oauth),
        upstream("partner-oauth-untrusted", api, path_prefix="/oauth-untrusted", timeout="1s", auth=oauth),
    ).write(profile_dir / "tls.yaml")
    with Ambassador(tmp_path_factory.mktemp("tls"), tls_profile) as a:
        yield a


def test_an_upstream_with_its_own_ca(amb, servers):
    status, headers, body = amb.get("/partner/accounts?id=1")
    assert status == 200, body
    assert headers["X-Ambassador-Upstream"] == "partner"
    assert json.loads(body)["path"] == "/v1/accounts?id=1"


def test_mtls_with_another_ca_and_a_client_certificate_in_the_same_ambassador(amb):
    status, _, body = amb.get("/bank/balance")
    assert status == 200, body
    assert json.loads(body)["path"] == "/balance"
    status, _, body = amb.get("/bank-combined/balance")
    assert status == 200, body


def assert_tls_failure(amb, path, upstream, *details):
    status, headers, body = amb.get(path)
    assert status == 502, body
    answer = json.loads(body)
    assert answer["reason"] == "connect_error" and answer["upstream"] == upstream
    assert "TLS" in answer["error"], answer
    for detail in details:
        assert detail in answer["error"], answer
    assert headers["X-Ambassador-Upstream"] == upstream


def test_unknown_ca_is_a_connect_error_naming_tls(amb):
    assert_tls_failure(amb, "/unknown-ca/x", "partner-unknown-ca", "certificate verify failed (unable to get local issuer certificate)")
    assert_tls_failure(amb, "/wrong-ca/x", "partner-wrong-ca", "certificate verify failed")


def test_missing_client_certificate_is_a_connect_error_naming_tls(amb, servers):
    before = len(servers["bank"].received)
    assert_tls_failure(amb, "/bank-without-cert/x", "bank-without-cert", "requires a client certificate")
    assert_tls_failure(amb, "/bank-wrong-cert/x", "bank-wrong-cert", "does not trust the issuer of our client certificate")
    assert len(servers["bank"].received) == before


def test_verification_off_works_and_is_warned_about_at_startup(amb):
    status, _, body = amb.get("/insecure/x")
    assert status == 200, body
    amb.wait_for_log(r"upstream partner-insecure: TLS certificate verification is switched off \(tls\.verify: false\)", timeout=1)
    assert "upstream partner: TLS certificate verification" not in amb.output


def test_the_token_endpoint_is_trusted_through_the_upstreams_ca(amb, servers):
    status, _, body = amb.get("/oauth/data")
    assert status == 200, body
    assert servers["idp"].token_in(body) == servers["idp"].issued[0]


def test_unusable_certificate_files_stop_startup_with_the_key_path(tmp_path):
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    unusable = upstream("partner", "https://127.0.0.1:9/", path_prefix="/p", tls={"client_cert": "not-a-cert.pem"})
    broken = profile(unusable).write(tmp_path / "broken.yaml")
    amb = Ambassador(tmp_path, broken)
    with pytest.raises(AssertionError, match="ambassador exited"):
        amb.start()
    assert amb.proc.wait(10) == 2
    assert "upstreams.partner.tls" in amb.output and "Traceback" not in amb.output
    checked = run_sh("check", str(broken))  # `check` refuses it too, for the same reason
    assert checked.returncode == 2 and "upstreams.partner.tls: cannot use the certificates" in checked.stderr


def test_the_client_secret_goes_only_to_a_verified_token_endpoint(amb, servers):
    # `tls.verify: false` is for the upstream; the token endpoint is still verified.
    before = len(servers["api"].received)
    status, _, body = amb.get("/oauth-insecure/data")
    answer = json.loads(body)
    assert status == 502 and answer["reason"] == "auth_failed", answer
    assert "certificate verify failed" in answer["error"]
    assert len(servers["api"].received) == before


def test_an_untrusted_token_endpoint_is_auth_failed_naming_tls(amb, servers):
    before = len(servers["api"].received)
    status, _, body = amb.get("/oauth-untrusted/data")
    answer = json.loads(body)
    assert status == 502 and answer["reason"] == "auth_failed", answer
    assert "TLS handshake failed: certificate verify failed" in answer["error"]
    assert len(servers["api"].received) == before


def test_a_broken_exchange_after_a_good_handshake_is_not_blamed_on_tls(amb):
    started = time.monotonic()
    status, _, body = amb.get("/partner/hang-up")
    answer = json.loads(body)
    assert status == 502 and answer["reason"] == "connect_error", answer
    assert "broke off the exchange" in answer["error"] and "TLS" not in answer["error"]
    assert time.monotonic() - started < 5


def test_a_server_that_hangs_up_after_the_handshake_gets_a_client_certificate_hint(pki, tmp_path):
    """Some servers refuse a missing client certificate by closing, without a TLS alert."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki["partner_ca"].issue_cert("127.0.0.1").configure_cert(context)
    server = TlsHangUp(context)
    (tmp_path / "ca.pem").write_bytes(pki["partner_ca"].cert_pem.bytes())
    url = f"https://127.0.0.1:{server.port}"
    strict = upstream("strict", url, path_prefix="/strict", tls={"ca": "ca.pem"}, timeout="3s")
    try:
        with Ambassador(tmp_path, profile(strict)) as amb:
            status, _, body = amb.get("/strict/x")
            answer = json.loads(body)
            assert status == 502 and answer["reason"] == "connect_error"
            assert "TLS handshake with upstream strict failed" in answer["error"]
            assert "client certificate" in answer["error"]
    finally:
        server.close()
