"""Who may use the ambassador, through the real ambassador on every door: other sites' pages,
DNS rebinding, TRACE/TRACK, control bytes in header fields, paths that climb out of their
prefix, and client headers that read as the injected credential."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from harness import Ambassador, FakeUpstream, echo
from profiles import Profile, profile, upstream

ALLOWED_ORIGIN = "https://app.example.com"
ALLOWED_HOST = "ambassador.internal"


def gated_profile(app_url: str, key_url: str, origins: str = ALLOWED_ORIGIN) -> Profile:
    return profile(
        upstream("app", f"{app_url}/base", path_prefix="/app", host="app.internal"),
        upstream(
            "keyed", key_url, path_prefix="/keyed", host="keyed.internal",
            auth={"type": "header", "name": "X-Api-Key", "value": "injected-key"},
        ),
        upstream("bearer", key_url, path_prefix="/bearer", auth={"type": "bearer", "token": "injected-token"}),
        aggregates={"/dash/{id}": {"one": "app:/one/{id}"}},
        allowed_origins=[origins],
        allowed_hosts=[ALLOWED_HOST],
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with FakeUpstream(echo) as app, FakeUpstream(echo) as keyed:
        with Ambassador(tmp_path_factory.mktemp("gate"), gated_profile(app.url, keyed.url)) as amb:
            yield amb, app, keyed
            assert "Traceback" not in amb.output


@dataclass(frozen=True)
class Door:
    name: str
    method: str
    target: str
    passes_with: int  # the status of a request the gate lets in
    body: bytes | None = None
    proxy_host: str | None = None  # a proxy request for this upstream host

    def send(self, amb: Ambassador, headers: dict, host: str | None = None):
        host = self.proxy_host or host or f"127.0.0.1:{amb.port}"
        return amb.request(self.method, self.target, {"Host": host, **headers}, self.body)


DOORS = [
    Door("path route", "GET", "/app/x", 200),
    Door("proxy request", "GET", "http://app.internal/x", 200, proxy_host="app.internal"),
    Door("aggregate", "GET", "/dash/7", 200),
    Door("batch", "POST", "/_ambassador/batch", 200, body=b'[{"path": "/app/x"}]'),
    Door("job", "GET", "/_ambassador/jobs/x", 404),
    Door("status", "GET", "/_ambassador/status", 200),
    Door("metrics", "GET", "/_ambassador/metrics", 200),
]
AMBASSADOR_DOORS = [door for door in DOORS if not door.proxy_host]
ids = lambda door: door.name  # noqa: E731


def reason(answer) -> str | None:
    status, _, body = answer
    try:
        return json.loads(body).get("reason")
    except ValueError:
        return None


CROSS_SITE = {
    "other site": {"Origin": "http://attacker.example"},
    "null origin": {"Origin": "null"},
    "sec-fetch-site cross-site": {"Sec-Fetch-Site": "cross-site"},
    "sec-fetch-site same-site": {"Sec-Fetch-Site": "same-site", "Origin": "http://sub.example.com"},
}


@pytest.mark.parametrize("door", DOORS, ids=ids)
@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_other_sites_pages_are_refused_and_reach_no_upstream(setup, door, headers):
    amb, app, _ = setup
    before = len(app.received)
    answer = door.send(amb, headers)
    assert (answer[0], reason(answer)) == (403, "not_allowed")
    assert "allowed_origins" in json.loads(answer[2])["error"]
    assert len(app.received) == before


@pytest.mark.parametrize("door", DOORS, ids=ids)
@pytest.mark.parametrize("headers", [
    {},  # apps, curl, SDKs
    {"Origin": ALLOWED_ORIGIN},
    {"Origin": "HTTPS://APP.example.com:443", "Sec-Fetch-Site": "cross-site"},
], ids=["no origin", "allowed origin", "allowed origin, cross-site"])
def test_apps_and_allowed_origins_pass(setup, door, headers):
    amb, _, _ = setup
    assert door.send(amb, headers)[0] == door.passes_with


@pytest.mark.parametrize("door", AMBASSADOR_DOORS, ids=ids)
def test_the_ambassadors_own_pages_pass(setup, door):
    amb, _, _ = setup
    same_origin = {"Origin": f"http://127.0.0.1:{amb.port}", "Sec-Fetch-Site": "same-origin"}
    assert door.send(amb, same_origin)[0] == door.passes_with
    assert door.send(amb, {"Origin": f"http://localhost:{amb.port}"}, host=f"localhost:{amb.port}")[0] == door.passes_with


@pytest.mark.parametrize("door", AMBASSADOR_DOORS, ids=ids)
def test_hosts_in_allowed_hosts_pass_and_others_are_refused(setup, door):
    amb, app, _ = setup
    assert door.send(amb, {}, host=f"{ALLOWED_HOST}:{amb.port}")[0] == door.passes_with
    assert door.send(amb, {}, host=ALLOWED_HOST)[0] == door.passes_with  # behind a port mapping
    before = len(app.received)
    answer = door.send(amb, {}, host=f"attacker.example:{amb.port}")
    assert (answer[0], reason(answer)) == (403, "not_allowed")
    assert "allowed_hosts" in json.loads(answer[2])["error"]
    assert len(app.received) == before


@pytest.mark.parametrize("method", ["TRACE", "TRACK"])
@pytest.mark.parametrize("door", [DOORS[0], DOORS[1], DOORS[5]], ids=ids)
def test_trace_and_track_are_refused_on_every_door(setup, door, method):
    amb, app, _ = setup
    before = len(app.received)
    answer = amb.request(method, door.target, {"Host": door.proxy_host or f"127.0.0.1:{amb.port}"})
    assert (answer[0], reason(answer)) == (405, "method_not_allowed")
    assert len(app.received) == before


FIELDS = {
    "obs-fold": b"X-A: a\r\n b",
    "bare CR": b"X-A: a\rb",
    "NUL": b"X-A: a\x00b",
    "0x01": b"X-A: a\x01b",
    "0x1f": b"X-A: \x1f",
    "DEL": b"X-A: a\x7fb",
}


@pytest.mark.parametrize("target, host", [("/app/x", None), ("http://app.internal/x", "app.internal")], ids=["route", "proxy"])
@pytest.mark.parametrize("field", FIELDS.values(), ids=FIELDS.keys())
def test_control_bytes_in_header_fields_get_400_and_go_nowhere(setup, field, target, host):
    amb, app, _ = setup
    before = len(app.received)
    host = host or f"127.0.0.1:{amb.port}"
    raw = amb.raw(b"POST %s HTTP/1.1\r\nHost: %s\r\n%s\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody" % (target.encode(), host.encode(), field))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), raw
    assert json.loads(body)["reason"] == "bad_request"
    assert len(app.received) == before


@pytest.mark.parametrize("name", [b"X\x01A", b"X A", b"X\x7fA", b"Caf\xc3\xa9"])
def test_a_bad_byte_in_a_field_name_gets_the_ambassadors_400(setup, name):
    amb, app, _ = setup
    before = len(app.received)
    raw = amb.raw(b"GET /app/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s: a\r\nConnection: close\r\n\r\n" % (amb.port, name))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), raw
    assert json.loads(body)["reason"] == "bad_request"
    assert len(app.received) == before


CLIMBS = [
    b"/%25252e%25252e/secret", b"/%c0%ae%c0%ae/secret", b"/\xef\xbc\x8e\xef\xbc\x8e/secret",
    b"/%ef%bc%8e%ef%bc%8e/secret", b"/..%00/secret", b"/%252e%c0%ae\xef\xbc\x8e;x/secret",
]


@pytest.mark.parametrize("prefix, host", [(b"/app", None), (b"http://app.internal", b"app.internal")], ids=["route", "proxy"])
@pytest.mark.parametrize("climb", CLIMBS)
def test_paths_climbing_out_of_the_prefix_in_any_encoding_get_400(setup, climb, prefix, host):
    amb, app, _ = setup
    before = len(app.received)
    host = host or b"127.0.0.1:%d" % amb.port
    raw = amb.raw(b"GET %s%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (prefix, climb, host))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), raw
    assert json.loads(body)["reason"] == "bad_request"
    assert len(app.received) == before


@pytest.mark.parametrize("path, header, injected", [
    ("/keyed/x", "X-Api-Key", "injected-key"),
    ("/bearer/x", "Authorization", "Bearer injected-token"),
])
def test_the_upstream_sees_only_the_injected_credential(setup, path, header, injected):
    amb, app, keyed = setup
    upstream = keyed  # both routes lead there
    before = len(upstream.received)
    lookalikes = [(header.replace("-", "_"), "client-1"), (header.upper().replace("-", "_"), "client-2"), (header.lower(), "client-3")]
    status, _, body = amb.request("GET", path, [("Host", f"127.0.0.1:{amb.port}"), *lookalikes, ("X_Other", "kept")])
    assert status == 200
    [seen] = upstream.received[before:]
    assert [v for k, v in seen.headers if k.lower().replace("_", "-") == header.lower()] == [injected]
    assert ("X_Other", "kept") in seen.headers
    assert injected.split()[-1] not in body.decode()  # what the upstream echoes of it comes back redacted


def test_a_reload_applies_new_lists(tmp_path):
    with FakeUpstream(echo) as app:
        with Ambassador(tmp_path, gated_profile(app.url, app.url)) as amb:
            newcomer = {"Host": f"127.0.0.1:{amb.port}", "Origin": "https://new.example.com"}
            assert amb.request("GET", "/app/x", newcomer)[0] == 403
            mark = len(amb.lines)
            gated_profile(app.url, app.url, origins="https://new.example.com").write(amb.profile_path)
            amb.wait_for_log(r"profile .* loaded", start=mark)
            assert amb.request("GET", "/app/x", newcomer)[0] == 200
            assert amb.request("GET", "/app/x", {"Host": f"127.0.0.1:{amb.port}", "Origin": ALLOWED_ORIGIN})[0] == 403
