"""OAuth2 client credentials through the real ambassador, in front of a real identity provider
and the resource it protects. Each scenario has its own upstream, identity
provider and resource, so the scenarios do not share token state."""

import json
import threading
import time

import pytest

from harness import Ambassador, FakeUpstream, Reply
from oauth_fakes import IdentityProvider
from profiles import profile, upstream

SCENARIOS = {
    # name: (IdentityProvider arguments, extra keys of its auth section)
    "concurrent": ({"delay": 0.3}, {"scope": "read write"}),
    "revoked": ({}, {}),
    "expiring": ({"expires_in": 1}, {}),
    "outage": ({}, {}),
    "garbage": ({}, {}),
    "body-style": ({}, {"auth_style": "body", "scope": "reports"}),
    "refusing": ({}, {}),
    "paced": ({"delay": 0.2}, {}),
}


class HeldRefusals:
    """The identity provider's resource, whose 401 answers can be held until `parties`
    requests are refused at once: every one of them reaches the ambassador with the same
    refused token, whatever the scheduling."""

    def __init__(self, idp: IdentityProvider):
        self.idp = idp
        self.barrier: threading.Barrier | None = None

    def __call__(self, req):
        reply = self.idp.resource(req)
        if reply.status == 401 and self.barrier is not None:
            self.barrier.wait(timeout=10)
        return reply


@pytest.fixture(scope="module")
def partners():
    started = []
    try:
        for name, (arguments, _) in SCENARIOS.items():
            idp = IdentityProvider("app-" + name, "secret-" + name, **arguments)
            resource = idp.resource if name != "refusing" else lambda req: Reply.json({"error": "invalid_token"}, 401)
            if name == "paced":
                resource = idp.held = HeldRefusals(idp)
            idp.auth, idp.api = FakeUpstream(idp.token_endpoint).__enter__(), FakeUpstream(resource).__enter__()
            started.append(idp)
        yield dict(zip(SCENARIOS, started))
    finally:
        for idp in started:
            idp.auth.__exit__()
            idp.api.__exit__()


@pytest.fixture(scope="module")
def amb(partners, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oauth")
    upstreams = []
    for name, idp in partners.items():
        (folder / f"{name}.secret").write_text(idp.client_secret + "\n")
        auth = {
            "type": "oauth2_client_credentials",
            "token_url": f"{idp.auth.url}/oauth/token",
            "client_id": f"${{CLIENT_ID_PREFIX}}{name}",
            "client_secret": f"${{file:{name}.secret}}",
            **SCENARIOS[name][1],
        }
        upstreams.append(upstream(name, f"{idp.api.url}/v1", path_prefix=f"/{name}", timeout="2s", auth=auth))
    with Ambassador(folder, profile(*upstreams), env={"CLIENT_ID_PREFIX": "app-"}) as a:
        yield a


def test_twenty_concurrent_requests_cause_one_token_fetch(amb, partners):
    idp = partners["concurrent"]
    results = [None] * 20

    def call(i):
        results[i] = amb.get(f"/concurrent/items/{i}", {"Authorization": "Bearer the-clients-own"})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _, _ in results] == [200] * 20
    assert len(idp.token_requests) == 1
    assert {idp.token_in(body) for _, _, body in results} == {idp.issued[0]}
    # the client's own credential was replaced, never forwarded
    assert idp.resource_requests == [f"Bearer {idp.issued[0]}"] * 20
    assert idp.token_requests[0]["form"] == {"grant_type": "client_credentials", "scope": "read write"}
    assert idp.token_requests[0]["style"] == "basic"


def test_body_style_sends_the_client_credentials_in_the_form(amb, partners):
    idp = partners["body-style"]
    status, _, body = amb.get("/body-style/r")
    assert status == 200, body
    (received,) = idp.token_requests
    assert received["style"] == "body"
    assert received["form"] == {
        "grant_type": "client_credentials", "scope": "reports", "client_id": "app-body-style", "client_secret": "secret-body-style",
    }


def test_a_revoked_token_is_dropped_and_the_request_retried_once(amb, partners):
    idp = partners["revoked"]
    status, _, body = amb.get("/revoked/a")
    assert status == 200 and idp.token_in(body) == idp.issued[0]
    idp.revoke_all()
    status, _, body = amb.get("/revoked/b")
    assert status == 200, body
    assert idp.token_in(body) == idp.issued[1]
    assert len(idp.token_requests) == 2
    assert idp.resource_requests == [f"Bearer {idp.issued[0]}", f"Bearer {idp.issued[0]}", f"Bearer {idp.issued[1]}"]
    status, _, body = amb.get("/revoked/c")
    assert idp.token_in(body) == idp.issued[1] and len(idp.token_requests) == 2


