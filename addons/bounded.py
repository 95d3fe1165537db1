"""How much of an upstream's body the ambassador holds, and decompression that stops there.

Aggregate parts, batch items, SOAP answers, async job results and cache entries are held whole
(in memory, in a store), and compressed ones are decoded to be embedded or parsed. A gzip body
of a few kilobytes can inflate to gigabytes: decoding here produces at most one byte more than
the bound before it gives up, so a bomb is never inflated whole.
"""

from __future__ import annotations

import zlib

import brotli

from .errors import AmbassadorError

try:  # the module mitmproxy decodes zstd with
    from compression import zstd
except ImportError:  # Python < 3.14
    from backports import zstd

MAX_BODY = 16 * 1024**2  # bytes of an upstream body the ambassador holds (decoded, where it decodes)


class TooLarge(ValueError):
    """A body, or what it inflates to, is over the bound."""


class Undecodable(ValueError):
    """A coding the ambassador does not know, or data not valid for it."""


def too_large(upstream: str, what: str, limit: int = MAX_BODY) -> AmbassadorError:
    """The error for an upstream's body over the bound: 502, the upstream's fault, not the client's."""
    return AmbassadorError("too_large", f"upstream {upstream} answered with {what} over {limit} bytes", upstream, status=502)


def decoded(body: bytes, content_encoding: str, limit: int = MAX_BODY) -> bytes:
    """`body` without its Content-Encoding (codings listed in the order applied, so undone last first).

    Raises TooLarge when the body or what it inflates to is over `limit` bytes, and
    Undecodable for a coding that is unknown or data that is not valid for it.
    """
    if len(body) > limit:
        raise TooLarge(f"{len(body)} bytes")
    for coding in reversed(content_encoding.lower().split(",")):
        coding = coding.strip()
        if coding in ("", "identity") or not body:
            continue
        decode = DECODERS.get(coding)
        if decode is None:
            raise Undecodable(f"unknown content coding {coding!r}")
        try:
            body = decode(body, limit)
        except (zlib.error, brotli.error, zstd.ZstdError, EOFError) as e:
            raise Undecodable(f"not valid {coding} data: {e}") from None
    return body


def _inflate(body: bytes, limit: int, wbits: int) -> bytes:
    """zlib formats; gzip bodies may hold several members one after another."""
    out, size = [], 0
    while body:
        inflater = zlib.decompressobj(wbits)
        chunk = inflater.decompress(body, limit + 1 - size)
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"over {limit} bytes inflated")
        if not inflater.eof:
            raise zlib.error("the data ends before its stream does")
        out.append(chunk)
        body = inflater.unused_data
    return b"".join(out)


def _gzip(body: bytes, limit: int) -> bytes:
    return _inflate(body, limit, 16 + zlib.MAX_WBITS)


def _deflate(body: bytes, limit: int) -> bytes:
    """`deflate` is zlib data by the RFC, raw deflate data from some servers."""
    try:
        return _inflate(body, limit, zlib.MAX_WBITS)
    except zlib.error:
        return _inflate(body, limit, -zlib.MAX_WBITS)


def _brotli(body: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    out, size = [], 0
    data = body
    while True:
        chunk = decompressor.process(data, output_buffer_limit=limit + 1 - size)
        data = b""
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"over {limit} bytes inflated")
        out.append(chunk)
        if decompressor.is_finished():
            return b"".join(out)
        if decompressor.can_accept_more_data():
            raise brotli.error("the data ends before its stream does")


def _zstd(body: bytes, limit: int) -> bytes:
    out, size = [], 0
    while body:
        decompressor = zstd.ZstdDecompressor()
        chunk = decompressor.decompress(body, limit + 1 - size)
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"over {limit} bytes inflated")
        if not decompressor.eof:
            raise zstd.ZstdError("the data ends before its frame does")
        out.append(chunk)
        body = decompressor.unused_data
    return b"".join(out)


DECODERS = {"gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate, "br": _brotli, "zstd": _zstd}
