"""Header bytes sent to upstreams as the client sent them.

The ambassador holds header values as text, one character per byte (latin-1): mitmproxy hands
it bytes and answers go back to the client the same way, so a value with bytes outside ASCII
(obs-text: latin-1 `caf\\xe9`, raw UTF-8) keeps them. aiohttp, however, writes every header as
UTF-8, which would turn the client's `\\xe9` into `\\xc3\\xa9`. Inside `sending_header_bytes()`
(the transport's exchanges) its header writer is replaced by one writing each character as the
byte it stands for; a field holding characters beyond one byte (text that never was bytes, e.g.
a token from JSON) is written in UTF-8 as aiohttp would. Elsewhere aiohttp is unchanged.

This replaces a private function of aiohttp (`http_writer._serialize_headers`, which its
`StreamWriter.write_headers` looks up on each call); tests/unit/test_header_bytes.py pins it, so an
aiohttp upgrade that changes it fails a test.
"""

from __future__ import annotations

import contextlib
import re
from contextvars import ContextVar
from typing import Iterator

from aiohttp import http_writer
from multidict import CIMultiDict

# What aiohttp refuses in a header too: a line break would forge fields (header injection).
FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_as_bytes: ContextVar[bool] = ContextVar("ambassador_header_bytes", default=False)
_utf8_serialize = http_writer._serialize_headers


def header_block(status_line: str, headers: CIMultiDict[str]) -> bytes:
    """The request line and fields as bytes, one byte per character where each fits."""
    lines = [status_line, *(f"{name}: {value}" for name, value in headers.items())]
    if FORBIDDEN.search("\t".join(lines)):  # tab: allowed, so the joints cannot match
        raise ValueError("Forbidden control character detected in headers. Potential header injection attack.")
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return b"".join(_field_bytes(line) + b"\r\n" for line in lines) + b"\r\n"


def _field_bytes(line: str) -> bytes:
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        return line.encode("utf-8")


def _serialize(status_line: str, headers: CIMultiDict[str]) -> bytes:
    if _as_bytes.get():
        return header_block(status_line, headers)
    return _utf8_serialize(status_line, headers)


@contextlib.contextmanager
def sending_header_bytes() -> Iterator[None]:
    """Requests made by this task inside the block write their headers byte for byte."""
    token = _as_bytes.set(True)
    try:
        yield
    finally:
        _as_bytes.reset(token)


http_writer._serialize_headers = _serialize
