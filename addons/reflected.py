"""Secrets an upstream reflects back: replaced by `[redacted]` before any door sees the answer.

An upstream's debug page, error page or redirect may echo the request it got, credential
included (`Location: /login?next=/x%3Fapi_key%3D...`). The auth stage knows the secret and
the forms it took on the wire, so it redacts them once, on the answer; the cache, aggregates,
batch, async jobs, recordings and the client all get the redacted answer.

The common case costs one `in` per form on the body and on each header value, and allocates
nothing. A gzip or deflate body is decoded to be searched (at most DECODED_MAX bytes): when it
holds a secret, the client gets it decoded, redacted and without Content-Encoding; otherwise
the compressed bytes as they came. Other codings cannot be searched: the auth stage asks the
upstream only for codings it can decode, and refuses an answer in any other.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from functools import lru_cache
from typing import Iterable

from multidict import CIMultiDict

from .errors import AmbassadorError
from .exchange import REDACTED, UpstreamResponse

REDACTED_BYTES = REDACTED.encode()
# The same bound as for every body the ambassador decompresses (aggregate parts, batch items...).
DECODED_MAX = 16 * 1024 * 1024
# Content-Encoding values a body can be searched under, with the zlib window bits to try:
# deflate is zlib-wrapped (RFC 9110), but some servers send it raw.
WINDOW_BITS = {"gzip": (16 + zlib.MAX_WBITS,), "x-gzip": (16 + zlib.MAX_WBITS,), "deflate": (zlib.MAX_WBITS, -zlib.MAX_WBITS)}
# What the auth stage lets the client's Accept-Encoding ask for.
ACCEPTED_CODINGS = frozenset({*WINDOW_BITS, "identity"})


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
    """A gzip or deflate body decoded, at most DECODED_MAX bytes of it. AmbassadorError for a
    body that cannot be searched: another coding, a corrupt body, or a larger one."""
    attempts = WINDOW_BITS.get(coding)
    if attempts is None:
        raise AmbassadorError(
            "upstream_error",
            f"upstream {upstream_name} answered with Content-Encoding {coding[:50]!r}, which cannot be checked for a reflected credential",
            upstream_name,
        )
    for bits in attempts:
        decoder = zlib.decompressobj(bits)
        try:
            decoded = decoder.decompress(body, DECODED_MAX)
        except zlib.error:
            continue
        if decoder.unconsumed_tail:
            raise AmbassadorError(
                "too_large", f"upstream {upstream_name} answered with a body over {DECODED_MAX} bytes decoded", upstream_name, status=502
            )
        if decoder.eof:
            return decoded
    raise AmbassadorError("upstream_error", f"upstream {upstream_name} answered with a corrupt {coding} body", upstream_name)


@lru_cache(maxsize=64)  # clients send the same few values over and over
def searchable_accept_encoding(value: str) -> str | None:
    """The client's Accept-Encoding reduced to codings a body can be searched under; None when
    it names none other (the header is then left as it is)."""
    codings = [part for part in value.split(",") if part.strip()]
    kept = [part for part in codings if part.split(";", 1)[0].strip().lower() in ACCEPTED_CODINGS]
    if len(kept) == len(codings):
        return None
    return ",".join(kept).strip() or "identity"
