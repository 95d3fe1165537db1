"""Cache keys (RFC 9111 section 2) and Vary matching (section 4.1)."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from multidict import CIMultiDict

from ..profile import Upstream

COMMA_SPACE_RE = re.compile(r"\s*,\s*")
# Request fields whose values are case-insensitive throughout: language ranges (RFC 4647 2.1),
# content codings (RFC 9110 8.4.1), charsets (RFC 9110 8.3.2). RFC 9111 4.1 lets a cache
# normalise such values when matching Vary.
CASE_INSENSITIVE_FIELDS = frozenset({"accept-language", "accept-encoding", "accept-charset"})


def namespace(upstream: Upstream) -> str:
    """What every key of this upstream starts with. The upstream's name is in it: two
    upstreams for one URL may carry different credentials, and a shared store (sqlite,
    Redis) must not answer one with what the other fetched."""
    return f"{upstream.name} {upstream.url}"


def primary_key(upstream: Upstream, path: str) -> str:
    """The target URI at the upstream (the path with query, its base path included), in the
    upstream's namespace.

    The method is not part of it: GET and HEAD share the stored GET response, and an unsafe
    method invalidates whatever is stored for its URI.
    """
    return f"{upstream.name} {upstream.url.origin}{path}"


def related_key(upstream: Upstream, path: str, reference: str) -> str | None:
    """The key of a Location / Content-Location URI, if it is of the same origin (RFC 9111 4.4)."""
    target = urljoin(upstream.url.origin + path, reference.strip())
    parts = urlsplit(target)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if (parts.scheme, (parts.hostname or "").lower(), port) != (upstream.url.scheme, upstream.url.host, upstream.url.port):
        return None
    return primary_key(upstream, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))


def vary_names(values: list[str]) -> tuple[str, ...] | None:
    """The request fields a response varies on, lower-cased and sorted; None for `Vary: *`."""
    names = sorted({name.strip().lower() for value in values for name in value.split(",") if name.strip()})
    return None if "*" in names else tuple(names)


def selecting_values(names: tuple[str, ...], headers: CIMultiDict[str]) -> tuple[str | None, ...]:
    """The request's values of the Vary fields, normalised: lines combined, list whitespace removed,
    case folded where the field's values are case-insensitive."""
    values = []
    for name in names:
        lines = headers.getall(name, None)
        value = None if lines is None else COMMA_SPACE_RE.sub(",", ",".join(lines)).strip()
        values.append(value.lower() if value and name in CASE_INSENSITIVE_FIELDS else value)
    return tuple(values)
