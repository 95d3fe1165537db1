"""`./run.sh record FILE` and `./run.sh replay FILE`: a partner service becomes an offline fake."""

import json
import subprocess
from pathlib import Path

import pytest
from mitmproxy.io import FlowReader

from harness import ROOT, Ambassador, FakeUpstream, Received, Reply, free_port, run_sh
from profiles import Profile, profile, upstream
from test_logs_e2e import wait_for_port
from webui import PlainMitmweb

SECRET = "partner-token-5d1e-do-not-record"


def partner(req: Received) -> Reply:
    """A partner API whose answers depend on method, path, query and body."""
    return Reply.json(
        {"method": req.method, "path": req.path, "body": req.body.decode(), "auth_seen": req.header("Authorization") is not None},
        headers=[("X-Partner", "yes")],
    )


def partner_profile(url: str) -> Profile:
    return profile(upstream("partner", f"{url}/api", path_prefix="/partner", auth={"type": "bearer", "token": SECRET}))


EXCHANGES = [
    ("GET", "/partner/customers/42?expand=orders", None),
    ("GET", "/partner/customers/43", None),
    ("POST", "/partner/search", b'{"q": "ada"}'),
    ("POST", "/partner/search", b'{"q": "grace"}'),
]


def exchange(amb: Ambassador, method: str, path: str, body: bytes | None):
    status, headers, payload = amb.request(method, path, {"Content-Type": "application/json"} if body else None, body)
    return status, headers.get("X-Ambassador-Upstream"), headers.get("X-Partner"), payload


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, dict]:
    """Record EXCHANGES against a live partner; the partner is gone afterwards."""
    tmp = tmp_path_factory.mktemp("record")
    flow_file = tmp / "partner.flows"
    with FakeUpstream(partner) as up:
        with Ambassador(tmp, partner_profile(up.url), command=("record", str(flow_file))) as amb:
            answers = {(m, p, b): exchange(amb, m, p, b) for m, p, b in EXCHANGES}
            assert amb.status()["upstreams"]["partner"]  # admin endpoints are not recorded
            assert amb.get("/_ambassador/metrics")[0] == 200
        assert len(up.received) == len(EXCHANGES)
        assert all(r.header("Authorization") == f"Bearer {SECRET}" for r in up.received)
    assert all(status == 200 for status, *_ in answers.values())
    return flow_file, answers


def read_flows(path: Path) -> list:
    with open(path, "rb") as f:
        return list(FlowReader(f).stream())


def client_flows(flows: list) -> list:
    """The clients' flows of a recording, without the upstream exchanges made for them."""
    return [f for f in flows if "exchange" not in f.metadata.get("ambassador", {})]


def test_recording_is_a_mitmproxy_flow_file_without_secrets(recording):
    flow_file, _ = recording
    flows = read_flows(flow_file)
    clients = client_flows(flows)
    assert [(f.request.method, f.request.path) for f in clients] == [(m, p) for m, p, _ in EXCHANGES]
    for f in clients:
        assert f.response.status_code == 200
        assert f.response.headers["X-Ambassador-Upstream"] == "partner"
        assert f.metadata["ambassador"]["upstream"] == "partner"
        assert f.request.headers["Authorization"] == "Bearer [redacted]"  # what was injected, redacted
        assert f.comment.startswith("upstream partner")
    # Each exchange with the partner is a flow of its own: the URL it really had, the
    # credential redacted, linked both ways with the client's flow.
    children = {f.id: f for f in flows if f not in clients}
    assert len(children) == len(EXCHANGES)
    for client in clients:
        [child_id] = client.metadata["ambassador"]["exchanges"]
        child = children[child_id]
        assert child.metadata["ambassador"]["client_flow"] == client.id
        assert child.request.url.startswith(client.metadata["ambassador"]["upstream_url"].split("?")[0])
        assert child.request.path.startswith("/api/")
        assert child.request.headers["Authorization"] == "Bearer [redacted]"
        assert child.response.content == client.response.content
        assert "X-Ambassador-Upstream" not in child.response.headers  # the partner's own answer
    assert SECRET.encode() not in flow_file.read_bytes()


def test_recording_opens_in_mitmweb(recording, tmp_path):
    flow_file, _ = recording
    with PlainMitmweb(tmp_path, flow_file) as web:
        flows = [f for f in web.flows() if f["request"]["path"].startswith("/partner")]
    assert [(f["request"]["method"], f["request"]["path"]) for f in flows] == [(m, p) for m, p, _ in EXCHANGES]
    assert all("upstream partner" in f["comment"] for f in flows)


def test_replay_answers_from_the_recording_with_the_partner_gone(recording, tmp_path):
    flow_file, answers = recording
    # The partner of the recording is stopped; its port may even be reused, so the replay
    # profile points at a live tripwire that must never be contacted.
    with FakeUpstream(partner) as tripwire:
        with Ambassador(tmp_path, partner_profile(tripwire.url), command=("replay", str(flow_file))) as amb:
            for (method, path, body), recorded in answers.items():
                assert exchange(amb, method, path, body) == recorded
            # Served twice: a recording is a fake, not a one-shot script.
            m, p, b = EXCHANGES[0]
            assert exchange(amb, m, p, b) == answers[(m, p, b)]

            # Anything not recorded: 502 not_recorded, never the network.
            for method, path, body in [
                ("GET", "/partner/customers/44", None),  # another path
                ("GET", "/partner/customers/42?expand=invoices", None),  # another query
                ("POST", "/partner/search", b'{"q": "linus"}'),  # another body
                ("DELETE", "/partner/customers/42?expand=orders", None),  # another method
            ]:
                status, headers, payload = amb.request(method, path, body=body)
                assert status == 502, (method, path)
                upstream_path = path.replace("/partner", "/api", 1)
                assert json.loads(payload) == {
                    "error": f"no recorded response for {method} {upstream_path}", "reason": "not_recorded", "upstream": "partner"
                }
                assert headers["X-Ambassador-Upstream"] == "partner"
            # Paths no upstream serves keep their own answer; the admin endpoints answer live.
            assert amb.get("/elsewhere")[0] == 404
            assert amb.status()["upstreams"]["partner"]["url"] == f"{tripwire.url}/api"
            amb.wait_for_log(r"partner GET /partner/customers/42\?expand=orders 200 .*replayed")
            amb.wait_for_log(r"partner GET /partner/customers/44 502 .*reason=not_recorded")
        assert tripwire.received == []


