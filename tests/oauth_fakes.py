"""A real OAuth2 identity provider (client credentials grant) and a resource it protects,
for `FakeUpstream` on 127.0.0.1. Shared by the OAuth2 unit and end-to-end tests.

    idp = IdentityProvider("app", "s3cret", expires_in=3600)
    with FakeUpstream(idp.token_endpoint) as auth, FakeUpstream(idp.resource) as api: ...
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from urllib.parse import parse_qs, unquote_plus

from harness import Received, Reply


class IdentityProvider:
    """Issues tokens to one client, knows which are valid, and can be scripted to misbehave.

    `script`: answers given (in order) instead of a token, e.g. `Reply(503)` or garbage.
    `down`: answer every token request with 503 (an outage).
    """

    def __init__(self, client_id: str, client_secret: str, expires_in: float | None = 3600, delay: float = 0.0):
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.delay = delay
        self.script: list[Reply] = []
        self.down = False
        self.lock = threading.Lock()
        self.valid: dict[str, float] = {}  # token -> monotonic expiry
        self.issued: list[str] = []
        self.token_requests: list[dict] = []  # what each token request carried (form, client, style)
        self.resource_requests: list[str | None] = []  # the Authorization header of each resource request

    # --- the token endpoint ---------------------------------------------------------------

    def token_endpoint(self, req: Received) -> Reply:
        form = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
        client, style = self.client_of(req, form)
        with self.lock:
            self.token_requests.append({"form": form, "client": client, "style": style})
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            return scripted
        if self.down:
            return Reply.json({"error": "temporarily_unavailable"}, 503)
        if form.get("grant_type") != "client_credentials":
            return Reply.json({"error": "unsupported_grant_type"}, 400)
        if client != (self.client_id, self.client_secret):
            return Reply.json({"error": "invalid_client", "error_description": "unknown client"}, 401)
        token = secrets.token_urlsafe(24)
        answer = {"access_token": token, "token_type": "Bearer"}
        with self.lock:
            self.issued.append(token)
            self.valid[token] = time.monotonic() + (self.expires_in if self.expires_in is not None else 1e9)
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return Reply.json(answer, delay=self.delay)

    @staticmethod
    def client_of(req: Received, form: dict) -> tuple[tuple[str, str] | None, str | None]:
        """The client credentials as RFC 6749 section 2.3.1 sends them, and where they were."""
        authorization = req.header("Authorization")
        if authorization and authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            return (unquote_plus(user), unquote_plus(password)), "basic"
        if "client_id" in form:
            return (form["client_id"], form.get("client_secret", "")), "body"
        return None, None

    # --- the protected resource -------------------------------------------------------------

    def resource(self, req: Received) -> Reply:
        authorization = req.header("Authorization")
        with self.lock:
            self.resource_requests.append(authorization)
            token = authorization[len("Bearer "):] if authorization and authorization.startswith("Bearer ") else None
            ok = token is not None and self.valid.get(token, 0) > time.monotonic()
            number = self.issued.index(token) if ok else None
        if not ok:
            return Reply.json({"error": "invalid_token"}, 401, [("WWW-Authenticate", 'Bearer error="invalid_token"')])
        # Which token it was, by its number in `issued`: a token echoed as it is would reach
        # the client as "[redacted]".
        return Reply.json({"path": req.path, "token_number": number})

    def token_in(self, body: bytes) -> str:
        """The token a resource answer says it was called with."""
        return self.issued[json.loads(body)["token_number"]]

    def revoke_all(self) -> None:
        with self.lock:
            self.valid.clear()
