"""The OAuth2 token manager against a real token endpoint on 127.0.0.1."""

import asyncio
import base64
import time

import pytest

from addons.errors import AmbassadorError
from addons.metrics import REGISTRY
from addons.oauth import REFUSAL_REFETCH_PACE, Pacer, Token, TokenEndpoint, TokenError, TokenManager, parse_token_answer
from addons.profile import OAuth2ClientCredentials
from harness import FakeUpstream, Reply
from oauth_fakes import IdentityProvider

CLIENT_ID, CLIENT_SECRET = "app one", "s3cret:&=+/x"  # characters that need form-encoding


def manager(url: str, timeout: float = 5.0, auth_style: str = "basic", scope: str | None = None, name: str = "partner"):
    policy = OAuth2ClientCredentials(f"{url}/oauth/token", CLIENT_ID, CLIENT_SECRET, scope, auth_style)
    return TokenManager(name, TokenEndpoint(policy, False), timeout)


def run(tokens: TokenManager, scenario):
    """Run `scenario(tokens)` in a fresh event loop, closing the manager afterwards."""

    async def main():
        try:
            return await scenario(tokens)
        finally:
            await tokens.close()

    return asyncio.run(main())


def within(seconds: float) -> float:
    return time.monotonic() + seconds


@pytest.fixture
def idp():
    provider = IdentityProvider(CLIENT_ID, CLIENT_SECRET)
    with FakeUpstream(provider.token_endpoint) as server:
        provider.url = server.url
        yield provider


def test_concurrent_requests_share_one_fetch(idp):
    idp.delay = 0.3  # all 20 ask while the first fetch is under way

    async def scenario(tokens):
        return await asyncio.gather(*(tokens.token(within(5)) for _ in range(20)))

    tokens = manager(idp.url)
    values = run(tokens, scenario)
    assert len(idp.token_requests) == 1
    assert set(values) == {idp.issued[0]}
    assert tokens.fetches == 1 and tokens.failures == 0


def test_token_is_cached_and_reused(idp):
    async def scenario(tokens):
        first = await tokens.token(within(5))
        second = await tokens.token(within(5))
        return first, second, tokens.status()

    tokens = manager(idp.url)
    first, second, status = run(tokens, scenario)
    assert first == second == idp.issued[0]
    assert len(idp.token_requests) == 1
    assert status["token_fetches"] == 1 and 3500 < status["token_expires_in"] <= 3600
    assert first not in str(status)


@pytest.mark.parametrize("style", ["basic", "body"])
def test_client_credentials_and_scope_as_the_token_server_receives_them(idp, style):
    async def scenario(tokens):
        return await tokens.token(within(5))

    tokens = manager(idp.url, auth_style=style, scope="read write")
    assert run(tokens, scenario) == idp.issued[0]
    (received,) = idp.token_requests
    assert received["style"] == style
    assert received["client"] == (CLIENT_ID, CLIENT_SECRET)
    assert received["form"]["grant_type"] == "client_credentials"
    assert received["form"]["scope"] == "read write"
    if style == "basic":
        assert "client_secret" not in received["form"] and "client_id" not in received["form"]


def test_no_scope_is_sent_when_none_is_configured(idp):
    async def scenario(tokens):
        return await tokens.token(within(5))

    tokens = manager(idp.url)
    run(tokens, scenario)
    assert "scope" not in idp.token_requests[0]["form"]


def test_refreshed_ahead_of_expiry_in_the_background(idp):
    idp.expires_in = 1.5  # renewed from 1.2s on, expires after 1.5s

    async def scenario(tokens):
        first = await tokens.token(within(5))
        await asyncio.sleep(tokens.current.refresh_at - time.monotonic() + 0.01)
        assert tokens.current.usable(time.monotonic()), "the machine was too slow for this test's window"
        during = await tokens.token(within(5))  # still the old one, while a renewal starts
        await tokens.fetch  # the background renewal
        after = await tokens.token(within(5))
        return first, during, after

    tokens = manager(idp.url)
    first, during, after = run(tokens, scenario)
    assert during == first
    assert after != first and after == idp.issued[1]
    assert len(idp.token_requests) == 2


def test_an_expired_token_is_never_handed_out_even_when_the_provider_is_down(idp):
    idp.expires_in = 1

    async def scenario(tokens):
        first = await tokens.token(within(5))
        idp.down = True
        await asyncio.sleep(tokens.current.expires_at - time.monotonic() + 0.01)
        with pytest.raises(AmbassadorError) as failure:
            await tokens.token(within(1.5))
        return first, failure.value

    tokens = manager(idp.url, timeout=1.0)
    first, error = run(tokens, scenario)
    assert error.reason == "auth_failed" and error.status == 502
    assert "HTTP 503" in error.message and "temporarily_unavailable" in error.message
    assert first not in error.message
    assert len(idp.token_requests) > 2  # the outage was retried


