"""Byte ranges a stored complete response can answer itself (RFC 9110 section 14)."""

from __future__ import annotations


def byte_range(value: str, length: int) -> tuple[int, int] | None:
    """The first and last byte positions a `Range` field asks of a `length`-byte body.

    None unless it is one satisfiable `bytes` range: several ranges (a multipart answer), other
    units, malformed or unsatisfiable ones are left to the upstream, which answers them whole.
    """
    unit, _, spec = value.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or not all(p.isascii() and p.isdigit() for p in (first, last) if p):
        return None
    if not first:  # suffix-byte-range-spec: the last N bytes
        if not last or int(last) == 0 or length == 0:
            return None
        return max(0, length - int(last)), length - 1
    start = int(first)
    end = length - 1 if not last else min(int(last), length - 1)
    if start >= length or (last and int(last) < start):
        return None
    return start, end
