"""An upstream that echoes the request it got (debug page, error page, redirect) never hands the
injected secret to the client: through the real ambassador, for every auth type and every door
(direct request, cached entry, aggregate part, batch item, async job), plain and gzip bodies,
and never into the flow file `./run.sh record` writes."""

import base64
import gzip
import json
import secrets
import time
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote_plus

import pytest
from mitmproxy import io

from harness import Ambassador, FakeUpstream, Received, Reply
from oauth_fakes import IdentityProvider
from profiles import profile, upstream

SECRETS = {
    "BEARER_TOKEN": "bearer-" + secrets.token_hex(8),
    "API_KEY": "apikey-" + secrets.token_hex(8),
    # Characters a query value carries percent-encoded: the echo has both forms.
    "QUERY_KEY": "q/key+" + secrets.token_hex(8) + "=&",
    "CLIENT_SECRET": "clientsecret-" + secrets.token_hex(8),
}
PASSWORD = "password-" + secrets.token_hex(8)
KINDS = ["bearer", "header", "query", "basic", "oauth"]


def reflect(req: Received) -> Reply:
    """A careless partner: its answer repeats the request, credential and all, in a redirect
    target, in headers and in the body; gzip-compressed under /gzip."""
    echoed = {"path": req.path, "headers": dict(req.headers)}
    body = json.dumps(echoed).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Location", f"/login?next={quote(req.path, safe='')}"),  # the URL percent-encoded once more
        ("X-Seen-Path", req.path),
        ("X-Seen-Credential", req.header("Authorization") or req.header("X-Api-Key") or ""),
        ("Cache-Control", "max-age=60"),
    ]
    if "/gzip" in req.path:
        body = gzip.compress(body)
        headers.append(("Content-Encoding", "gzip"))
    return Reply(200, headers, body)


@pytest.fixture(scope="module")
def servers():
    idp = IdentityProvider("app", SECRETS["CLIENT_SECRET"])
    with FakeUpstream(reflect) as partner, FakeUpstream(idp.token_endpoint) as auth:
        yield {"partner": partner, "auth": auth, "idp": idp}


def profile_in(folder, servers) -> Path:
    (folder / "pw").write_text(PASSWORD + "\n")
    partner, auth = servers["partner"].url, servers["auth"].url
    auths = {
        "bearer": {"type": "bearer", "token": "${BEARER_TOKEN}"},
        "header": {"type": "header", "name": "X-Api-Key", "value": "${API_KEY}"},
        "query": {"type": "query", "name": "api_key", "value": "${QUERY_KEY}"},
        "basic": {"type": "basic", "username": "svc", "password": "${file:pw}"},
        "oauth": {
            "type": "oauth2_client_credentials", "token_url": f"{auth}/token", "client_id": "app", "client_secret": "${CLIENT_SECRET}",
        },
    }
    reflecting = profile(
        *(
            upstream(kind, f"{partner}/{kind}", path_prefix=f"/{kind}", auth=auths[kind], cache={"ttl": "60s"}, async_={"keep": "1h"})
            for kind in KINDS
        ),
        aggregates={"/everything": {kind: f"{kind}:/part" for kind in KINDS}},
    )
    return reflecting.write(folder / "reflecting.yaml")


def forbidden(servers) -> list[str]:
    """Every secret in every form it takes on the wire."""
    basic_pair = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    values = [*SECRETS.values(), PASSWORD, basic_pair, *servers["idp"].issued]
    return sorted({form for v in values for form in (v, quote(v, safe=""), quote_plus(v))})


def assert_clean(servers, what: str, text: str) -> None:
    for secret in forbidden(servers):
        assert secret not in text, f"{secret!r} reached the client in {what}"
    assert "[redacted]" in text, f"{what}: the partner did not echo, the test proves nothing"


def answer_text(status, headers, body) -> str:
    assert status == 200, body
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return "".join(f"{k}: {v}\n" for k, v in headers.items()) + body.decode()


def exercise(amb, servers) -> None:
    for kind in KINDS:
        for path in (f"/{kind}/page?a=1", f"/{kind}/gzip?b=2"):
            for door in ("direct", "cached"):  # the second answer comes from the cache
                status, headers, body = amb.get(path, {"Accept-Encoding": "gzip, br"})
                assert_clean(servers, f"{door} {path}", answer_text(status, headers, body))
            assert headers["X-Cache"] == "HIT"
    status, headers, body = amb.get("/everything")
    assert_clean(servers, "aggregate", answer_text(status, headers, body))
    assert set(json.loads(body)) == set(KINDS)
    items = [{"method": "GET", "path": f"/{kind}/item", "headers": {}, "body": None} for kind in KINDS]
    status, headers, body = amb.request("POST", "/_ambassador/batch", {"Content-Type": "application/json"}, json.dumps(items).encode())
    assert_clean(servers, "batch", answer_text(status, headers, body))
    for kind in KINDS:
        status, headers, _ = amb.get(f"/{kind}/job", {"Prefer": "respond-async"})
        assert status == 202
        assert_clean(servers, f"async job of {kind}", answer_text(*finished(amb, headers["Location"])))


def finished(amb, location: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while (answer := amb.get(location))[0] == 202:
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)
    return answer


def test_echoed_secrets_never_reach_the_client_or_the_recording(servers, tmp_path):
    flow_file = tmp_path / "flows.mitm"
    env = {**SECRETS, "AMBASSADOR_STATE_DIR": str(tmp_path / "state")}
    with Ambassador(tmp_path, profile_in(tmp_path, servers), command=("record", str(flow_file)), env=env) as amb:
        exercise(amb, servers)
    partner = servers["partner"].received
    assert any(SECRETS["QUERY_KEY"] in unquote_plus(r.path) for r in partner)  # really injected
    assert any(r.header("Authorization") == f"Bearer {SECRETS['BEARER_TOKEN']}" for r in partner)

    with flow_file.open("rb") as f:
        flows = list(io.FlowReader(f).stream())
    assert len(flows) >= 2 * 2 * len(KINDS) + 2
    recorded = "".join(
        "".join(f"{k}: {v}\n" for k, v in flow.response.headers.items()) + flow.response.get_text(strict=False)
        for flow in flows
    )
    assert_clean(servers, "the flow file", recorded)
    raw = flow_file.read_bytes()
    assert not any(secret.encode() in raw for secret in forbidden(servers))

