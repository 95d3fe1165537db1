"""The header writer the transport's requests use (addons/header_bytes.py), and the part of
aiohttp it replaces."""

import asyncio

import pytest
from aiohttp import http_writer
from multidict import CIMultiDict

from addons.header_bytes import header_block, sending_header_bytes


def test_each_character_is_the_byte_it_stands_for():
    block = header_block("GET / HTTP/1.1", CIMultiDict([("X-Latin1", "caf\xe9"), ("X-Utf8", "caf\xc3\xa9")]))
    assert block == b"GET / HTTP/1.1\r\nX-Latin1: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\n\r\n"


def test_a_field_beyond_one_byte_per_character_is_utf8_the_others_unchanged():
    block = header_block("GET / HTTP/1.1", CIMultiDict([("Authorization", "Bearer t€ken"), ("X-Latin1", "caf\xe9")]))
    assert block == "GET / HTTP/1.1\r\nAuthorization: Bearer t€ken\r\n".encode() + b"X-Latin1: caf\xe9\r\n\r\n"


@pytest.mark.parametrize("value", ["a\r\nX-Forged: 1", "a\nb", "a\x00b", "a\x7fb"])
def test_line_breaks_and_control_bytes_are_refused_as_aiohttp_does(value):
    with pytest.raises(ValueError, match="header injection"):
        header_block("GET / HTTP/1.1", CIMultiDict([("X-Bad", value)]))


def test_a_tab_is_allowed():
    assert header_block("GET / HTTP/1.1", CIMultiDict([("X-Tab", "a\tb")])).endswith(b"X-Tab: a\tb\r\n\r\n")


def test_aiohttp_writes_with_it_inside_the_block_only():
    """Pins aiohttp: StreamWriter.write_headers looks the serializer up in http_writer."""

    class Protocol:  # what a StreamWriter needs of its connection to buffer headers
        transport = None
        writing_paused = False

    async def written() -> bytes:
        writer = http_writer.StreamWriter(Protocol(), asyncio.get_running_loop())
        await writer.write_headers("GET / HTTP/1.1", CIMultiDict([("X-Latin1", "caf\xe9")]))
        return writer._headers_buf

    assert asyncio.run(written()) == "GET / HTTP/1.1\r\nX-Latin1: café\r\n\r\n".encode()  # aiohttp's UTF-8

    async def inside() -> bytes:
        with sending_header_bytes():
            return await written()

    assert asyncio.run(inside()) == b"GET / HTTP/1.1\r\nX-Latin1: caf\xe9\r\n\r\n"
