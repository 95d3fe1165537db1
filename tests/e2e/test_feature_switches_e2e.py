"""The features' switches (`ambassador_cache`, `ambassador_retry`...) and their new commands
(`ambassador.auth.refresh`, `ambassador.limit.resume`), on the real ambassador in front of real
upstreams: from the command line, and at run time from mitmweb's options editor and command
bar (its REST API, as the UI calls it)."""

import json

import pytest

from harness import Ambassador, FakeUpstream, Reply, Switch
from oauth_fakes import IdentityProvider
from profiles import Profile, profile, upstream
from webui import WebAmbassador


def cacheable(req) -> Reply:
    return Reply.json({"path": req.path}, headers=[("Cache-Control", "max-age=3600")])


def cached_and_retried(catalog: FakeUpstream, flaky: FakeUpstream) -> Profile:
    return profile(
        upstream("catalog", catalog.url, path_prefix="/catalog", cache={}),
        upstream("flaky", flaky.url, path_prefix="/flaky", retry={"attempts": 3, "backoff": "10ms", "statuses": [503]}),
    )


def test_switched_off_on_the_command_line_every_request_reaches_the_upstream(tmp_path):
    flaky_answers = Switch()
    flaky_answers.reply = Reply(503, body=b"busy")
    with FakeUpstream(cacheable) as catalog, FakeUpstream(flaky_answers) as flaky:
        with Ambassador(
            tmp_path, cached_and_retried(catalog, flaky), "--set", "ambassador_cache=false", "--set", "ambassador_retry=false"
        ) as amb:
            for _ in range(3):
                status, headers, _ = amb.get("/catalog/items")
                assert status == 200 and "X-Cache" not in headers
            assert len(catalog.received) == 3  # no answer from the cache

            status, _, body = amb.get("/flaky/a")
            assert (status, body) == (503, b"busy")  # the first failure is the answer
            assert flaky_answers.count == 1

            report = amb.status()
            assert report["switched_off"] == ["cache", "retry"]
            assert "cache" in report["upstreams"]["catalog"]  # still there, only not applied


@pytest.fixture(scope="module")
def idp():
    provider = IdentityProvider("app", "s3cret")
    with FakeUpstream(provider.token_endpoint) as auth, FakeUpstream(provider.resource) as api:
        provider.url = auth.url
        yield provider, api


class Partner:
    """An upstream that asks for a pause (429 with Retry-After) when told to."""

    def __init__(self):
        self.busy = False
        self.received = 0

    def __call__(self, req) -> Reply:
        self.received += 1
        if self.busy:
            return Reply.json({"error": "slow down"}, 429, [("Retry-After", "3600")])
        return Reply.json({"path": req.path})


@pytest.fixture(scope="module")
def web(tmp_path_factory, idp):
    provider, api = idp
    partner = Partner()
    with FakeUpstream(cacheable) as catalog, FakeUpstream(partner) as paced:
        built = profile(
            upstream("catalog", catalog.url, path_prefix="/catalog", cache={}),
            upstream(
                "partner", api.url, path_prefix="/partner",
                auth={"type": "oauth2_client_credentials", "token_url": f"{provider.url}/oauth/token", "client_id": "app", "client_secret": "s3cret"},
            ),
            upstream("paced", paced.url, path_prefix="/paced", limit={"rate": "100/s", "max_wait": "1s"}),
        )
        with WebAmbassador(tmp_path_factory.mktemp("switches"), built) as amb:
            yield amb, catalog, partner


def test_a_switch_flipped_in_mitmweb_applies_at_once_and_keeps_the_cache(web):
    amb, catalog, _ = web
    assert amb.get("/catalog/kept")[0] == 200
    status, headers, _ = amb.get("/catalog/kept")
    assert status == 200 and headers["X-Cache"] == "HIT"
    before = len(catalog.received)

    start = len(amb.lines)
    assert amb.web_request("PUT", "/options", {"ambassador_cache": False})[0] == 200
    amb.wait_for_log(r"cache sections switched off for every upstream", start=start)
    assert amb.status()["switched_off"] == ["cache"]
    for _ in range(2):
        status, headers, _ = amb.get("/catalog/kept")
        assert status == 200 and "X-Cache" not in headers
    assert len(catalog.received) == before + 2

    assert amb.web_request("PUT", "/options", {"ambassador_cache": True})[0] == 200
    assert amb.status()["switched_off"] == []
    status, headers, _ = amb.get("/catalog/kept")
    assert status == 200 and headers["X-Cache"] == "HIT"  # the entry cached before
    assert len(catalog.received) == before + 2


def test_auth_refresh_from_the_command_bar_fetches_a_fresh_token(web, idp):
    amb, _, _ = web
    provider, _ = idp
    status, body = amb.get_json("/partner/a")
    assert status == 200 and body["token_number"] == 0
    assert amb.get_json("/partner/b")[1]["token_number"] == 0  # the token is held

    start = len(amb.lines)
    assert amb.command("ambassador.auth.refresh", "partner") == {"value": None}
    amb.wait_for_log(r"token of partner dropped by command", start=start)
    status, body = amb.get_json("/partner/c")
    assert status == 200 and body["token_number"] == 1
    assert len(provider.token_requests) == 2

    assert "has no auth" in amb.command("ambassador.auth.refresh", "catalog")["error"]


def test_limit_resume_from_the_command_bar_ends_the_upstreams_pause(web):
    amb, _, partner = web
    partner.busy = True
    status, _, _ = amb.get("/paced/a")
    assert status == 429  # the upstream's own answer: it asks for an hour's pause
    partner.busy = False
    received = partner.received
    status, headers, body = amb.get("/paced/b")
    assert status == 429 and json.loads(body)["reason"] == "rate_limited"  # waiting cannot help
    assert partner.received == received and amb.status()["upstreams"]["paced"]["limit"]["paused_until"]

    start = len(amb.lines)
    assert amb.command("ambassador.limit.resume", "paced") == {"value": None}
    amb.wait_for_log(r"pause of paced ended by command", start=start)
    assert amb.get("/paced/c")[0] == 200
    assert partner.received == received + 1
    assert amb.status()["upstreams"]["paced"]["limit"]["paused_until"] is None
    assert "is not paused" in amb.command("ambassador.limit.resume", "paced")["error"]
