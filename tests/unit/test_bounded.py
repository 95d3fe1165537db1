"""Bounded decompression (addons/bounded.py): it stops at the bound, it never inflates a bomb whole."""

import gzip
import resource
import zlib

import brotli
import pytest

from addons.bounded import MAX_BODY, TooLarge, Undecodable, decoded, too_large, zstd

DATA = b'{"k": "' + b"v" * 1000 + b'"}'

CODINGS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_a_body_up_to_the_bound_is_decoded(coding):
    body = CODINGS[coding](DATA)
    assert decoded(body, coding, limit=len(DATA)) == DATA
    assert decoded(body, f" {coding.upper()} ", limit=len(DATA)) == DATA  # codings are case-insensitive


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_one_byte_over_the_bound_is_too_large(coding):
    with pytest.raises(TooLarge):
        decoded(CODINGS[coding](DATA), coding, limit=len(DATA) - 1)


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_cut_off_data_is_undecodable_not_too_large(coding):
    with pytest.raises(Undecodable):
        decoded(CODINGS[coding](DATA)[:-8], coding)


def test_raw_deflate_and_several_gzip_members():
    raw = zlib.compressobj(wbits=-15)
    assert decoded(raw.compress(DATA) + raw.flush(), "deflate") == DATA  # what some servers send as deflate
    # Members one after another count together against the bound.
    two = gzip.compress(DATA) + gzip.compress(DATA)
    assert decoded(two, "gzip") == DATA + DATA
    with pytest.raises(TooLarge):
        decoded(two, "gzip", limit=2 * len(DATA) - 1)


def test_several_codings_are_undone_last_first():
    body = brotli.compress(gzip.compress(DATA))
    assert decoded(body, "gzip, br") == DATA
    # The bound holds for each step: the inner body inflates past it.
    with pytest.raises(TooLarge):
        decoded(body, "gzip, br", limit=len(DATA) - 1)


def test_identity_unknown_and_empty():
    assert decoded(DATA, "") == DATA
    assert decoded(DATA, "identity") == DATA
    assert decoded(b"", "gzip") == b""
    with pytest.raises(Undecodable):
        decoded(DATA, "compress")


def test_a_stored_body_over_the_bound_is_too_large_without_decoding():
    with pytest.raises(TooLarge):
        decoded(b"x" * 11, "", limit=10)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_bomb_stops_at_the_bound(coding):
    """About 300 MB of zeros, compressed to a few hundred KB at most: decoding gives up after
    16 MB and a byte, and memory does not grow by anything near what the bomb would inflate to."""
    bomb = _bomb(coding)
    assert len(bomb) < 400_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the peak so far
    with pytest.raises(TooLarge):
        decoded(bomb, coding)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024


def _bomb(coding: str, size: int = 300 * 1024**2) -> bytes:
    """Compressed in pieces, so that the test never holds the inflated bytes either."""
    piece = bytes(1024**2)
    if coding == "gzip":
        out = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join(out.compress(piece) for _ in range(size // len(piece))) + out.flush()
    if coding == "br":
        out = brotli.Compressor(quality=5)
        return b"".join(out.process(piece) for _ in range(size // len(piece))) + out.finish()
    out = zstd.ZstdCompressor()
    return b"".join(out.compress(piece) for _ in range(size // len(piece))) + out.flush()


def test_the_error_is_the_upstreams_too_large():
    error = too_large("legacy", "a body")
    assert (error.status, error.reason, error.upstream) == (502, "too_large", "legacy")
    assert str(MAX_BODY) in error.message
