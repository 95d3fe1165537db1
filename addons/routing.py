"""Which upstream a request belongs to, and the path it has there. Plain Python, no flows."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .errors import AmbassadorError
from .profile import ADMIN_PREFIX, Profile, Upstream


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    path: str  # path and query to request at the upstream, base path included


def join_path(base_path: str, rest: str) -> str:
    """Append `rest` (path, maybe with a query, maybe empty) to an upstream's base path."""
    if not rest or rest[0] == "?":
        return (base_path or "/") + rest
    return base_path + rest


def is_admin_path(path: str) -> bool:
    """`/_ambassador` and below: the ambassador's own endpoints, on every listener."""
    path = path.split("?", 1)[0]
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def is_local_name(host: str, listener_address: str) -> bool:
    """A name a client on this host uses for the ambassador: a loopback name or address, or
    the address it listens on. A request naming anything else at the ambassador's port comes
    from a web page whose name resolves here (DNS rebinding), not from the app."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost") or host == listener_address:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def names_ambassador(host: str, port: int, listener: tuple[str, int], allowed_hosts: frozenset[str]) -> bool:
    """A request for the ambassador itself: a local name at the port it listens on, or a name
    the profile lists in `allowed_hosts` at any port (behind a container's port mapping the
    client's port is not the listener's)."""
    return (port == listener[1] and is_local_name(host, listener[0])) or host.lower().rstrip(".") in allowed_hosts


# How many times a path is percent-decoded, looking for a stable form, before it is refused:
# `%25252e` takes three. Each layer is one more decoder the path may meet on its way.
MAX_DECODINGS = 8
# Overlong UTF-8: `%c0%ae` is a '.' to lenient decoders, and no valid text.
OVERLONG_UTF8 = re.compile(rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f]|\xf0[\x80-\x8f]")


def check_no_dot_segments(path: str) -> None:
    """Refuse paths that could climb out of a prefix once the upstream decodes them.

    Read the way the most lenient decoder on the way might: percent-decoded until nothing
    changes (`%252e`), NFKC-normalised (fullwidth dots), with `\\` as `/`, and with `;params`
    cut off each segment (Tomcat, Jetty and Spring read `..;x` as `..`). Overlong UTF-8 and NUL
    (which cuts a name short in C: `..%00`) are refused outright.
    """
    if not path.startswith("/"):
        raise AmbassadorError("bad_request", f"the request target must be a path, got {path[:50]!r}")
    only_path = path.split("?", 1)[0]
    if "%" not in only_path and only_path.isascii():
        if "." not in only_path:
            return  # no dot segment, however read
        text = only_path
    else:
        text = unicodedata.normalize("NFKC", fully_decoded(only_path).decode("utf-8", "replace"))
    if any(segment.split(";", 1)[0] in (".", "..") for segment in text.replace("\\", "/").split("/")):
        raise AmbassadorError("bad_request", "path contains '.' or '..' segments")


def fully_decoded(path: str) -> bytes:
    """`path` percent-decoded until stable; AmbassadorError for what no honest client sends."""
    data = path.encode("utf-8", "surrogateescape")  # mitmproxy's reading of raw bytes, undone
    for _ in range(MAX_DECODINGS + 1):  # the last round finds it stable
        decoded = unquote_to_bytes(data)
        if decoded == data:
            break
        data = decoded
    else:
        raise AmbassadorError("bad_request", f"path is percent-encoded more than {MAX_DECODINGS} times over")
    if b"\0" in data:
        raise AmbassadorError("bad_request", "path contains a NUL byte (%00)")
    if OVERLONG_UTF8.search(data):
        raise AmbassadorError("bad_request", "path contains overlong UTF-8 (such as %c0%ae)")
    return data


def no_upstream_matches(host: str, port: int) -> AmbassadorError:
    """For a request through the ambassador to a host that no upstream's `match.host` names."""
    return AmbassadorError("not_allowed", f"no upstream matches {host}:{port}; the ambassador is not an open proxy")


class RouteTable:
    def __init__(self, profile: Profile):
        self.by_host: dict[str, Upstream] = {}
        prefixed: list[tuple[str, Upstream]] = []
        for upstream in profile.upstreams.values():
            if upstream.match.host:
                self.by_host[upstream.match.host] = upstream
            if upstream.match.path_prefix:
                prefixed.append((upstream.match.path_prefix, upstream))
        # Longest prefix first, so the most specific route wins.
        self.by_prefix = sorted(prefixed, key=lambda item: len(item[0]), reverse=True)

    def for_host(self, host: str, port: int) -> Upstream | None:
        """The upstream whose `match.host` names this host (with this port, if it names one)."""
        host = host.lower().rstrip(".")
        return self.by_host.get(f"{host}:{port}") or self.by_host.get(host)

    def for_path(self, path: str) -> Route:
        """Route a request addressed to the ambassador itself by its path prefix."""
        check_no_dot_segments(path)
        only_path, sep, query = path.partition("?")
        for prefix, upstream in self.by_prefix:
            if prefix == "/" or only_path == prefix or only_path.startswith(prefix + "/"):
                rest = only_path[len(prefix):] if prefix != "/" else only_path
                if sep:
                    rest += "?" + query
                return Route(upstream, join_path(upstream.url.base_path, rest))
        raise AmbassadorError("no_route", f"no upstream serves {only_path}")

    def for_proxy(self, upstream: Upstream, path: str) -> Route:
        """Route a request sent through the ambassador as an HTTP proxy to a matched host."""
        check_no_dot_segments(path)
        rest = path[1:] if path == "/" or path.startswith("/?") else path
        return Route(upstream, join_path(upstream.url.base_path, rest))
