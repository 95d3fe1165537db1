"""The features' own addons (auth, cache, breaker, retry, limit, hedge, failover, fallback) with
mitmproxy's test context: their options switch a real profile's stages off and on, and their
commands act on a real gateway's stages."""

import asyncio
import functools
import time

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons
from multidict import CIMultiDict

from addons.auth import Auth
from addons.breaker_addon import Breaker
from addons.cache.cache_addon import Cache
from addons.failover import Failover
from addons.exchange import UpstreamRequest
from addons.fallback import Fallback
from addons.hedge import Hedge
from addons.limit import Limit, limit_stage
from addons.profile_manager import ProfileManager
from addons.replay import Recording
from addons.retry import Retry
from addons.suite import make_addons
from harness import FakeUpstream
from oauth_fakes import IdentityProvider
from profiles import Profile, profile, upstream

SWITCHES = {Cache: "cache", Breaker: "breaker", Retry: "retry", Limit: "limit", Hedge: "hedge", Failover: "failover", Fallback: "fallback"}

def every_feature(ttl: str = "60s") -> Profile:
    return profile(
        upstream(
            "billing", "http://127.0.0.1:9/v2", path_prefix="/billing",
            auth={"type": "bearer", "token": "secret-token"},
            cache={"ttl": ttl},
            breaker={"fail_max": 5, "reset_timeout": "1h"},
            retry={"attempts": 3, "backoff": "10ms"},
            hedge={"after": "300ms", "max": 1},
            failover=["http://127.0.0.1:10/v2"],
            fallback={"status": 200, "body": '{"items": []}'},
            limit={"rate": "50/s", "follow_upstream": True},
        ),
        upstream("plain", "http://127.0.0.1:11", path_prefix="/plain"),
    )


EVERY_FEATURE = every_feature()


def in_loop(scenario):
    """A test running `scenario` (a coroutine function) in an event loop of its own: the
    commands start their operations on the running loop, as they do in mitmproxy."""

    @functools.wraps(scenario)  # pytest passes the scenario's fixtures
    def test(*args, **kwargs):
        asyncio.run(scenario(*args, **kwargs))

    return test


def write(tmp_path, built: Profile, name: str = "p.yaml") -> str:
    return str(built.write(tmp_path / name))


def features(manager: ProfileManager) -> list:
    return [cls(manager) for cls in (Auth, *SWITCHES)]


def chain_of(manager: ProfileManager, upstream: str = "billing") -> list[str]:
    return [stage.name for stage in manager.gateway.services[upstream].chain]


def test_the_suite_lists_every_feature_addon_and_none_costs_a_call_per_request():
    feature_addons = [addon for addon in make_addons() if type(addon) in {Auth, *SWITCHES}]
    assert {type(addon) for addon in feature_addons} == {Auth, *SWITCHES}
    for addon in feature_addons:  # AmbassadorAddons calls only the children that have a hook
        assert not any(hasattr(addon, hook) for hook in ("requestheaders", "request", "responseheaders", "response"))


def test_each_switch_is_an_option_of_its_own_on_by_default(tmp_path):
    manager = ProfileManager()
    with taddons.context(manager, *features(manager)) as tctx:
        for section in SWITCHES.values():
            assert getattr(tctx.options, f"ambassador_{section}") is True
            with pytest.raises(exceptions.OptionsError):
                tctx.options.set(f"ambassador_{section}=sometimes")
            assert getattr(tctx.options, f"ambassador_{section}") is True


def test_switching_a_feature_off_and_on_changes_the_chain_and_keeps_the_stage(tmp_path):
    manager = ProfileManager()
    addons = features(manager)
    with taddons.context(manager, *addons) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, EVERY_FEATURE))
        service = manager.gateway.services["billing"]
        everything = ["fallback", "cache", "retry", "hedge", "failover", "breaker", "limit", "auth"]
        assert chain_of(manager) == everything
        stages = list(service.stages)

        for addon, section in zip(addons[1:], SWITCHES.values()):
            tctx.configure(addon, **{f"ambassador_{section}": False})
            assert chain_of(manager) == [name for name in everything if name != section]
            assert manager.gateway.status()["switched_off"] == [section]
            tctx.configure(addon, **{f"ambassador_{section}": True})
            assert chain_of(manager) == everything
            assert manager.gateway.status()["switched_off"] == []
        assert service.stages == stages  # the very same stages, never rebuilt

        tctx.configure(addons[1], ambassador_cache=False)
        tctx.configure(addons[3], ambassador_retry=False)
        assert chain_of(manager) == ["fallback", "hedge", "failover", "breaker", "limit", "auth"]
        assert chain_of(manager, "plain") == []
        assert manager.gateway.status()["switched_off"] == ["cache", "retry"]