def test_an_upstream_that_keeps_refusing_gets_one_retry_and_its_401_is_passed_on(amb, partners):
    idp = partners["refusing"]
    status, headers, body = amb.get("/refusing/x")
    assert status == 401 and json.loads(body) == {"error": "invalid_token"}
    assert headers["X-Ambassador-Upstream"] == "refusing"
    assert len(idp.token_requests) == 2  # the first token, then one renewal
    assert len(idp.api.received) == 2


def test_concurrent_401s_cause_one_token_fetch_and_later_401s_none_for_5_seconds(amb, partners):
    idp = partners["paced"]
    status, _, body = amb.get("/paced/warm-up")
    assert status == 200 and idp.token_in(body) == idp.issued[0]
    idp.revoke_all()
    idp.held.barrier = threading.Barrier(10)
    results = [None] * 10

    def call(i):
        results[i] = amb.get(f"/paced/{i}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    idp.held.barrier = None
    assert [status for status, _, _ in results] == [200] * 10
    assert {idp.token_in(body) for _, _, body in results} == {idp.issued[1]}
    assert len(idp.token_requests) == 2  # ten 401s at once, one renewal
    # The renewed token is refused too, moments later: no fetch, the 401 goes to the client as it is.
    idp.revoke_all()
    for i in range(20):
        status, headers, body = amb.get(f"/paced/again/{i}")
        assert status == 401 and json.loads(body) == {"error": "invalid_token"}
        assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert len(idp.token_requests) == 2
    assert amb.status()["upstreams"]["paced"]["auth"]["refusals_not_refetched"] == 20


def test_a_partner_refusing_every_token_costs_two_fetches_not_one_per_request(amb, partners):
    idp = partners["refusing"]
    before = len(idp.token_requests)
    for i in range(50):
        assert amb.get(f"/refusing/many/{i}")[0] == 401
    assert len(idp.token_requests) - before <= 2  # a first token and a renewal at most, in the seconds this takes


def test_an_expired_token_is_replaced_before_use(amb, partners):
    idp = partners["expiring"]  # tokens live 1s
    status, _, body = amb.get("/expiring/a")
    assert status == 200
    first = idp.token_in(body)
    time.sleep(1.2)  # waiting out the token's lifetime is the event under test
    status, _, body = amb.get("/expiring/b")
    assert status == 200
    assert idp.token_in(body) != first
    # the resource never saw an expired token: every request it got was accepted
    assert len(idp.api.received) == 2


def test_token_endpoint_outage_gives_502_auth_failed_without_upstream_contact(amb, partners):
    idp = partners["outage"]
    idp.down = True
    started = time.monotonic()
    status, headers, body = amb.get("/outage/x")
    elapsed = time.monotonic() - started
    answer = json.loads(body)
    assert status == 502
    assert answer["reason"] == "auth_failed" and answer["upstream"] == "outage"
    assert "HTTP 503" in answer["error"]
    assert headers["X-Ambassador-Upstream"] == "outage"
    assert idp.api.received == []
    assert len(idp.token_requests) >= 2  # retried with backoff ...
    assert elapsed < 5  # ... within the upstream's 2s timeout
    started = time.monotonic()
    status, _, body = amb.get("/outage/x", {"X-Ambassador-Timeout": "300ms"})
    assert status == 502 and json.loads(body)["reason"] == "auth_failed"
    assert time.monotonic() - started < 1.5  # the client's shorter timeout bounds the wait for a token
    idp.down = False
    status, _, body = amb.get("/outage/y")  # the failure was not remembered
    assert status == 200 and idp.token_in(body) == idp.issued[0]


def test_garbage_from_the_token_endpoint_is_retried(amb, partners):
    idp = partners["garbage"]
    idp.script = [Reply(200, [], b""), Reply(200, [], b"<html>oops</html>"), Reply.json({"token_type": "Bearer"})]
    status, _, body = amb.get("/garbage/x")
    assert status == 200, body
    assert len(idp.token_requests) == 4 and idp.token_in(body) == idp.issued[0]
    idp.script = [Reply(200, [], b"")] * 1000
    idp.revoke_all()
    status, _, body = amb.get("/garbage/y")
    assert status == 502 and json.loads(body)["reason"] == "auth_failed"
    assert "empty body" in json.loads(body)["error"]


def test_status_shows_token_counters_never_the_token(amb, partners):
    amb.get("/concurrent/items/again")
    status = amb.status()
    auth = status["upstreams"]["concurrent"]["auth"]
    assert auth["type"] == "oauth2"
    assert auth["token_fetches"] == 1 and auth["token_failures"] == 0
    assert 3000 < auth["token_expires_in"] <= 3600
    text = json.dumps(status)
    for idp in partners.values():
        assert idp.client_secret not in text
        for token in idp.issued:
            assert token not in text


def test_token_fetches_are_in_the_prometheus_metrics(amb, partners):
    amb.get("/concurrent/items/metered")
    status, _, body = amb.get("/_ambassador/metrics")
    assert status == 200
    lines = body.decode().splitlines()
    assert 'ambassador_token_fetches_total{outcome="ok",upstream="concurrent"} 1.0' in lines