def test_replay_needs_an_existing_recording(tmp_path):
    result = run_sh("replay", str(tmp_path / "missing.flows"), "default")
    assert result.returncode != 0
    assert f"no recording at {tmp_path / 'missing.flows'}" in result.stderr


def test_offline_profile_records_and_replays_the_demo_service(tmp_path):
    """The documented workflow with the shipped profiles/offline.yaml, the demo legacy service
    playing the partner."""
    flow_file = tmp_path / "demo.flows"
    port = free_port()
    env = {"OFFLINE_URL": f"http://127.0.0.1:{port}"}
    offline = ROOT / "profiles" / "offline.yaml"
    demo = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "demo" / "legacy_service.py"), "--port", str(port), "--failure-rate", "0"],
        cwd=ROOT,
    )
    try:
        wait_for_port(port, demo)
        with Ambassador(tmp_path, offline, command=("record", str(flow_file)), env=env) as amb:
            recorded = amb.get("/partner/customers/3")
            assert recorded[0] == 200 and json.loads(recorded[2])["name"] == "Barbara Liskov"
    finally:
        demo.terminate()
        demo.wait(10)
    with Ambassador(tmp_path, offline, command=("replay", str(flow_file)), env=env) as amb:
        replayed = amb.get("/partner/customers/3")
        assert (replayed[0], replayed[2]) == (recorded[0], recorded[2])
        status, _, body = amb.get("/partner/customers/4")
        assert status == 502 and json.loads(body)["reason"] == "not_recorded"


def test_replay_contacts_no_token_endpoint_either(tmp_path):
    """Offline means offline: an unrecorded request to an OAuth2 upstream gets not_recorded
    without the token endpoint hearing of it (no client secret leaves the machine)."""
    recording = tmp_path / "empty.flows"
    recording.write_bytes(b"")
    with FakeUpstream(lambda req: Reply.json({"access_token": "t", "expires_in": 60})) as idp, FakeUpstream() as api:
        oauth = {"type": "oauth2_client_credentials", "token_url": f"{idp.url}/token", "client_id": "app", "client_secret": "s3cret"}
        replayed = profile(upstream("partner", api.url, path_prefix="/partner", auth=oauth))
        with Ambassador(tmp_path, replayed, command=("replay", str(recording))) as amb:
            status, _, body = amb.get("/partner/x")
            assert status == 502 and json.loads(body)["reason"] == "not_recorded"
        assert idp.received == [] and api.received == []


# --- one upstream's recording never answers for another -------------------------------------


def host_profile(alpha_url: str, beta_url: str) -> Profile:
    return profile(upstream("alpha", alpha_url, host="alpha.internal"), upstream("beta", beta_url, host="beta.internal"))


def named(name: str):
    def answer(req: Received) -> Reply:
        return Reply.json({"from": name, "path": req.path})
    return answer


def proxied(amb: Ambassador, host: str, path: str):
    status, headers, body = amb.request("GET", f"http://{host}{path}", {"Host": host})
    return status, headers.get("X-Ambassador-Upstream"), json.loads(body)


def test_replay_answers_each_upstream_from_its_own_recording(tmp_path):
    flow_file = tmp_path / "hosts.flows"
    with FakeUpstream(named("alpha")) as alpha, FakeUpstream(named("beta")) as beta:
        hosts = host_profile(alpha.url, beta.url)
        with Ambassador(tmp_path, hosts, command=("record", str(flow_file))) as amb:
            # The same client request for both: only the host tells them apart.
            assert proxied(amb, "alpha.internal", "/items")[2] == {"from": "alpha", "path": "/items"}
            assert proxied(amb, "beta.internal", "/items")[2] == {"from": "beta", "path": "/items"}
            assert proxied(amb, "alpha.internal", "/solo")[2] == {"from": "alpha", "path": "/solo"}
        recorded = len(alpha.received) + len(beta.received)

        with Ambassador(tmp_path, hosts, command=("replay", str(flow_file))) as amb:
            for _ in range(2):  # in either order, again and again
                assert proxied(amb, "beta.internal", "/items") == (200, "beta", {"from": "beta", "path": "/items"})
                assert proxied(amb, "alpha.internal", "/items") == (200, "alpha", {"from": "alpha", "path": "/items"})
            assert proxied(amb, "alpha.internal", "/solo") == (200, "alpha", {"from": "alpha", "path": "/solo"})
            # alpha's recording of /solo does not answer for beta
            assert proxied(amb, "beta.internal", "/solo") == (
                502, "beta", {"error": "no recorded response for GET /solo", "reason": "not_recorded", "upstream": "beta"},
            )
            amb.wait_for_log(r"beta GET /solo 502 .*reason=not_recorded")
        assert len(alpha.received) + len(beta.received) == recorded  # replay never went out
