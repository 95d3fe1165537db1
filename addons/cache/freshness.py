"""RFC 9111 (and RFC 5861) rules as plain functions: directives, dates, storability, freshness, age.

Everything here runs when a response is stored, not when it is served: a stored entry keeps
the results (lifetime, corrected initial age, flags), so a cache hit only adds and compares.
"""

from __future__ import annotations

import email.utils
import re
from calendar import timegm
from typing import Iterable

# RFC 9111 section 1.2.2: delta-seconds beyond what a cache can represent count as 2^31.
DELTA_MAX = 2147483648
# RFC 9111 section 4.2.2: statuses a cache may give heuristic freshness (206 left out: no ranges here).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Heuristic freshness: a fraction of the time since Last-Modified (4.2.2 suggests 10%), capped.
HEURISTIC_FRACTION = 0.1
HEURISTIC_MAX = 86400.0

DIRECTIVE_RE = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*)))?\s*(?:,|$)"""
)

# A Surrogate-Control directive: name, argument (quoted or not), target device token after `;`.
SURROGATE_DIRECTIVE_RE = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)?\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^,;\s]*)))?\s*(?:;\s*([^,\s]*))?\s*(?:,|$)"""
)

Directives = dict[str, "str | None"]
NO_DIRECTIVES: Directives = {}


def parse_cache_control(values: Iterable[str]) -> tuple[Directives, frozenset[str]]:
    """Cache-Control field lines -> ({directive: argument or None}, names given more than once).

    Names are case-insensitive; quoted arguments are unquoted (RFC 9111 section 5.2: recipients
    accept both forms). The first occurrence is kept; `duplicates` lets callers be strict.
    """
    directives: Directives = {}
    duplicates: set[str] = set()
    for value in values:
        for m in DIRECTIVE_RE.finditer(value):
            if not m.group(0).strip(" ,\t"):
                continue
            name = m.group(1).lower()
            argument = m.group(2) if m.group(2) is not None else m.group(3)
            if m.group(2) is not None:
                argument = re.sub(r"\\(.)", r"\1", argument)
            if name in directives:
                if directives[name] != argument:
                    duplicates.add(name)
                continue
            directives[name] = argument
    return directives, frozenset(duplicates)


def request_directives(cache_control: list[str] | None, pragma: list[str] | None) -> Directives:
    """A request's Cache-Control directives. Without Cache-Control, `Pragma: no-cache` counts as
    `no-cache`: RFC 9111 deprecates Pragma, but HTTP/1.0 clients and some libraries still send
    it alone to ask for a fresh answer (RFC 7234 section 5.4 said caches must honour it)."""
    if cache_control:
        return parse_cache_control(cache_control)[0]
    if pragma and any(token.strip().lower() == "no-cache" for line in pragma for token in line.split(",")):
        return {"no-cache": None}
    return NO_DIRECTIVES


def delta_seconds(argument: str | None) -> int | None:
    """A delta-seconds argument, or None when it is missing or not a non-negative integer."""
    if argument is None or not argument.isascii() or not argument.isdigit():
        return None
    return min(int(argument), DELTA_MAX)


def http_date(value: str | None) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime form) as a POSIX time; None if invalid."""
    if not value:
        return None
    parsed = email.utils.parsedate_tz(value)
    if parsed is None or parsed[9] not in (0, None) or not 1 <= parsed[1] <= 12:
        return None
    try:
        return float(timegm(parsed[:6] + (0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def single(values: list[str]) -> str | None:
    """The value of a singleton field; None when absent or sent more than once with different values."""
    if not values or any(v != values[0] for v in values[1:]):
        return None
    return values[0]


def explicit_lifetime(cc: Directives, duplicates: frozenset[str], expires: list[str], date: float) -> float | None:
    """Freshness lifetime a shared cache takes from the response itself (RFC 9111 4.2.1), or None.

    Invalid or conflicting freshness information makes the response stale (lifetime 0), as
    4.2.1 encourages, rather than falling back to a less specific source.
    """
    for name in ("s-maxage", "max-age"):
        if name in cc:
            seconds = delta_seconds(cc[name])
            return 0.0 if seconds is None or name in duplicates else float(seconds)
    if expires:
        expiry = http_date(single(expires))
        return 0.0 if expiry is None else max(0.0, expiry - date)
    return None


def surrogate_lifetime(argument: str | None) -> float:
    """Surrogate-Control `max-age=delta[+delta]`: the first delta is the freshness lifetime (the
    optional extension is not used here); an invalid value makes the response stale."""
    return float(delta_seconds(argument.partition("+")[0] if argument else None) or 0)


def heuristically_cacheable(status: int, cc: Directives) -> bool:
    """RFC 9111 4.2.2: statuses defined as heuristically cacheable, and any response marked
    `public` (5.2.2.9: without explicit freshness it is heuristically cacheable)."""
    return status in HEURISTIC_STATUSES or "public" in cc


def heuristic_lifetime(date: float, last_modified: str | None) -> float:
    """RFC 9111 4.2.2: a fraction of the time since Last-Modified, for responses that allow it."""
    modified = http_date(last_modified)
    if modified is None or modified >= date:
        return 0.0
    return min(HEURISTIC_MAX, (date - modified) * HEURISTIC_FRACTION)


def age_value(lines: list[str]) -> int | None:
    """The Age a response arrived with (RFC 9111 5.1): 0 without one, None when it cannot be read.

    Age is a singleton holding one delta-seconds. A list (`7200, 0`), a second field line,
    a sign, a fraction or a parameter make the age unknown: the response then counts as stale
    (None), as 4.2.1 encourages for invalid or repeated freshness information. 5.1 would take
    the first member or ignore the field, but either can make an old response look fresh, and
    a cache is never obliged to reuse a response it is unsure of. Values too large for the
    cache count as 2^31 (1.2.2): still an age, and an old one.
    """
    if not lines:
        return 0
    if len(lines) > 1:
        return None
    return delta_seconds(lines[0].strip())


def corrected_initial_age(age_value: int, date: float, request_time: float, response_time: float) -> float:
    """RFC 9111 4.2.3: the age of a response when it arrived, from Age, Date and the round trip."""
    apparent_age = max(0.0, response_time - date)
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


def surrogate_control(values: list[str], device: str) -> Directives:
    """Surrogate-Control field lines (W3C Edge Architecture 1.0) -> the directives for this cache.

    A directive may be targeted (`max-age=60;edge`): it then applies only to the surrogate that
    announced that device token in Surrogate-Capability. Names are case-insensitive; the first
    occurrence of a name wins.
    """
    directives: Directives = {}
    for value in values:
        for m in SURROGATE_DIRECTIVE_RE.finditer(value):
            if not m.group(1) or (m.group(4) is not None and m.group(4) != device):
                continue
            name = m.group(1).lower()
            if name not in directives:
                directives[name] = m.group(2) if m.group(2) is not None else m.group(3)
    return directives


def stale_window(cc: Directives, name: str) -> float:
    """An RFC 5861 window (stale-while-revalidate, stale-if-error) in seconds; 0 when absent."""
    return float(delta_seconds(cc.get(name)) or 0) if name in cc else 0.0


def entity_tags(value: str) -> list[str]:
    """The entity-tags of an If-None-Match / If-Match list, as given ("*" included)."""
    return [tag.strip() for tag in re.findall(r'\s*((?:W/)?"[^"]*"|\*)\s*(?:,|$)', value)]


def weak_match(a: str, b: str) -> bool:
    """RFC 9110 8.8.3.2 weak comparison: equal opaque tags, W/ ignored."""
    return a.removeprefix("W/") == b.removeprefix("W/")
