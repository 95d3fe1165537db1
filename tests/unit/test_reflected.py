"""Reflected secrets: the decisions of addons/reflected.py over plain responses."""

import gzip
import zlib

import brotli
from urllib.parse import quote

import pytest
from multidict import CIMultiDict

from addons.errors import AmbassadorError
from addons.auth import forms_of, on_the_wire
from addons.exchange import UpstreamResponse
from addons.bounded import MAX_BODY, zstd
from addons.reflected import Secrets, redacted

SECRET = "k3y/with+specials=&"


def answer(body: bytes = b"", **headers: str) -> UpstreamResponse:
    fields = CIMultiDict({name.replace("_", "-"): value for name, value in headers.items()})
    if body:
        fields["Content-Length"] = str(len(body))
    return UpstreamResponse(200, "OK", fields, body)


def secrets(*values: str) -> Secrets:
    """What the auth stage redacts for these values: each as sent and percent-encoded."""
    return Secrets(forms_of(*(form for value in values for form in on_the_wire(value))))


def test_forms_are_the_secret_as_sent_and_percent_encoded_longest_first():
    forms = secrets(SECRET, "a b")
    assert set(forms.raws) == {SECRET.encode(), b"k3y%2Fwith%2Bspecials%3D%26", b"a b", b"a%20b", b"a+b"}
    assert list(forms.raws) == sorted(forms.raws, key=len, reverse=True)
    assert forms.texts == tuple(raw.decode("latin-1") for raw in forms.raws)
    assert secrets("plain").raws == (b"plain",)  # its encodings are itself
    assert Secrets(["pässword"]).texts == ("pÃ¤ssword",)  # UTF-8 on the wire, read as latin-1


def test_an_answer_without_a_secret_is_the_same_object():
    response = answer(b'{"ok": true}', Location="/next?a=1", Content_Type="application/json")
    assert redacted(response, secrets(SECRET), "u") is response


def test_every_header_and_the_body_are_redacted_in_every_form():
    encoded = quote(SECRET, safe="")
    body = f"you sent {SECRET} and {encoded}".encode()
    response = answer(body, Location=f"/login?next=/x%3Fapi_key%3D{encoded}", X_Echo=f"Bearer {SECRET}", Server="fake")
    shown = redacted(response, secrets(SECRET), "u")
    assert shown.headers["Location"] == "/login?next=/x%3Fapi_key%3D[redacted]"
    assert shown.headers["X-Echo"] == "Bearer [redacted]" and shown.headers["Server"] == "fake"
    assert shown.body == b"you sent [redacted] and [redacted]"
    assert shown.headers["Content-Length"] == str(len(shown.body))
    assert response.headers["X-Echo"] == f"Bearer {SECRET}"  # the upstream's answer itself is untouched
    assert list(shown.headers) == list(response.headers)  # order kept


def test_a_secret_containing_another_is_redacted_whole():
    shown = redacted(answer(b"token=abcdef"), secrets("abc", "abcdef"), "u")
    assert shown.body == b"token=[redacted]"


@pytest.mark.parametrize("coding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b, wbits=-zlib.MAX_WBITS)),  # raw deflate, as some servers send
    ("br", brotli.compress),
    ("zstd", zstd.compress),
    ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
])
def test_a_compressed_echo_is_answered_decoded_and_redacted(coding, compress):
    body = compress(f"echo {SECRET}".encode())
    shown = redacted(answer(body, Content_Encoding=coding), secrets(SECRET), "u")
    assert shown.body == b"echo [redacted]"
    assert "Content-Encoding" not in shown.headers and shown.headers["Content-Length"] == str(len(shown.body))


def test_a_compressed_answer_without_the_secret_keeps_its_encoding():
    response = answer(gzip.compress(b"nothing to see"), Content_Encoding="gzip")
    assert redacted(response, secrets(SECRET), "u") is response


@pytest.mark.parametrize("coding, body, reason, status", [
    ("compress", b"\x1f\x9d\x90hello", "upstream_error", 502),  # a coding the ambassador cannot decode
    ("gzip, br", gzip.compress(b"x"), "upstream_error", 502),
    ("gzip", b"not gzip at all", "upstream_error", 502),
    ("gzip", gzip.compress(b"cut short")[:-6], "upstream_error", 502),
    ("gzip", gzip.compress(b"\0" * (MAX_BODY + 1)), "too_large", 502),
])
def test_a_body_that_cannot_be_searched_is_refused(coding, body, reason, status):
    with pytest.raises(AmbassadorError) as refused:
        redacted(answer(body, Content_Encoding=coding), secrets(SECRET), "partner")
    assert (refused.value.reason, refused.value.status, refused.value.upstream) == (reason, status, "partner")