def test_a_fresh_token_after_expiry(idp):
    idp.expires_in = 0.5

    async def scenario(tokens):
        first = await tokens.token(within(5))
        await asyncio.sleep(tokens.current.expires_at - time.monotonic() + 0.01)
        return first, await tokens.token(within(5))

    tokens = manager(idp.url)
    first, second = run(tokens, scenario)
    assert first != second and second == idp.issued[-1]


@pytest.mark.parametrize(
    "garbage, problem",
    [
        (Reply(200, [("Content-Type", "text/html")], b"<html>maintenance</html>"), "not JSON"),
        (Reply.json({"token_type": "Bearer", "expires_in": 60}), "without an access_token"),
        (Reply(200, [], b""), "empty body"),
        (Reply.json({"access_token": "", "expires_in": 60}), "without an access_token"),
        (Reply.json({"access_token": "abc\r\nX-Evil: 1", "expires_in": 60}), "a header cannot carry"),
        (Reply.json({"access_token": "abc", "expires_in": "soon"}), "expires_in"),
        (Reply(502, [], b"bad gateway"), "HTTP 502"),
        (Reply(200, [], b"", close=True), "broke off"),
    ],
)
def test_garbage_answers_are_retried_then_a_token_is_used(idp, garbage, problem):
    idp.script = [garbage, garbage]

    async def scenario(tokens):
        return await tokens.token(within(5)), tokens.status()

    tokens = manager(idp.url)
    value, status = run(tokens, scenario)
    assert value == idp.issued[0]
    assert len(idp.token_requests) == 3
    assert status["token_fetches"] == 3 and status["token_failures"] == 2
    assert status["last_problem"] is None


@pytest.mark.parametrize("garbage", [Reply(200, [], b"not json"), Reply(200, [], b""), Reply.json({"expires_in": 60})])
def test_only_garbage_gives_auth_failed_within_the_timeout(idp, garbage):
    idp.script = [garbage] * 1000

    async def scenario(tokens):
        started = time.monotonic()
        with pytest.raises(AmbassadorError) as failure:
            await tokens.token(within(5))
        return failure.value, time.monotonic() - started

    tokens = manager(idp.url, timeout=1.0)
    error, elapsed = run(tokens, scenario)
    assert error.reason == "auth_failed" and error.upstream == "partner"
    assert elapsed < 3
    assert len(idp.token_requests) >= 2


def test_a_failure_is_not_remembered(idp):
    idp.script = [Reply(200, [], b"")] * 1000

    async def scenario(tokens):
        with pytest.raises(AmbassadorError):
            await tokens.token(within(0.5))
        idp.script.clear()
        return await tokens.token(within(5))

    tokens = manager(idp.url, timeout=0.5)
    assert run(tokens, scenario) == idp.issued[0]


def test_refused_client_credentials_fail_at_once(idp):
    idp.client_secret = "another"

    async def scenario(tokens):
        started = time.monotonic()
        with pytest.raises(AmbassadorError) as failure:
            await tokens.token(within(5))
        return failure.value, time.monotonic() - started

    tokens = manager(idp.url)
    error, elapsed = run(tokens, scenario)
    assert "HTTP 401: invalid_client (unknown client)" in error.message
    assert CLIENT_SECRET not in error.message
    assert len(idp.token_requests) == 1 and elapsed < 1


def test_unreachable_token_endpoint_is_retried_until_the_timeout():
    with FakeUpstream() as gone:
        url = gone.url  # the port is free again once the server is closed

    async def scenario(tokens):
        started = time.monotonic()
        with pytest.raises(AmbassadorError) as failure:
            await tokens.token(within(5))
        return failure.value, time.monotonic() - started, tokens.status()

    tokens = manager(url, timeout=0.8)
    error, elapsed, status = run(tokens, scenario)
    assert error.reason == "auth_failed" and "cannot connect" in error.message
    assert elapsed < 3  # it gives up early when the next pause would overrun the timeout
    assert status["token_failures"] == status["token_fetches"] >= 2


def test_a_request_with_less_time_gives_up_without_stopping_the_fetch(idp):
    idp.delay = 0.6

    async def scenario(tokens):
        hurried = asyncio.ensure_future(tokens.token(within(0.2)))
        patient = asyncio.ensure_future(tokens.token(within(5)))
        with pytest.raises(AmbassadorError) as failure:
            await hurried
        return failure.value, await patient

    tokens = manager(idp.url)
    error, token = run(tokens, scenario)
    assert error.reason == "auth_failed" and "timeout" in error.message
    assert token == idp.issued[0] and len(idp.token_requests) == 1


