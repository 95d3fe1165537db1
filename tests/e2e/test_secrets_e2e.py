"""Injected credentials never reach the ambassador's output: not its log at
any verbosity, not the flow file `./run.sh record` writes, not what mitmweb shows once the
exchange is done. Every secret is grepped for, in every place."""

import base64
import json
import secrets
import socket
import threading
from pathlib import Path

import pytest
from mitmproxy import io

from harness import Ambassador, FakeUpstream, Received, Reply
from oauth_fakes import IdentityProvider
from profiles import profile, upstream
from webui import WebAmbassador

SECRETS = {
    "BEARER_TOKEN": "bearer-" + secrets.token_hex(8),
    "API_KEY": "apikey-" + secrets.token_hex(8),
    "QUERY_KEY": "querykey-" + secrets.token_hex(8),
    "CLIENT_SECRET": "clientsecret-" + secrets.token_hex(8),
}
PASSWORD = "password-" + secrets.token_hex(8)
SHOWN = {  # path -> the header the flow must show instead of the secret
    "/bearer/x": ("Authorization", "Bearer [redacted]"),
    "/header/x": ("X-Api-Key", "[redacted]"),
    "/basic/x": ("Authorization", "Basic [redacted]"),
    "/oauth/x": ("Authorization", "Bearer [redacted]"),
    "/oauth-basic/x": ("Authorization", "Bearer [redacted]"),
}


@pytest.fixture(scope="module")
def malformed():
    """An upstream answering with a broken status line: aiohttp's error for it names the URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 abc Bad\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture(scope="module")
def servers(malformed):
    idp = IdentityProvider("app", SECRETS["CLIENT_SECRET"])

    def quiet(req: Received) -> Reply:
        """Answers without echoing what it got: only the ambassador's own output is on trial."""
        return Reply.json({"ok": True})

    def resource(req: Received) -> Reply:
        return Reply(idp.resource(req).status, [], b"resource")

    with FakeUpstream(quiet) as plain, FakeUpstream(idp.token_endpoint) as auth, FakeUpstream(resource) as api:
        yield {"plain": plain, "auth": auth, "api": api, "idp": idp, "malformed": malformed}


def profile_in(folder, servers) -> Path:
    (folder / "pw").write_text(PASSWORD + "\n")
    plain, auth, api = servers["plain"].url, servers["auth"].url, servers["api"].url
    oauth = {"type": "oauth2_client_credentials", "token_url": f"{auth}/token", "client_id": "app", "client_secret": "${CLIENT_SECRET}"}
    return profile(
        upstream("bearer", plain, path_prefix="/bearer", auth={"type": "bearer", "token": "${BEARER_TOKEN}"}),
        upstream("header", plain, path_prefix="/header", auth={"type": "header", "name": "X-Api-Key", "value": "${API_KEY}"}),
        upstream("query", plain, path_prefix="/query", auth={"type": "query", "name": "api_key", "value": "${QUERY_KEY}"}),
        upstream(
            "query-malformed", servers["malformed"], path_prefix="/query-malformed",
            auth={"type": "query", "name": "api_key", "value": "${QUERY_KEY}"},
        ),
        upstream("basic", plain, path_prefix="/basic", auth={"type": "basic", "username": "svc", "password": "${file:pw}"}),
        upstream("oauth", api, path_prefix="/oauth", auth={**oauth, "auth_style": "body"}),
        upstream("oauth-basic", api, path_prefix="/oauth-basic", auth=oauth),
    ).write(folder / "secrets.yaml")


def exercise(amb, servers) -> None:
    """Every kind of credential, a client credential to replace, and a token renewal after a 401."""
    for path in SHOWN:
        status, _, body = amb.get(path, {"Authorization": "Bearer the-clients-own", "X-Api-Key": "clients-key"})
        assert status == 200, body
    status, _, _ = amb.get("/query/x?a=1&api_key=clients-key")
    assert status == 200
    status, _, body = amb.get("/query-malformed/x")
    assert status == 502 and b"Bad status line" in body
    servers["idp"].revoke_all()
    status, _, _ = amb.get("/oauth/after-revocation")
    assert status == 200


def every_secret(servers) -> list[str]:
    """The values themselves, and as they travel: Basic credentials of the upstream and of the
    client at the token endpoint (auth_style basic)."""
    basic_header = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    client_basic = base64.b64encode(f"app:{SECRETS['CLIENT_SECRET']}".encode()).decode()
    return [*SECRETS.values(), PASSWORD, basic_header, client_basic, *servers["idp"].issued]


def test_secrets_stay_out_of_logs_and_recorded_flows(servers, tmp_path):
    flow_file = tmp_path / "flows.mitm"
    args = ("-v", "--set", "flow_detail=4", "--set", "termlog_verbosity=debug")
    with Ambassador(tmp_path, profile_in(tmp_path, servers), *args, command=("record", str(flow_file)), env=SECRETS) as amb:
        exercise(amb, servers)
    assert servers["idp"].issued and len(servers["idp"].issued) >= 3
    assert servers["plain"].received[0].header("Authorization") == f"Bearer {SECRETS['BEARER_TOKEN']}"  # really injected

    raw = flow_file.read_bytes()
    log = amb.output
    assert "[redacted]" in log  # the requests were logged in full detail, headers included
    for secret in every_secret(servers):
        assert secret.encode() not in raw, f"{secret} is in the flow file"
        assert secret not in log, f"{secret} is in the log"

    with flow_file.open("rb") as f:
        flows = [flow for flow in io.FlowReader(f).stream() if flow.request.path != "/_ambassador/status"]
    # The clients' flows; the upstream exchanges made for them are flows of their own, redacted too.
    by_path = {flow.request.path: flow for flow in flows if "exchange" not in flow.metadata["ambassador"]}
    exchanges = [flow for flow in flows if "exchange" in flow.metadata["ambassador"]]
    assert exchanges and all(flow.metadata["ambassador"]["client_flow"] for flow in exchanges)
    assert len(by_path) == len(SHOWN) + 3
    for path, (header, shown) in SHOWN.items():
        assert by_path[path].request.headers.get_all(header) == [shown], path
        assert by_path[path].response.status_code == 200
    query = by_path["/query/x?a=1&api_key=clients-key"]  # the client's URL, which never held the secret
    assert query.metadata["ambassador"]["auth"] == "query"
    for flow in flows:
        assert not any(s in json.dumps(flow.metadata) for s in every_secret(servers))
    assert by_path["/oauth/after-revocation"].metadata["ambassador"]["auth_renewed"] is True


def test_mitmweb_shows_only_redacted_credentials(servers, tmp_path):
    with WebAmbassador(tmp_path, profile_in(tmp_path, servers), env=SECRETS) as amb:
        exercise(amb, servers)
        shown = json.dumps(amb.flows())
    for secret in every_secret(servers):
        assert secret not in shown, f"{secret} is shown in mitmweb"
    assert '"Bearer [redacted]"' in shown and '"Basic [redacted]"' in shown