@in_loop
async def test_a_switched_off_feature_keeps_its_state_for_when_it_is_on_again(tmp_path):
    manager = ProfileManager()
    breaker, limit = Breaker(manager), Limit(manager)
    with taddons.context(manager, breaker, limit) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, EVERY_FEATURE))
        service = manager.gateway.services["billing"]
        tctx.command(breaker.breaker_open, "billing")
        until = time.time() + 3600
        await service.stage("limit").pause(until)

        tctx.configure(breaker, ambassador_breaker=False)
        tctx.configure(limit, ambassador_limit=False)
        assert "breaker" not in chain_of(manager) and "limit" not in chain_of(manager)
        tctx.configure(breaker, ambassador_breaker=True)
        tctx.configure(limit, ambassador_limit=True)

        assert service.stage("breaker") in service.chain
        assert service.status()["breaker"].startswith("open")
        assert service.stage("limit").state.paused_until == until


def test_a_new_profile_runs_with_the_features_switched_off(tmp_path):
    manager = ProfileManager()
    cache = Cache(manager)
    with taddons.context(manager, cache) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, EVERY_FEATURE))
        tctx.configure(cache, ambassador_cache=False)
        old = manager.gateway.services["billing"]

        changed = every_feature(ttl="30s")  # rebuilds billing's service
        tctx.configure(manager, ambassador_profile=write(tmp_path, changed, "q.yaml"))
        new = manager.gateway.services["billing"]
        assert new is not old and new.stage("cache") is not None
        assert "cache" not in chain_of(manager)
        assert manager.gateway.status()["switched_off"] == ["cache"]

        tctx.configure(cache, ambassador_cache=True)
        assert "cache" in chain_of(manager)


def test_replay_and_the_switches_each_keep_their_own_part_of_the_chain(tmp_path):
    manager = ProfileManager()
    retry = Retry(manager)
    with taddons.context(manager, retry) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, EVERY_FEATURE))
        tctx.configure(retry, ambassador_retry=False)
        manager.gateway.set_replay(Recording({}))
        assert "auth" not in chain_of(manager) and "retry" not in chain_of(manager)
        manager.gateway.set_replay(None)
        assert "auth" in chain_of(manager) and "retry" not in chain_of(manager)
        tctx.configure(retry, ambassador_retry=True)
        assert chain_of(manager) == ["fallback", "cache", "retry", "hedge", "failover", "breaker", "limit", "auth"]


# --- ambassador.auth.refresh ------------------------------------------------------------------

@pytest.fixture
def idp():
    provider = IdentityProvider("app", "s3cret")
    with FakeUpstream(provider.token_endpoint) as server:
        provider.url = server.url
        yield provider


def oauth_profile(idp) -> Profile:
    return profile(
        upstream(
            "partner", "http://127.0.0.1:9", path_prefix="/partner",
            auth={"type": "oauth2_client_credentials", "token_url": f"{idp.url}/oauth/token", "client_id": "app", "client_secret": "s3cret"},
        ),
        upstream("fixed", "http://127.0.0.1:10", path_prefix="/fixed", auth={"type": "bearer", "token": "secret-token"}),
        upstream("open", "http://127.0.0.1:11", path_prefix="/open"),
    )


@in_loop
async def test_auth_refresh_makes_the_next_request_fetch_a_fresh_token(tmp_path, idp):
    manager = ProfileManager()
    auth = Auth(manager)
    with taddons.context(manager, auth) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, oauth_profile(idp)))
        tokens = manager.gateway.services["partner"].stage("auth").tokens
        try:
            with pytest.raises(exceptions.CommandError, match="holds no token yet"):
                tctx.command(auth.auth_refresh, "partner")

            first = await tokens.token(time.monotonic() + 5)
            assert await tokens.token(time.monotonic() + 5) == first  # held, not fetched again
            tctx.command(auth.auth_refresh, "partner")
            second = await tokens.token(time.monotonic() + 5)
            assert second != first and idp.issued == [first, second]
        finally:
            await tokens.close()


