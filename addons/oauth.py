"""OAuth2 client credentials (RFC 6749 section 4.4): one current token per upstream.

`TokenManager.token()` hands out the current token, fetching one on first use. All requests
that need a token while it is being fetched wait for that one fetch (single flight). A token
is refreshed in the background once most of its lifetime has passed, and is never handed out
after it expired: when it has expired, requests wait for a new one instead. A failed or
garbled answer from the token endpoint is retried with backoff within the upstream's timeout;
a failure is never remembered, so the next request tries again. An upstream's 401 renews the
token at most once every REFUSAL_REFETCH_PACE seconds: a partner refusing every token must
not turn each request into a token fetch.

Plain Python and asyncio; the token endpoint is contacted with aiohttp, never blocking.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, urlencode

import aiohttp
from multidict import CIMultiDict

from .errors import AmbassadorError
from .exchange import UpstreamExchange, UpstreamResponse
from .metrics import TOKEN_FETCHES
from .profile import EgressProxy, OAuth2ClientCredentials
from .transport import proxy_failure, proxy_refusal, proxy_settings, tls_failure

log = logging.getLogger(__name__)

# Refresh ahead of expiry by a fifth of the lifetime, at most a minute: a 1h token is renewed
# at 59m, a 10s token at 8s, so that requests in flight never carry a token about to lapse.
REFRESH_FRACTION = 0.2
REFRESH_AHEAD_MAX = 60.0
BACKOFF_BASE = 0.1
BACKOFF_MAX = 2.0
# Answers that mean the request itself is refused (wrong client credentials, unknown scope):
# asking again cannot help, and hammering an identity provider can lock the client out.
REFUSALS = frozenset({400, 401, 403})
DETAIL_MAX = 200
RECENT_TOKENS = 4  # tokens obtained that redaction still recognises (requests in flight may carry older ones)
TOKEN_RE = re.compile(r"[\x21-\x7e]+\Z")  # visible ASCII: fits an Authorization header as it is
# Seconds between token fetches caused by the upstream's 401 answers.
REFUSAL_REFETCH_PACE = 5.0


class TokenError(Exception):
    """The token endpoint gave no usable token. `retryable`: whether asking again may help."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float | None  # time.monotonic(); None when the server named no lifetime
    refresh_at: float | None

    def usable(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def due(self, now: float) -> bool:
        return self.refresh_at is not None and now >= self.refresh_at


def parse_token_answer(status: int, body: bytes, sent_at: float) -> Token:
    """The token in a token endpoint's answer; raises TokenError saying what is wrong with it.

    The lifetime counts from when the request was sent, so network time shortens it, never
    lengthens it.
    """
    if not 200 <= status < 300:
        raise TokenError(f"answered HTTP {status}{_oauth_error(body)}", retryable=status not in REFUSALS)
    if not body.strip():
        raise TokenError(f"answered HTTP {status} with an empty body")
    try:
        answer = json.loads(body)
    except ValueError:
        raise TokenError(f"answered HTTP {status} with a body that is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str) or not answer["access_token"]:
        raise TokenError(f"answered HTTP {status} without an access_token")
    if not TOKEN_RE.match(answer["access_token"]):
        raise TokenError(f"answered HTTP {status} with an access_token a header cannot carry")
    token_type = answer.get("token_type", "Bearer")  # required by RFC 6749 5.1; some servers leave it out
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError(f"answered HTTP {status} with token_type {token_type!r}; only Bearer tokens can be sent", retryable=False)
    if "expires_in" not in answer:
        return Token(answer["access_token"], None, None)
    lifetime = _seconds(answer["expires_in"])
    if lifetime is None:
        raise TokenError(f"answered HTTP {status} with expires_in {answer['expires_in']!r}, not a positive number of seconds")
    expires_at = sent_at + lifetime
    return Token(answer["access_token"], expires_at, expires_at - min(REFRESH_AHEAD_MAX, lifetime * REFRESH_FRACTION))


def _seconds(value) -> float | None:
    """A positive lifetime in seconds; some servers send it as a string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 < seconds < float("inf") else None


def _oauth_error(body: bytes) -> str:
    """`: invalid_client (description)` from an RFC 6749 section 5.2 error answer, if it is one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str):
        return ""
    description = answer.get("error_description")
    detail = f" ({description[:DETAIL_MAX]})" if isinstance(description, str) and description else ""
    return f": {answer['error'][:DETAIL_MAX]}{detail}"


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: a random pause up to 100ms, 200ms, 400ms... 2s."""
    return random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt))


class Pacer:
    """Lets something happen at most once every `interval` seconds; the first time always."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.last: float | None = None

    def ready(self) -> bool:
        """Whether it may happen now; if so, the next time is `interval` from now."""
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            return False
        self.last = now
        return True


class TokenEndpoint:
    """One token request: POST grant_type=client_credentials, the answer checked.

    `auth_style: basic` sends the client id and secret as HTTP Basic credentials, each
    form-urlencoded first (RFC 6749 section 2.3.1); `body` sends them as form fields.
    """

    def __init__(self, policy: OAuth2ClientCredentials, ssl_context: ssl.SSLContext | bool, upstream: str = "", proxy: EgressProxy | None = None):
        self.url = policy.token_url
        self.upstream = upstream
        self.ssl = ssl_context
        self.proxy = proxy  # the upstream's egress proxy: its token endpoint is usually on the same partner network
        self.proxy_url, credentials = proxy_settings(proxy)
        https = policy.token_url.startswith("https:")  # as for upstreams (see Transport)
        self.connect_headers = credentials if https else None
        self.request_credentials = {} if https else credentials  # on the wire only, never shown
        form = {"grant_type": "client_credentials"}
        if policy.scope:
            form["scope"] = policy.scope
        self.headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        secret = policy.client_secret
        self.secrets = {secret, quote_plus(secret), quote(secret, safe="")}
        if policy.auth_style == "basic":
            pair = f"{quote_plus(policy.client_id)}:{quote_plus(policy.client_secret)}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            self.secrets.add(self.headers["Authorization"].removeprefix("Basic "))
        else:
            form.update(client_id=policy.client_id, client_secret=policy.client_secret)
        self.form = urlencode(form).encode()
        self.tokens: deque[str] = deque(maxlen=RECENT_TOKENS)  # the last ones obtained, for redaction
        self._session: aiohttp.ClientSession | None = None

    def secret_forms(self) -> tuple[str, ...]:
        """The client secret in each form it is sent in, and the tokens obtained lately: what
        redaction replaces (longest first)."""
        return tuple(sorted({*self.secrets, *self.tokens} - {""}, key=len, reverse=True))

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def request(self, timeout: float, observer: Callable[[UpstreamExchange], None] | None = None) -> Token:
        """One token request; `observer` is told of the exchange (see UpstreamRequest.observer)."""
        sent_at, started = time.monotonic(), time.time()
        answer = problem = None
        try:
            try:
                async with asyncio.timeout(timeout):
                    async with self.session().post(
                        self.url,
                        data=self.form,
                        headers={**self.headers, **self.request_credentials},
                        allow_redirects=False,
                        proxy=self.proxy_url,
                        proxy_headers=self.connect_headers,
                    ) as got:
                        if got.status == 407 and self.proxy:
                            raise TokenError(proxy_refusal(self.proxy, self.upstream, 407, got.reason))
                        body = await got.read()
                        answer = UpstreamResponse(got.status, got.reason or "", CIMultiDict(got.headers), body)
            except TimeoutError:
                raise TokenError(f"did not answer within {timeout:.3g}s") from None
            except (aiohttp.ClientError, OSError) as e:
                if problem := proxy_failure(e, self.proxy, self.upstream):
                    raise TokenError(problem) from None
                if problem := tls_failure(e):
                    raise TokenError(f"TLS handshake failed: {problem}") from None
                if isinstance(e, aiohttp.ClientConnectorError):
                    raise TokenError(f"cannot connect: {e.os_error.strerror or e}") from None
                raise TokenError(f"broke off the exchange: {type(e).__name__}") from None
            token = parse_token_answer(answer.status, answer.body, sent_at)
            self.tokens.append(token.value)
            return token
        except TokenError as e:
            problem = str(e)
            raise
        finally:
            if observer is not None:
                observer(
                    UpstreamExchange(
                        "token", self.upstream, "POST", self.url, CIMultiDict(self.headers), self.form,
                        started, time.time(), answer, problem,
                    )
                )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class TokenManager:
    """The current token of one upstream, fetched once for all and renewed ahead of expiry.

    `timeout` bounds one fetch, its retries included (the upstream's timeout).
    """

    def __init__(self, upstream_name: str, endpoint: TokenEndpoint, timeout: float):
        self.upstream_name = upstream_name
        self.endpoint = endpoint
        self.timeout = timeout
        self.current: Token | None = None
        self.fetch: asyncio.Task | None = None
        self.fetches = 0
        self.failures = 0
        self.last_error: str | None = None
        self.refusal_refetches = Pacer(REFUSAL_REFETCH_PACE)
        self.refusals_paced = 0

    async def token(self, deadline: float, observer: Callable[[UpstreamExchange], None] | None = None) -> str:
        """A token that has not expired; raises AmbassadorError(auth_failed) by `deadline`.
        `observer` is told of the token requests made because of this call."""
        now = time.monotonic()
        current = self.current
        if current is not None and current.usable(now):
            if current.due(now):
                self._fetching(observer)  # renew in the background; this one is still good
            return current.value
        fetch = self._fetching(observer)
        try:
            async with asyncio.timeout(deadline - now):
                # shield: a request that gives up does not cancel the fetch the others wait for
                token = await asyncio.shield(fetch)
        except TimeoutError:
            raise self._failed(f"no token within the request's timeout (last problem: {self.last_error or 'none yet'})") from None
        except TokenError as e:
            raise self._failed(str(e)) from None
        if not token.usable(time.monotonic()):  # a lifetime shorter than the way here
            raise self._failed("the token had expired by the time it arrived")
        return token.value

    def refused(self, value: str) -> bool:
        """The upstream answered 401 to `value`: may the request try again with another token?

        Yes when a newer token replaced it already, or is being fetched (concurrent 401s cause
        one fetch); yes, and it is forgotten so that `token()` fetches the next, when no 401
        caused a fetch in the last REFUSAL_REFETCH_PACE seconds; no otherwise: that 401 is the
        answer.
        """
        if self.current is None or self.current.value != value:
            return True
        if not self.refusal_refetches.ready():
            self.refusals_paced += 1
            return False
        self.current = None
        return True

    def forget(self) -> bool:
        """Drop the current token, so that the next request fetches a fresh one (the
        `ambassador.auth.refresh` command); False when no token is held."""
        held, self.current = self.current is not None, None
        return held

    def _fetching(self, observer: Callable[[UpstreamExchange], None] | None) -> asyncio.Task:
        if self.fetch is None:
            self.fetch = asyncio.get_running_loop().create_task(self._fetch(observer))
            self.fetch.add_done_callback(self._fetched)
        return self.fetch

    def _fetched(self, task: asyncio.Task) -> None:
        self.fetch = None
        if not task.cancelled():
            task.exception()  # a background renewal's failure is logged and counted in _fetch

    async def _fetch(self, observer: Callable[[UpstreamExchange], None] | None) -> Token:
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            self.fetches += 1
            try:
                token = await self.endpoint.request(deadline - time.monotonic(), observer)
            except TokenError as e:
                self.failures += 1
                self.last_error = str(e)
                TOKEN_FETCHES.labels(self.upstream_name, "failed").inc()
                pause = backoff(attempt)
                attempt += 1
                if not e.retryable or time.monotonic() + pause >= deadline:
                    log.warning("upstream %s: token endpoint %s %s; giving up", self.upstream_name, self.endpoint.url, e)
                    raise
                log.debug("upstream %s: token endpoint %s %s; trying again", self.upstream_name, self.endpoint.url, e)
                await asyncio.sleep(pause)
                continue
            TOKEN_FETCHES.labels(self.upstream_name, "ok").inc()
            self.last_error = None
            self.current = token
            return token

    def _failed(self, problem: str) -> AmbassadorError:
        name = self.upstream_name
        return AmbassadorError("auth_failed", f"upstream {name}: no token from {self.endpoint.url}: {problem}", name)

    def secret_forms(self) -> tuple[str, ...]:
        return self.endpoint.secret_forms()

    def status(self) -> dict:
        expires_in = None
        if self.current is not None and self.current.expires_at is not None:
            expires_in = round(max(0.0, self.current.expires_at - time.monotonic()), 1)
        return {
            "token_fetches": self.fetches,
            "token_failures": self.failures,
            "refusals_not_refetched": self.refusals_paced,
            "token_expires_in": expires_in,
            "last_problem": self.last_error,
        }

    async def close(self) -> None:
        if self.fetch is not None:
            self.fetch.cancel()
        await self.endpoint.close()
