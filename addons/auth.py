"""The auth stage: the ambassador owns the upstream's credentials and puts one on every attempt.

A credential the client sent in the same place (the Authorization header, the named header,
the named query parameter) is replaced, never forwarded; so is a header whose name differs
from the injected one only by case or `_` for `-`, which CGI-style frameworks read as the same
variable (`X_Api_Key` and `X-Api-Key` are both HTTP_X_API_KEY). The stage notes the kind of
credential (`notes["auth"]`) and the header as it may be shown (`notes["shown_headers"]`,
e.g. "Bearer [redacted]"), which the Forwarder writes onto the flow instead of the secret.
Where the upstream echoes the secret in its answer, the stage redacts it there too
(`reflected.py`), so no door hands it to the client, the cache or a recording.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Callable
from urllib.parse import quote, quote_plus, unquote_plus

from mitmproxy import command, exceptions

from .commands import UpstreamCommands
from .exchange import REDACTED, UpstreamRequest, UpstreamResponse
from .oauth import TokenEndpoint, TokenManager
from .profile import BasicAuth, BearerAuth, HeaderAuth, OAuth2ClientCredentials, QueryAuth, Upstream
from .reflected import Secrets, redacted
from .service import Handler, Stage

log = logging.getLogger("ambassador")

def lookalike(name: str) -> str:
    """A header name as frameworks that read headers as variables see it."""
    return name.lower().replace("_", "-")


def carrying(request: UpstreamRequest, header: str, alike: str, value: str) -> UpstreamRequest:
    """`request` with `header: value` instead of any client header whose `lookalike` is `alike`."""
    carried = request.with_header(header, value)  # replaces the client's values of `header`
    injected = header.lower()
    # Names differing only in case are replaced already; the others differ by a `_`.
    underscored = "_" in header
    for name in {n for n in carried.headers if (underscored or "_" in n) and n.lower() != injected and lookalike(n) == alike}:
        del carried.headers[name]  # a copy of the client's headers, made by with_header
    return carried


def show(request: UpstreamRequest, kind: str, header: str, shown: str) -> None:
    request.notes["auth"] = kind
    request.notes.setdefault("shown_headers", {})[header] = shown


AUTHORIZATION = lookalike("Authorization")


class HeaderCredential:
    """A fixed credential in a header: bearer and basic (Authorization), or a named header."""

    name = "auth"

    def __init__(self, upstream_name: str, kind: str, header: str, value: str, shown: str, forms: tuple[str, ...]):
        self.upstream_name = upstream_name
        self.kind = kind
        self.header = header
        self.alike = lookalike(header)
        # Header text stands for bytes, one per character (header_bytes.py): a profile's
        # non-ASCII value goes out in UTF-8, the form Secrets looks for in answers.
        self.value = value.encode().decode("latin-1")
        self.shown = shown
        self.forms = forms  # the secret as it may appear in text (see secret_forms)
        self.secrets = Secrets(forms)

    async def __call__(self, request: UpstreamRequest, call_next: Handler) -> UpstreamResponse:
        show(request, self.kind, self.header, self.shown)
        response = await call_next(carrying(request, self.header, self.alike, self.value))
        return redacted(response, self.secrets, self.upstream_name)

    def status(self) -> dict:
        return {"type": self.kind}

    def secret_forms(self) -> tuple[str, ...]:
        """The secret in each form it takes in text, longest first: what redaction replaces."""
        return self.forms

    def without_credential(self, path: str) -> str:
        return path


class QueryCredential:
    """A fixed credential in a query parameter, e.g. ?api_key=...

    The flow keeps the client's URL, which never held the secret; only the upstream gets it.
    """

    name = "auth"

    def __init__(self, upstream_name: str, parameter: str, value: str):
        self.upstream_name = upstream_name
        self.parameter = parameter
        self.pair = f"{quote(parameter, safe='')}={quote(value, safe='')}"
        self.forms = forms_of(*on_the_wire(value))
        self.secrets = Secrets(self.forms)

    async def __call__(self, request: UpstreamRequest, call_next: Handler) -> UpstreamResponse:
        request.notes["auth"] = "query"
        response = await call_next(request.with_path(with_query_parameter(request.path, self.parameter, self.pair)))
        return redacted(response, self.secrets, self.upstream_name)

    def status(self) -> dict:
        return {"type": "query"}

    def secret_forms(self) -> tuple[str, ...]:
        return self.forms

    def without_credential(self, path: str) -> str:
        """`path` as the client's request had it here, without the injected parameter."""
        only_path, _, query = path.partition("?")
        kept = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) != self.parameter]
        return f"{only_path}?{'&'.join(kept)}" if kept else only_path


def forms_of(*forms: str) -> tuple[str, ...]:
    """Distinct, non-empty, longest first: a longer form is replaced before a part of it."""
    return tuple(sorted({f for f in forms if f}, key=len, reverse=True))


def on_the_wire(secret: str) -> tuple[str, str, str]:
    """A secret as sent, and percent-encoded as a query value or a URL echoed in a Location
    carries it (`%2F`; `+` for a space)."""
    return secret, quote(secret, safe=""), quote_plus(secret)


