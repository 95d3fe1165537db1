"""Secrets an upstream reflects back: replaced by `[redacted]` before any door sees the answer.

An upstream's debug page, error page or redirect may echo the request it got, credential
included (`Location: /login?next=/x%3Fapi_key%3D...`). The auth stage knows the secret and
the forms it took on the wire, so it redacts them once, on the answer; the cache, aggregates,
batch, async jobs, recordings and the client all get the redacted answer.

The common case costs one `in` per form on the body and on each header value, and allocates
nothing. A compressed body (gzip, deflate, br, zstd) is decoded to be searched, within the
bound on every body the ambassador decodes (`bounded.py`): when it holds a secret, the client
gets it decoded, redacted and without Content-Encoding; otherwise the compressed bytes as they
came. A body that cannot be searched (another coding, corrupt, over the bound) is refused:
it could hold the secret.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from multidict import CIMultiDict

from .bounded import TooLarge, Undecodable, decoded, too_large
from .errors import AmbassadorError
from .exchange import REDACTED, UpstreamResponse

REDACTED_BYTES = REDACTED.encode()


class Secrets:
    """The forms a credential's secrets take on the wire (the auth stage's `secret_forms`,
    longest first so that a secret containing another is redacted whole), made once: as bytes
    for bodies and as latin-1 text for header values, which the transport decodes as latin-1."""

    __slots__ = ("raws", "texts")

    def __init__(self, forms: Iterable[str]):
        self.raws = tuple(form.encode() for form in forms)
        self.texts = tuple(raw.decode("latin-1") for raw in self.raws)

    def in_headers(self, headers: CIMultiDict[str]) -> bool:
        for value in headers.values():
            for text in self.texts:
                if text in value:
                    return True
        return False

    def in_body(self, body: bytes) -> bool:
        for raw in self.raws:
            if raw in body:
                return True
        return False

    def replaced_in_text(self, value: str) -> str:
        for text in self.texts:
            value = value.replace(text, REDACTED)
        return value

    def replaced_in_body(self, body: bytes) -> bytes:
        for raw in self.raws:
            body = body.replace(raw, REDACTED_BYTES)
        return body


def redacted(response: UpstreamResponse, secrets: Secrets, upstream_name: str) -> UpstreamResponse:
    """`response` with every form of a secret replaced by `[redacted]`; the same object when
    none is in it. AmbassadorError when the body cannot be searched (see decoded_body)."""
    headers = response.headers
    if secrets.in_headers(headers):
        headers = CIMultiDict((name, secrets.replaced_in_text(value)) for name, value in headers.items())
    body = response.body
    coding = headers.get("Content-Encoding", "").strip().lower() if body else ""
    if coding not in ("", "identity"):
        decoded = decoded_body(body, coding, upstream_name)
        if secrets.in_body(decoded):
            body = secrets.replaced_in_body(decoded)
            headers = headers.copy() if headers is response.headers else headers
            del headers["Content-Encoding"]
    elif secrets.in_body(body):
        body = secrets.replaced_in_body(body)
    if body is not response.body:
        headers = headers.copy() if headers is response.headers else headers
        if "Content-Length" in headers:
            headers["Content-Length"] = str(len(body))
    if headers is response.headers:
        return response
    return replace(response, headers=headers, body=body)


def decoded_body(body: bytes, coding: str, upstream_name: str) -> bytes:
    """The body without its Content-Encoding; AmbassadorError when it cannot be searched."""
    try:
        return decoded(body, coding)
    except TooLarge:
        raise too_large(upstream_name, "a body that inflates") from None
    except Undecodable as e:
        raise AmbassadorError(
            "upstream_error", f"upstream {upstream_name} answered with a body that cannot be checked for a reflected credential: {e}", upstream_name
        ) from None