def test_auth_refresh_refuses_what_has_no_token(tmp_path, idp):
    manager = ProfileManager()
    auth = Auth(manager)
    with taddons.context(manager, auth) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, oauth_profile(idp)))
        with pytest.raises(exceptions.CommandError, match="no upstream 'nowhere'"):
            tctx.command(auth.auth_refresh, "nowhere")
        with pytest.raises(exceptions.CommandError, match="has no auth"):
            tctx.command(auth.auth_refresh, "open")
        with pytest.raises(exceptions.CommandError, match="fixed credential"):
            tctx.command(auth.auth_refresh, "fixed")
    assert idp.token_requests == []


# --- ambassador.limit.resume ------------------------------------------------------------------

def limited(state: str | None = None) -> Profile:
    return profile(
        upstream("partner", "http://127.0.0.1:9", path_prefix="/partner", timeout="30s", limit={"rate": "100/s", "max_wait": "1h"}),
        upstream("deaf", "http://127.0.0.1:10", path_prefix="/deaf", limit={"rate": "100/s", "follow_upstream": False}),
        upstream("open", "http://127.0.0.1:11", path_prefix="/open"),
        state=state,
    )


LIMITED = limited()


@in_loop
async def test_limit_resume_ends_the_upstreams_pause_now(tmp_path):
    manager = ProfileManager()
    limit = Limit(manager)
    with taddons.context(manager, limit) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, LIMITED))
        stage = manager.gateway.services["partner"].stage("limit")
        with pytest.raises(exceptions.CommandError, match="is not paused"):
            tctx.command(limit.limit_resume, "partner")

        await stage.pause(time.time() + 20)  # as a 429 with Retry-After: 20 would; within the timeout
        waiting = asyncio.create_task(stage.acquire(UpstreamRequest("GET", "/partner/a", CIMultiDict())))

        async def napping():
            while stage.resumed is None and not waiting.done():
                await asyncio.sleep(0)  # the request's own steps until it waits for the pause's end

        await asyncio.wait_for(napping(), 5)
        tctx.command(limit.limit_resume, "partner")
        await asyncio.wait_for(waiting, 5)  # it goes now, not in 20 s
        stage.release()
        assert stage.status()["paused_until"] is None
        with pytest.raises(exceptions.CommandError, match="is not paused"):
            tctx.command(limit.limit_resume, "partner")


def test_limit_resume_refuses_an_upstream_that_cannot_pause(tmp_path):
    manager = ProfileManager()
    limit = Limit(manager)
    with taddons.context(manager, limit) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, LIMITED))
        with pytest.raises(exceptions.CommandError, match="no upstream 'nowhere'"):
            tctx.command(limit.limit_resume, "nowhere")
        with pytest.raises(exceptions.CommandError, match="has no limit"):
            tctx.command(limit.limit_resume, "open")
        with pytest.raises(exceptions.CommandError, match="follow_upstream: false"):
            tctx.command(limit.limit_resume, "deaf")


@in_loop
async def test_limit_resume_ends_the_pause_for_every_instance_sharing_the_state(tmp_path, redis):
    shared = limited(state=redis.url)
    manager = ProfileManager()
    limit = Limit(manager)
    with taddons.context(manager, limit) as tctx:
        tctx.configure(manager, ambassador_profile=write(tmp_path, shared))
        service = manager.gateway.services["partner"]
        # Another instance of the ambassador, sharing the upstream's limit through Redis.
        other = limit_stage(service.upstream, redis.url, service.deadline_of)
        try:
            await other.pause(time.time() + 20)
            wait, _ = await service.stage("limit").take()
            assert wait > 10  # this instance sees the pause too

            tctx.command(limit.limit_resume, "partner")
            await limit.done()  # the command's Redis update, which it runs in the background
            wait, _ = await other.take()
            assert wait == 0
            assert other.status()["paused_until"] is None
        finally:
            await other.close()
            await service.close()