def with_query_parameter(path: str, name: str, pair: str) -> str:
    """`path` with every `name` parameter removed and the encoded `pair` appended.

    The other parameters are kept byte for byte; names are compared decoded, so a client's
    `api%5Fkey` is replaced as well as its `api_key`.
    """
    only_path, _, query = path.partition("?")
    kept = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) != name]
    return f"{only_path}?{'&'.join([*kept, pair])}"


class OAuth2Credential:
    """A bearer token from the upstream's token endpoint; a 401 answer renews it once, unless
    another 401 renewed it moments ago (see TokenManager.refused)."""

    name = "auth"

    def __init__(self, tokens: TokenManager, deadline_of: Callable[[UpstreamRequest], float]):
        self.tokens = tokens
        self.deadline_of = deadline_of  # the service's: token waits count against the request's timeout
        self.token_secrets: tuple[str, Secrets] = ("", Secrets(()))  # the last token's, made once per token

    async def __call__(self, request: UpstreamRequest, call_next: Handler) -> UpstreamResponse:
        deadline = self.deadline_of(request)
        token = await self.tokens.token(deadline, request.observer)
        response = await call_next(self.with_token(request, token))
        if response.status == 401 and self.tokens.refused(token):
            # Revoked or expired early: the next token, then one more try with it.
            request.notes["auth_renewed"] = True
            token = await self.tokens.token(deadline, request.observer)
            response = await call_next(self.with_token(request, token))
        return redacted(response, self.secrets_of(token), self.tokens.upstream_name)

    def secrets_of(self, token: str) -> Secrets:
        """What the answer to a request carrying `token` may echo."""
        if self.token_secrets[0] != token:
            self.token_secrets = (token, Secrets(forms_of(*on_the_wire(token))))
        return self.token_secrets[1]

    @staticmethod
    def with_token(request: UpstreamRequest, token: str) -> UpstreamRequest:
        show(request, "oauth2", "Authorization", f"Bearer {REDACTED}")
        return carrying(request, "Authorization", AUTHORIZATION, f"Bearer {token}")

    def status(self) -> dict:
        return {"type": "oauth2", **self.tokens.status()}

    def secret_forms(self) -> tuple[str, ...]:
        return self.tokens.secret_forms()

    def without_credential(self, path: str) -> str:
        return path

    async def close(self) -> None:
        await self.tokens.close()


def auth_stage(upstream: Upstream, deadline_of: Callable[[UpstreamRequest], float]) -> Stage:
    """The auth stage for `upstream.auth`. The profile loader has checked the values already
    (no line breaks, usable header names, RFC 7617)."""
    match upstream.auth:
        case BearerAuth(token):
            forms = forms_of(*on_the_wire(token))
            return HeaderCredential(upstream.name, "bearer", "Authorization", f"Bearer {token}", f"Bearer {REDACTED}", forms)
        case BasicAuth(username, password):
            pair = base64.b64encode(f"{username}:{password}".encode()).decode()
            forms = forms_of(pair, f"{username}:{password}", *on_the_wire(password))
            return HeaderCredential(upstream.name, "basic", "Authorization", f"Basic {pair}", f"Basic {REDACTED}", forms)
        case HeaderAuth(header, value):
            return HeaderCredential(upstream.name, "header", header, value, REDACTED, forms_of(*on_the_wire(value)))
        case QueryAuth(parameter, value):
            return QueryCredential(upstream.name, parameter, value)
        case OAuth2ClientCredentials() as policy:
            # The token endpoint is contacted with the upstream's TLS settings (trusted CAs,
            # client certificate): it is usually the same partner. But the client secret only
            # ever goes to a verified endpoint: `tls.verify: false` is not followed there. It
            # goes through the upstream's proxy too, if it has one.
            tls = dataclasses.replace(upstream.tls, verify=True).context() if policy.token_url.startswith("https:") else False
            endpoint = TokenEndpoint(policy, tls, upstream.name, upstream.proxy)
            return OAuth2Credential(TokenManager(upstream.name, endpoint, upstream.timeout), deadline_of)
    raise TypeError(f"unknown auth policy {upstream.auth!r}")


class Auth(UpstreamCommands):
    """Auth injection as a mitmproxy addon: its command, which makes an upstream's next request
    fetch a fresh token. The credentials themselves are the `auth` stage's (above)."""

    @command.command("ambassador.auth.refresh")
    def auth_refresh(self, name: str) -> None:
        """Drop the token an upstream holds, so that its next request fetches a fresh one."""
        stage = self._stage(name, "auth")
        if not isinstance(stage, OAuth2Credential):
            raise exceptions.CommandError(
                f"upstream {name!r} sends a fixed credential from its profile, not a token: there is nothing to refresh"
            )
        if not stage.tokens.forget():
            raise exceptions.CommandError(f"upstream {name!r} holds no token yet: its next request fetches one")
        log.warning("token of %s dropped by command; the next request fetches a fresh one", name)
