"""Profile reloads through the real ambassador: what an upstream keeps across them, and the
files the profile reads (`${file:...}`) being watched like the profile itself."""

import copy
import json

from harness import Ambassador, FakeUpstream, Reply, echo
from oauth_fakes import IdentityProvider
from profiles import Profile, profile, upstream


def reload(amb, edited: Profile) -> None:
    mark = len(amb.lines)
    edited.write(amb.profile_path)
    amb.wait_for_log(r"profile .* loaded", timeout=10, start=mark)


def test_breaker_cache_and_token_survive_an_edit_of_another_upstream(tmp_path):
    idp = IdentityProvider("app", "s3cret")
    with FakeUpstream(lambda req: Reply.json({}, 500)) as broken, FakeUpstream(echo) as catalog, \
            FakeUpstream(idp.token_endpoint) as tokens, FakeUpstream(idp.resource) as api, FakeUpstream(echo) as other:
        oauth = {"type": "oauth2_client_credentials", "token_url": f"{tokens.url}/token", "client_id": "app", "client_secret": "s3cret"}
        loaded = profile(
            upstream("fragile", broken.url, path_prefix="/fragile", breaker={"fail_max": 1, "reset_timeout": "1h"}),
            upstream("catalog", catalog.url, path_prefix="/catalog", cache={"ttl": "1h"}),
            upstream("partner", api.url, path_prefix="/partner", auth=oauth),
            upstream("other", other.url, path_prefix="/other", timeout="5s"),
        )
        with Ambassador(tmp_path, loaded) as amb:
            assert amb.get("/fragile/x")[0] == 500  # opens it
            assert amb.get("/catalog/items")[1]["X-Cache"] == "MISS"
            assert amb.get("/partner/x")[0] == 200
            # Another upstream's section changes; catalog's only in `match`, which is routing.
            edited = copy.deepcopy(loaded)
            edited["upstreams"]["other"]["timeout"] = "7s"
            edited["upstreams"]["catalog"]["match"] = {"path_prefix": "/shop"}
            reload(amb, edited)

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
        def fragile(fail_max: int) -> Profile:
            breaker = {"fail_max": fail_max, "reset_timeout": "1h"}
            return profile(upstream("fragile", broken.url, path_prefix="/fragile", breaker=breaker))

        with Ambassador(tmp_path, fragile(fail_max=1)) as amb:
            assert amb.get("/fragile/x")[0] == 500
            reload(amb, fragile(fail_max=2))
            assert amb.status()["upstreams"]["fragile"]["breaker"] == "closed"
            assert amb.get("/fragile/x")[0] == 500


def test_a_rotated_secret_file_takes_effect_without_a_restart(tmp_path):
    key = tmp_path / "api-key"
    key.write_text("first-key\n")
    with FakeUpstream(echo) as api:
        from_file = {"type": "header", "name": "X-Api-Key", "value": f"${{file:{key}}}"}
        keyed = profile(upstream("api", api.url, path_prefix="/api", auth=from_file))
        with Ambassador(tmp_path, keyed) as amb:
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
        watched = profile(upstream("api", api.url, path_prefix="/api"), upstream("slow", slow.url, path_prefix="/slow"))
        with Ambassador(tmp_path, watched) as amb:
            amb.profile_path.unlink()
            amb.wait_for_log(r"profile .* is gone; keeping the loaded one", timeout=10)
            assert amb.get("/slow/x")[0] == 200  # the watcher looks again meanwhile, twice at least
            assert amb.get("/api/x")[0] == 200
            reload(amb, watched)
            assert amb.output.count("is gone") == 1
