"""Profile reloads through the real ambassador: what an upstream keeps across them, and the
files the profile reads (`${file:...}`) being watched like the profile itself."""

import json

from harness import Ambassador, FakeUpstream, Reply, echo
from oauth_fakes import IdentityProvider


def reload(amb, text: str) -> None:
    mark = len(amb.lines)
    amb.profile_path.write_text(text)
    amb.wait_for_log(r"profile .* loaded", timeout=10, start=mark)


def test_breaker_cache_and_token_survive_an_edit_of_another_upstream(tmp_path):
    idp = IdentityProvider("app", "s3cret")
    with FakeUpstream(lambda req: Reply.json({}, 500)) as broken, FakeUpstream(echo) as catalog, \
            FakeUpstream(idp.token_endpoint) as tokens, FakeUpstream(idp.resource) as api, FakeUpstream(echo) as other:
        profile = f"""
upstreams:
  fragile:
    url: {broken.url}
    match: {{path_prefix: /fragile}}
    breaker: {{fail_max: 1, reset_timeout: 1h}}
  catalog:
    url: {catalog.url}
    match: {{path_prefix: /catalog}}
    cache: {{ttl: 1h}}
  partner:
    url: {api.url}
    match: {{path_prefix: /partner}}
    auth: {{type: oauth2_client_credentials, token_url: {tokens.url}/token, client_id: app, client_secret: s3cret}}
  other:
    url: {other.url}
    match: {{path_prefix: /other}}
    timeout: 5s
"""
        with Ambassador(tmp_path, profile) as amb:
            assert amb.get("/fragile/x")[0] == 500  # opens it
            assert amb.get("/catalog/items")[1]["X-Cache"] == "MISS"
            assert amb.get("/partner/x")[0] == 200
            # Another upstream's section changes; catalog's only in `match`, which is routing.
            reload(amb, profile.replace("timeout: 5s", "timeout: 7s").replace("/catalog}", "/shop}"))

            status, _, body = amb.get("/fragile/x")
            assert status == 503 and json.loads(body)["reason"] == "circuit_open"
            assert len(broken.received) == 1
            assert amb.status()["upstreams"]["fragile"]["breaker"] == "open"
            assert amb.get("/shop/items")[1]["X-Cache"] == "HIT"
            assert len(catalog.received) == 1
            assert amb.get("/partner/x")[0] == 200
            assert len(idp.issued) == 1  # not fetched again
            assert amb.get("/other/x")[0] == 200


def test_a_changed_section_starts_afresh(tmp_path):
    with FakeUpstream(lambda req: Reply.json({}, 500)) as broken:
        profile = f"""
upstreams:
  fragile:
    url: {broken.url}
    match: {{path_prefix: /fragile}}
    breaker: {{fail_max: 1, reset_timeout: 1h}}
"""
        with Ambassador(tmp_path, profile) as amb:
            assert amb.get("/fragile/x")[0] == 500
            reload(amb, profile.replace("fail_max: 1", "fail_max: 2"))
            assert amb.status()["upstreams"]["fragile"]["breaker"] == "closed"
            assert amb.get("/fragile/x")[0] == 500


def test_a_rotated_secret_file_takes_effect_without_a_restart(tmp_path):
    key = tmp_path / "api-key"
    key.write_text("first-key\n")
    with FakeUpstream(echo) as api:
        profile = f"""
upstreams:
  api:
    url: {api.url}
    match: {{path_prefix: /api}}
    auth: {{type: header, name: X-Api-Key, value: "${{file:{key}}}"}}
"""
        with Ambassador(tmp_path, profile) as amb:
            assert amb.get("/api/x")[0] == 200
            mark = len(amb.lines)
            key.write_text("second-key-rotated\n")
            amb.wait_for_log(r"profile .* loaded", timeout=10, start=mark)
            assert amb.get("/api/x")[0] == 200
            mark = len(amb.lines)
            key.unlink()  # the profile can no longer be read: refused, the running one stays
            amb.wait_for_log(r"profile refused", timeout=10, start=mark)
            assert amb.get("/api/x")[0] == 200
    sent = [req.header("X-Api-Key") for req in api.received]
    assert sent == ["first-key", "second-key-rotated", "second-key-rotated"]


def test_a_deleted_profile_is_logged_once_and_the_loaded_one_stays(tmp_path):
    with FakeUpstream(echo) as api, FakeUpstream(lambda req: Reply.json({}, delay=2.5)) as slow:
        profile = f"""
upstreams:
  api:
    url: {api.url}
    match: {{path_prefix: /api}}
  slow:
    url: {slow.url}
    match: {{path_prefix: /slow}}
"""
        with Ambassador(tmp_path, profile) as amb:
            amb.profile_path.unlink()
            amb.wait_for_log(r"profile .* is gone; keeping the loaded one", timeout=10)
            assert amb.get("/slow/x")[0] == 200  # the watcher looks again meanwhile, twice at least
            assert amb.get("/api/x")[0] == 200
            reload(amb, profile)
            assert amb.output.count("is gone") == 1