def test_a_refusal_forgets_only_the_refused_token(idp):
    async def scenario(tokens):
        first = await tokens.token(within(5))
        assert tokens.refused("something older")  # replaced already: try again, no fetch
        assert await tokens.token(within(5)) == first
        assert tokens.refused(first)
        return first, await tokens.token(within(5))

    tokens = manager(idp.url)
    first, second = run(tokens, scenario)
    assert first != second and len(idp.token_requests) == 2


def test_the_pacer_lets_the_first_go_then_one_every_interval():
    now = [100.0]
    pacer = Pacer(5.0, clock=lambda: now[0])
    assert pacer.ready()  # the first always goes
    now[0] = 104.9
    assert not pacer.ready()
    now[0] = 105.0
    assert pacer.ready()
    now[0] = 105.1
    assert not pacer.ready()  # counted from the last one that went, not from the refused ones
    now[0] = 110.0
    assert pacer.ready()
    assert REFUSAL_REFETCH_PACE == 5.0


def test_a_second_refusal_within_the_pace_is_not_renewed(idp):
    async def scenario(tokens):
        now = [0.0]
        tokens.refusal_refetches.clock = lambda: now[0]
        first = await tokens.token(within(5))
        assert tokens.refused(first)  # the first 401: renew
        second = await tokens.token(within(5))
        now[0] = 4.0
        assert not tokens.refused(second)  # another 401 moments later: answered as it is
        assert await tokens.token(within(5)) == second  # kept, no fetch
        now[0] = 5.0
        assert tokens.refused(second)
        return first, second, await tokens.token(within(5))

    tokens = manager(idp.url)
    first, second, third = run(tokens, scenario)
    assert len({first, second, third}) == 3 and len(idp.token_requests) == 3
    assert tokens.status()["refusals_not_refetched"] == 1


def test_fetches_are_counted_in_the_prometheus_metrics(idp):
    def count(outcome):
        return REGISTRY.get_sample_value("ambassador_token_fetches_total", {"upstream": "metered", "outcome": outcome}) or 0

    idp.script = [Reply(503)]
    before_ok, before_failed = count("ok"), count("failed")

    async def scenario(tokens):
        return await tokens.token(within(5))

    tokens = manager(idp.url, name="metered")
    run(tokens, scenario)
    assert count("ok") - before_ok == 1
    assert count("failed") - before_failed == 1


@pytest.mark.parametrize(
    "answer, lifetime",
    [({"access_token": "t", "expires_in": 100}, 100.0), ({"access_token": "t", "expires_in": "30"}, 30.0)],
)
def test_lifetime_counts_from_the_request_and_renewal_comes_first(answer, lifetime):
    import json

    token = parse_token_answer(200, json.dumps(answer).encode(), sent_at=1000.0)
    assert token == Token("t", 1000.0 + lifetime, 1000.0 + lifetime * 0.8)


def test_renewal_is_at_most_a_minute_ahead_and_no_lifetime_means_until_refused():
    assert parse_token_answer(200, b'{"access_token": "t", "expires_in": 3600}', 0.0).refresh_at == 3540.0
    token = parse_token_answer(200, b'{"access_token": "t"}', 0.0)
    assert token.usable(1e12) and not token.due(1e12)


@pytest.mark.parametrize("expires_in", [0, -5, True, None, [], "1e999"])
def test_nonsense_lifetimes_are_refused(expires_in):
    import json

    with pytest.raises(TokenError, match="expires_in"):
        parse_token_answer(200, json.dumps({"access_token": "t", "expires_in": expires_in}).encode(), 0.0)


def test_basic_client_authentication_form_encodes_id_and_secret():
    policy = OAuth2ClientCredentials("http://127.0.0.1:1/token", "a b", "p:w&", None, "basic")
    header = TokenEndpoint(policy, False).headers["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == "a+b:p%3Aw%26"


@pytest.mark.parametrize("answer", [{"access_token": "t"}, {"access_token": "t", "token_type": "bearer"}, {"access_token": "t", "token_type": "BEARER"}])
def test_bearer_tokens_are_taken_whatever_the_case_of_their_type(answer):
    import json

    assert parse_token_answer(200, json.dumps(answer).encode(), 0.0).value == "t"


@pytest.mark.parametrize("token_type", ["mac", "DPoP", 7])
def test_tokens_of_another_type_are_refused_for_good(token_type):
    import json

    with pytest.raises(TokenError, match="only Bearer") as refused:
        parse_token_answer(200, json.dumps({"access_token": "t", "token_type": token_type}).encode(), 0.0)
    assert not refused.value.retryable
