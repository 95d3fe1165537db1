"""Converters of single profile values: each returns the typed value or raises InvalidValue
with the problem; the reader adds the key path."""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import unquote, urlsplit


from .. import shared_redis
from ..fields import HOP_BY_HOP, TRANSPORT_OWNED
from .model import (
    ADMIN_PREFIX, DURATION_RE, DURATION_UNITS, EgressProxy, HEADER_NAME_RE, HTTP_METHODS,
    PLACEHOLDER_RE, SIZE_RE, SIZE_UNITS, UpstreamURL, normal_origin, origin_text,
)


class InvalidValue(ValueError):
    """Raised by a converter; the reader records it with the key path."""


class Substituted(str):
    """A value made by `${...}`: settings that are not strings parse it (`fail_max: ${N:-5}`)."""


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def got(value: Any) -> str:
    """A value as a message shows it: strings as written, other things with their type."""
    return repr(str(value)) if isinstance(value, str) else describe(value)


def closest(key: str, allowed: frozenset[str]) -> str | None:
    found = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return found[0] if found else None


def duration(value: Any) -> float:
    """`250ms`, `5s`, `2m`, `1h` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := DURATION_RE.fullmatch(value)):
        seconds = float(m.group(1)) * DURATION_UNITS[m.group(2) or "s"]
    else:
        raise InvalidValue(f"must be a duration like 250ms, 5s, 2m, 1h or a number of seconds, got {got(value)}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidValue(f"must be a duration of zero or more, got {got(value)}")
    return seconds


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise InvalidValue(f"must be greater than zero, got {got(value)}")
    return seconds


def size(value: Any) -> int:
    """`512KB`, `64MB`, `1GB` (powers of 1024) or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and (m := SIZE_RE.fullmatch(value)):
        n = int(m.group(1)) * SIZE_UNITS[(m.group(2) or "b").lower()]
    else:
        raise InvalidValue(f"must be a size like 512KB, 64MB or a number of bytes, got {got(value)}")
    if n <= 0:
        raise InvalidValue(f"must be greater than zero, got {got(value)}")
    return n


def _as_integer(value: Any) -> int | None:
    if isinstance(value, Substituted) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = _as_integer(value)
        if number is None:
            raise InvalidValue(f"must be an integer, got {got(value)}")
        if number < minimum or (maximum is not None and number > maximum):
            bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise InvalidValue(f"must be an integer {bound}, got {number}")
        return number

    return convert


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, Substituted) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidValue(f"must be true or false, got {got(value)}")


def text(value: Any) -> str:
    if not isinstance(value, str):
        # Only the type: the value may be a secret (`token: 12345678`).
        got = "nothing" if value is None else type(value).__name__
        hint = " (quote it to keep it as written)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise InvalidValue(f"must be a string, got {got}{hint}")
    if value == "":
        raise InvalidValue("must not be empty")
    return str(value)


def header_name(value: Any) -> str:
    name = text(value)
    if not HEADER_NAME_RE.fullmatch(name):
        raise InvalidValue(f"must be an HTTP header name (letters, digits, '-' and the like), got {name!r}")
    return name


def credential_header(value: Any) -> str:
    """A header that can carry a credential to the upstream: not one that ends at this hop
    or that the transport owns."""
    name = header_name(value)
    if name.lower() in HOP_BY_HOP | TRANSPORT_OWNED:
        raise InvalidValue(f"{name} cannot carry a credential")
    return name


def header_value(value: Any) -> str:
    """A value that goes into a request header: a line break there would forge headers."""
    value = text(value)
    if any(c in value for c in "\r\n\0"):
        raise InvalidValue("must not contain line breaks or NUL characters")
    return value


def basic_username(value: Any) -> str:
    username = header_value(value)
    if ":" in username:
        raise InvalidValue("must not contain ':' (RFC 7617)")
    return username


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        # str(): YAML reads `version: 1.2` as a number.
        if isinstance(value, bool) or str(value) not in options:
            raise InvalidValue(f"must be one of {', '.join(options)}, got {got(value)}")
        return str(value)

    return convert


def status_list(value: Any) -> frozenset[int]:
    """HTTP status codes; an empty list is allowed (then only errors and timeouts count)."""
    if not isinstance(value, list):
        raise InvalidValue(f"must be a list of HTTP status codes, got {describe(value)}")
    statuses = set()
    for item in value:
        status = _as_integer(item)
        if status is None or not 100 <= status <= 599:
            raise InvalidValue(f"must list HTTP status codes (100-599), got {got(item)}")
        statuses.add(status)
    return frozenset(statuses)


def method_list(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise InvalidValue(f"must be a non-empty list of HTTP methods, got {describe(value)}")
    for item in value:
        if item not in HTTP_METHODS:  # methods are case-sensitive (RFC 9110 section 9.1)
            raise InvalidValue(f"must list HTTP methods ({', '.join(sorted(HTTP_METHODS))}), got {got(item)}")
    return frozenset(str(item) for item in value)


def upstream_url(value: Any) -> UpstreamURL:
    raw = text(value)
    if any(c.isspace() for c in raw):
        raise InvalidValue(f"must not contain spaces, got {raw!r}")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as e:
        raise InvalidValue(f"is not a valid URL ({e}): {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(f"must be an http:// or https:// URL with a host, got {raw!r}")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise InvalidValue(f"must not have a query or fragment, got {raw!r}")
    if "@" in parts.netloc:
        raise InvalidValue("must not carry credentials; use the auth section")
    if port == 0:
        raise InvalidValue(f"port must be 1-65535, got {raw!r}")
    return UpstreamURL(
        scheme=parts.scheme,
        host=parts.hostname.lower(),
        port=port or (443 if parts.scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
    )


def egress_proxy(value: Any) -> EgressProxy:
    """`http://[user:password@]host[:port]`. Messages never repeat the value: it may hold a password."""
    raw = text(value)
    usage = "write http://host:port or http://user:password@host:port"
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise InvalidValue(f"is not a valid proxy URL; {usage}") from None
    if any(c.isspace() for c in raw) or parts.scheme != "http" or not parts.hostname:
        hint = " (the proxy itself is spoken to in plain HTTP; https upstreams go through it with CONNECT)" if parts.scheme == "https" else ""
        raise InvalidValue(f"must be an http:// proxy URL with a host; {usage}{hint}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise InvalidValue(f"must not have a path, query or fragment; {usage}")
    if port == 0:
        raise InvalidValue("port must be 1-65535")
    if ":" in unquote(parts.username or ""):
        raise InvalidValue("the user name must not contain ':' (Basic credentials)")
    return EgressProxy(origin_text("http", parts.hostname.lower(), port or 80), unquote(parts.username or ""), unquote(parts.password or ""))


def url_text(value: Any) -> str:
    """An http(s) URL kept as written (e.g. an OAuth2 token endpoint)."""
    upstream_url(value)
    return str(value)


def path_prefix(value: Any) -> str:
    prefix = text(value)
    if not prefix.startswith("/"):
        raise InvalidValue(f"must start with '/', got {prefix!r}")
    if any(c in prefix for c in "?#%") or any(c.isspace() for c in prefix) or any(seg in (".", "..") for seg in prefix.split("/")):
        raise InvalidValue(f"must be a plain path without '?', '#', '%', spaces or dot segments, got {prefix!r}")
    prefix = prefix.rstrip("/") or "/"
    if prefix == ADMIN_PREFIX or prefix.startswith(ADMIN_PREFIX + "/"):
        raise InvalidValue(f"{ADMIN_PREFIX}/ is reserved for the ambassador")
    return prefix


def host_name(value: Any) -> str:
    host = text(value).lower()
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", name) or (port and not port.isdigit()):
        raise InvalidValue(f"must be a host name, optionally with :port, got {str(value)!r}")
    return host


def origin(value: Any) -> str:
    raw = text(value)
    found = normal_origin(raw)
    if found is None:
        raise InvalidValue(f"must be an origin like https://app.example.com or http://localhost:3000 (scheme://host[:port], no path), got {raw!r}")
    return found


def plain_host_name(value: Any) -> str:
    """A host name without a port, lower-case (as requests are compared)."""
    host = host_name(value)
    if ":" in host:
        raise InvalidValue(f"must be a host name without :port, got {str(value)!r}")
    return host


def redis_url(value: Any, folder: Path) -> str:
    try:
        return shared_redis.state_url(text(value), folder)
    except ValueError as e:
        raise InvalidValue(str(e)) from None


RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
QUOTA_UNITS = {"m": 60.0, "h": 3600.0, "d": 86400.0}


def per_window(units: Mapping[str, float]) -> Callable[[Any], tuple[int, float]]:
    """`50/s` and the like: (count, window in seconds)."""
    example = " or ".join(f"50/{unit}" for unit in units)

    def convert(value: Any) -> tuple[int, float]:
        count, _, unit = str(value).strip().partition("/") if isinstance(value, str) else ("", "", "")
        if not (count.isascii() and count.isdigit() and unit in units):
            raise InvalidValue(f"must be a count per window like {example}, got {got(value)}")
        if int(count) <= 0:
            raise InvalidValue(f"must allow at least 1, got {got(value)}")
        return int(count), units[unit]

    return convert


def percentage(value: Any) -> float:
    """`20%`: a share, as a fraction."""
    number = value.removesuffix("%").strip() if isinstance(value, str) and value.endswith("%") else None
    try:
        share = float(number) if number else None
    except ValueError:
        share = None
    if share is None or not 0 <= share <= 100:
        raise InvalidValue(f"must be a percentage like 20%, got {got(value)}")
    return share / 100


def soap_action_template(value: Any) -> str:
    """A SOAPAction with {namespace} and {operation} in it; it is sent in a quoted header value."""
    template = text(value)
    unknown = set(PLACEHOLDER_RE.findall(template)) - {"namespace", "operation"}
    if unknown:
        raise InvalidValue(f"may use {{namespace}} and {{operation}}, not {{{', '.join(sorted(unknown))}}}")
    if any(c == '"' or c == "\\" or not c.isprintable() for c in template):
        raise InvalidValue("must not contain quotes, backslashes or control characters (it is sent quoted in a header)")
    return template


def answer_header(value: Any) -> str:
    """A header of an answer the ambassador makes: not one the transport or this hop owns."""
    name = header_name(value)
    if name.lower() in HOP_BY_HOP | TRANSPORT_OWNED:
        raise InvalidValue(f"{name} is set by the ambassador itself")
    return name


def body_text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"must be a string (quote it to keep it as written), got {describe(value)}")
    return value
