"""The profile: YAML parsed and validated once into immutable, typed policy objects.

Every problem is reported with the file, the key path and what is wrong, and all problems
of a file are collected before giving up, so that one `check` run shows everything to fix.
The keys each section allows (`SECTIONS`) and the value patterns are module constants:
`profiles/schema.json` describes the same format for editors and tests/test_schema.py keeps
the two in agreement.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import unquote, urlsplit

import yaml

from . import shared_redis
from .fields import HOP_BY_HOP, TRANSPORT_OWNED

# Patterns shared with profiles/schema.json (there anchored with ^...$).
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]*"
DURATION_PATTERN = r"(\d+(?:\.\d+)?)(ms|s|m|h)?"
SIZE_PATTERN = r"(\d+)([Bb]|[KkMmGg][Bb])?"
SUBSTITUTION_PATTERN = r"\$\{([^}]*)\}"

NAME_RE = re.compile(NAME_PATTERN + r"\Z")
DURATION_RE = re.compile(DURATION_PATTERN)
SIZE_RE = re.compile(SIZE_PATTERN)
SUBSTITUTION_RE = re.compile(SUBSTITUTION_PATTERN)
VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# In an aggregate part's path: a capture of the aggregate's path, or `{query.NAME}`, the
# client's query parameter NAME (letters, digits and `_ . ~ -`).
QUERY_PLACEHOLDER = "query."
PART_PLACEHOLDER_RE = re.compile(r"\{(query\.[A-Za-z0-9_.~-]+|[A-Za-z_][A-Za-z0-9_]*)\}")
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"})
ADMIN_PREFIX = "/_ambassador"
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"  # where profile names are looked up
AGGREGATE_ERRORS_KEY = "_errors"  # where an aggregate's answer reports failed parts


@dataclass(frozen=True)
class Keys:
    """The keys a profile section allows and the ones it requires."""

    allowed: frozenset[str]
    required: frozenset[str] = frozenset()


def _keys(allowed: str, required: str = "") -> Keys:
    return Keys(frozenset(allowed.split()), frozenset(required.split()))


# Section name (as in profiles/schema.json's $defs) -> its keys.
SECTIONS: Mapping[str, Keys] = MappingProxyType({
    "profile": _keys("upstreams aggregates state allowed_origins allowed_hosts", "upstreams"),
    "upstream": _keys("url match timeout tls auth cache breaker retry async soap limit hedge failover fallback proxy", "url match"),
    "match": _keys("path_prefix host"),
    "tls": _keys("verify ca client_cert client_key"),
    "auth_bearer": _keys("type token", "type token"),
    "auth_header": _keys("type name value", "type name value"),
    "auth_query": _keys("type name value", "type name value"),
    "auth_basic": _keys("type username password", "type username password"),
    "auth_oauth2_client_credentials": _keys(
        "type token_url client_id client_secret scope auth_style", "type token_url client_id client_secret"
    ),
    "cache": _keys("ttl stale_if_error max_bytes store"),
    "breaker": _keys("fail_max reset_timeout failure_statuses half_open_max"),
    "retry": _keys("attempts backoff statuses methods try_timeout budget"),
    "limit": _keys("rate burst quota concurrency queue max_wait follow_upstream"),
    "async": _keys("keep"),
    "soap": _keys("namespace version wsdl action", "namespace"),
    "hedge": _keys("after max"),
    "fallback": _keys("status headers body", "status"),
})
AUTH_TYPES = tuple(name.removeprefix("auth_") for name in SECTIONS if name.startswith("auth_"))
# Sections whose keys all have defaults: a bare `cache:` (YAML null) switches the feature on.
DEFAULTED_SECTIONS = frozenset({"tls", "cache", "breaker", "retry", "async", "limit", "hedge"})


class ProfileError(Exception):
    """A profile that cannot be used; `problems` are (key path, message) pairs."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(
            f"{self.file}: {path}: {message}" if path else f"{self.file}: {message}"
            for path, message in self.problems
        )


# --- the policy objects --------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamURL:
    scheme: str
    host: str
    port: int
    base_path: str  # without trailing slash; "" for the root

    @functools.cached_property  # asked for on every request (routing, cache keys)
    def origin(self) -> str:
        return origin_text(self.scheme, self.host, self.port)

    def __str__(self) -> str:
        return self.origin + self.base_path


def origin_text(scheme: str, host: str, port: int) -> str:
    """scheme://host[:port] as browsers write an Origin: the default port left out."""
    hostpart = f"[{host}]" if ":" in host else host
    return f"{scheme}://{hostpart}" + ("" if port == (443 if scheme == "https" else 80) else f":{port}")


def normal_origin(raw: str) -> str | None:
    """An origin (scheme://host[:port]) lower-case, its default port dropped; None for anything
    else (`null`, a path, credentials, another scheme)."""
    if any(c.isspace() or not c.isprintable() for c in raw):
        return None
    try:
        parts = urlsplit(raw.lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        return None
    if "@" in parts.netloc or port == 0 or raw.endswith(("?", "#")):
        return None
    return origin_text(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


@dataclass(frozen=True)
class Match:
    path_prefix: str | None = None
    host: str | None = None  # lower-case host name, optionally ":port"


@dataclass(frozen=True)
class TLSPolicy:
    verify: bool = True
    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def context(self) -> ssl.SSLContext:
        """The TLS settings of an upstream, for its own connections and its token endpoint's.

        Building one costs tens of milliseconds (the system's CA bundle), on the event loop
        when a profile is swapped: one is kept per policy and version of its files, so that
        a reload reuses it and a rotated certificate is still picked up.
        """
        files = tuple(_file_signature(f) for f in (self.ca, self.client_cert, self.client_key) if f)
        return _tls_context(self, files)


@dataclass(frozen=True)
class EgressProxy:
    """An HTTP proxy an upstream is reached through (absolute-form for http, CONNECT for https)."""

    url: str  # http://host[:port], without the credentials: safe to show
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)


def _file_signature(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=32)
def _tls_context(tls: TLSPolicy, files: tuple) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.ca:
        context.load_verify_locations(cafile=str(tls.ca))
    if tls.client_cert:
        context.load_cert_chain(str(tls.client_cert), str(tls.client_key) if tls.client_key else None)
    return context


@dataclass(frozen=True)
class BearerAuth:
    token: str


@dataclass(frozen=True)
class HeaderAuth:
    name: str
    value: str


@dataclass(frozen=True)
class QueryAuth:
    name: str
    value: str


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str


@dataclass(frozen=True)
class OAuth2ClientCredentials:
    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    auth_style: str = "basic"  # basic | body


AuthPolicy = BearerAuth | HeaderAuth | QueryAuth | BasicAuth | OAuth2ClientCredentials


@dataclass(frozen=True)
class CachePolicy:
    ttl: float = 0.0
    stale_if_error: float = 0.0
    max_bytes: int = 64 * 1024**2
    store: str = "memory"  # memory | sqlite | redis
    sqlite_path: Path | None = None


@dataclass(frozen=True)
class BreakerPolicy:
    fail_max: int = 5
    reset_timeout: float = 30.0
    failure_statuses: frozenset[int] = frozenset({500, 502, 503, 504})
    half_open_max: int = 1


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff: float = 0.1
    statuses: frozenset[int] = frozenset({502, 503, 504})
    methods: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
    try_timeout: float | None = None  # bounds each try; unset, a try may use all the time left
    budget: float | None = None  # retries at most this share of the requests (0.2 for 20%); unset, no bound


@dataclass(frozen=True)
class LimitPolicy:
    rate: float | None = None  # requests started a second (token bucket)
    burst: int = 1
    quota: int | None = None  # requests per calendar window (UTC)
    quota_window: float = 86400.0  # seconds: 60, 3600 or 86400
    concurrency: int | None = None
    queue: int = 100
    max_wait: float = 10.0
    follow_upstream: bool = True


@dataclass(frozen=True)
class AsyncPolicy:
    keep: float = 3600.0


@dataclass(frozen=True)
class SoapPolicy:
    namespace: str
    version: str = "1.1"
    action: str = "{namespace}/{operation}"  # SOAPAction template, used without a WSDL
    wsdl: str | None = None  # where the WSDL is: a resolved file path or an http(s) URL
    # The WSDL as read when the profile loaded (addons/wsdl.py's Wsdl); None without one.
    schema: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class HedgePolicy:
    after: float = 0.3  # an idempotent request not answered by then is sent once more
    max: int = 1  # extra copies at most, each `after` after the one before


@dataclass(frozen=True)
class FallbackAnswer:
    """The answer given when the upstream cannot be used and no stale copy may stand in."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True)
class Upstream:
    name: str
    url: UpstreamURL
    match: Match
    timeout: float = 30.0
    tls: TLSPolicy = TLSPolicy()
    auth: AuthPolicy | None = None
    cache: CachePolicy | None = None
    breaker: BreakerPolicy | None = None
    retry: RetryPolicy | None = None
    async_: AsyncPolicy | None = None
    soap: SoapPolicy | None = None
    limit: LimitPolicy | None = None
    hedge: HedgePolicy | None = None
    failover: tuple[UpstreamURL, ...] = ()  # tried in order after `url`
    fallback: FallbackAnswer | None = None

    @property
    def urls(self) -> tuple[UpstreamURL, ...]:
        return (self.url, *self.failover)
    proxy: EgressProxy | None = None


@dataclass(frozen=True)
class AggregatePart:
    upstream: str
    path: str  # template with {captures}, query allowed


@dataclass(frozen=True)
class Aggregate:
    template: str
    parts: Mapping[str, AggregatePart]


@dataclass(frozen=True)
class Profile:
    path: Path
    upstreams: Mapping[str, Upstream]
    aggregates: Mapping[str, Aggregate] = field(default_factory=lambda: MappingProxyType({}))
    state: str | None = None
    allowed_origins: frozenset[str] = frozenset()  # normal_origin() forms
    allowed_hosts: frozenset[str] = frozenset()  # lower-case names
    # The files `${file:...}` read: watched like the profile file, so a rotated secret is reloaded.
    files_read: frozenset[Path] = field(default=frozenset(), compare=False)


# --- reading ---------------------------------------------------------------------------

_MISSING = object()


class InvalidValue(ValueError):
    """Raised by a converter; the reader records it with the key path."""


class Substituted(str):
    """A value made by `${...}`: settings that are not strings parse it (`fail_max: ${N:-5}`)."""


class _Reader:
    """Walks the YAML tree, converting values and collecting problems with their key paths."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.problems: list[tuple[str, str]] = []
        self.files_read: set[Path] = set()

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def section(self, node: Any, path: str, keys: Keys) -> dict | None:
        if not isinstance(node, dict):
            self.problem(path, f"must be a mapping, got {_describe(node)}")
            return None
        for key in node:
            if key not in keys.allowed:
                hint = _closest(str(key), keys.allowed)
                self.problem(_join(path, key), "unknown key" + (f" (did you mean '{hint}'?)" if hint else ""))
        for key in sorted(keys.required - node.keys()):
            self.problem(_join(path, key), "is required")
        return node

    def value(self, node: dict, path: str, key: str, convert: Callable[[Any], Any], default: Any = None) -> Any:
        raw = node.get(key, _MISSING)
        if raw is _MISSING:
            return default
        try:
            return convert(self.substitute(raw))
        except InvalidValue as e:
            self.problem(_join(path, key), str(e))
            return default

    def substitute(self, raw: Any) -> Any:
        """`${NAME}`, `${NAME:-default}` and `${file:PATH}` in a string or a list of strings."""
        if isinstance(raw, list):
            return [self.substitute(item) for item in raw]
        if not isinstance(raw, str) or "${" not in raw:
            return raw
        return Substituted(SUBSTITUTION_RE.sub(self._replace, raw))

    def _replace(self, m: re.Match) -> str:
        expr = m.group(1)
        if expr.startswith("file:"):
            file = self.path(expr.removeprefix("file:"))
            self.files_read.add(file)
            try:
                return file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as e:
                raise InvalidValue(f"cannot read {file}: {e.strerror}") from None
            except UnicodeDecodeError:
                raise InvalidValue(f"cannot read {file}: not UTF-8 text") from None
        name, sep, default = expr.partition(":-")
        if not VARIABLE_RE.fullmatch(name):
            raise InvalidValue(f"bad substitution '${{{expr}}}': use ${{NAME}}, ${{NAME:-default}} or ${{file:PATH}}")
        # As in the shell, the default also applies when the variable is set but empty.
        if os.environ.get(name):
            return os.environ[name]
        if sep:
            return default
        if name in os.environ:
            raise InvalidValue(f"environment variable {name} is empty")
        raise InvalidValue(f"environment variable {name} is not set")

    def path(self, raw: str) -> Path:
        """Relative paths are relative to the profile's folder."""
        return (self.folder / os.path.expanduser(raw)).resolve()


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def _got(value: Any) -> str:
    """A value as a message shows it: strings as written, other things with their type."""
    return repr(str(value)) if isinstance(value, str) else _describe(value)


def _closest(key: str, allowed: frozenset[str]) -> str | None:
    found = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return found[0] if found else None


# --- converters (raise InvalidValue with the problem) -----------------------------------------


def duration(value: Any) -> float:
    """`250ms`, `5s`, `2m`, `1h` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := DURATION_RE.fullmatch(value)):
        seconds = float(m.group(1)) * DURATION_UNITS[m.group(2) or "s"]
    else:
        raise InvalidValue(f"must be a duration like 250ms, 5s, 2m, 1h or a number of seconds, got {_got(value)}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidValue(f"must be a duration of zero or more, got {_got(value)}")
    return seconds


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise InvalidValue(f"must be greater than zero, got {_got(value)}")
    return seconds


def size(value: Any) -> int:
    """`512KB`, `64MB`, `1GB` (powers of 1024) or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and (m := SIZE_RE.fullmatch(value)):
        n = int(m.group(1)) * SIZE_UNITS[(m.group(2) or "b").lower()]
    else:
        raise InvalidValue(f"must be a size like 512KB, 64MB or a number of bytes, got {_got(value)}")
    if n <= 0:
        raise InvalidValue(f"must be greater than zero, got {_got(value)}")
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
            raise InvalidValue(f"must be an integer, got {_got(value)}")
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
    raise InvalidValue(f"must be true or false, got {_got(value)}")


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
            raise InvalidValue(f"must be one of {', '.join(options)}, got {_got(value)}")
        return str(value)

    return convert


def status_list(value: Any) -> frozenset[int]:
    """HTTP status codes; an empty list is allowed (then only errors and timeouts count)."""
    if not isinstance(value, list):
        raise InvalidValue(f"must be a list of HTTP status codes, got {_describe(value)}")
    statuses = set()
    for item in value:
        status = _as_integer(item)
        if status is None or not 100 <= status <= 599:
            raise InvalidValue(f"must list HTTP status codes (100-599), got {_got(item)}")
        statuses.add(status)
    return frozenset(statuses)


def method_list(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise InvalidValue(f"must be a non-empty list of HTTP methods, got {_describe(value)}")
    for item in value:
        if item not in HTTP_METHODS:  # methods are case-sensitive (RFC 9110 section 9.1)
            raise InvalidValue(f"must list HTTP methods ({', '.join(sorted(HTTP_METHODS))}), got {_got(item)}")
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


# --- sections ------------------------------------------------------------------------------


def _read_list(r: _Reader, node: dict, key: str, convert: Callable[[Any], Any]) -> frozenset:
    """A list of values, each problem reported at its index (`allowed_origins[1]`)."""
    items = node.get(key)
    if key not in node or items is None:
        return frozenset()
    if not isinstance(items, list):
        r.problem(key, f"must be a list, got {_describe(items)}")
        return frozenset()
    converted = set()
    for i, item in enumerate(items):
        try:
            converted.add(convert(r.substitute(item)))
        except InvalidValue as e:
            r.problem(f"{key}[{i}]", str(e))
    return frozenset(converted)


def _read_match(r: _Reader, node: Any, path: str) -> Match | None:
    m = r.section(node, path, SECTIONS["match"])
    if m is None:
        return None
    if not m.keys() & SECTIONS["match"].allowed:
        r.problem(path, "needs at least one of path_prefix, host")
        return None
    return Match(
        path_prefix=r.value(m, path, "path_prefix", path_prefix),
        host=r.value(m, path, "host", host_name),
    )


def _read_tls(r: _Reader, node: Any, path: str) -> TLSPolicy:
    t = r.section(node, path, SECTIONS["tls"])
    if t is None:
        return TLSPolicy()

    def existing_file(value: Any) -> Path:
        file = r.path(text(value))
        if not file.is_file():
            raise InvalidValue(f"file not found: {file}")
        return file

    tls = TLSPolicy(
        verify=r.value(t, path, "verify", boolean, True),
        ca=r.value(t, path, "ca", existing_file),
        client_cert=r.value(t, path, "client_cert", existing_file),
        client_key=r.value(t, path, "client_key", existing_file),
    )
    if "client_key" in t and "client_cert" not in t:
        r.problem(_join(path, "client_key"), "needs client_cert")
        return tls
    try:
        tls.context()  # PEM files that exist but do not load: found by `check`, not at start-up
    except (ssl.SSLError, OSError) as e:
        r.problem(path, f"cannot use the certificates: {e}")
    return tls


def _read_auth(r: _Reader, node: Any, path: str) -> AuthPolicy | None:
    if not isinstance(node, dict):
        r.problem(path, f"must be a mapping, got {_describe(node)}")
        return None
    kind = node.get("type", _MISSING)
    if kind is _MISSING:
        r.problem(_join(path, "type"), f"is required: one of {', '.join(AUTH_TYPES)}")
        return None
    if not isinstance(kind, str) or kind not in AUTH_TYPES:
        r.problem(_join(path, "type"), f"must be one of {', '.join(AUTH_TYPES)}, got {_got(kind)}")
        return None
    a = r.section(node, path, SECTIONS[f"auth_{kind}"])

    def read(key: str, convert: Callable[[Any], Any] = text) -> Any:
        return r.value(a, path, key, convert)

    match kind:
        case "bearer":
            policy = BearerAuth(read("token", header_value))
        case "header":
            policy = HeaderAuth(read("name", credential_header), read("value", header_value))
        case "query":
            policy = QueryAuth(read("name"), read("value"))
        case "basic":
            policy = BasicAuth(read("username", basic_username), read("password"))
        case _:
            policy = OAuth2ClientCredentials(
                token_url=read("token_url", url_text),
                client_id=read("client_id"),
                client_secret=read("client_secret"),
                scope=read("scope"),
                auth_style=r.value(a, path, "auth_style", choice("basic", "body"), "basic"),
            )
    required = SECTIONS[f"auth_{kind}"].required - {"type"}
    return policy if all(getattr(policy, key) is not None for key in required) else None


def _read_cache(r: _Reader, node: Any, path: str, has_state: bool) -> CachePolicy | None:
    c = r.section(node, path, SECTIONS["cache"])
    if c is None:
        return None
    store = r.value(c, path, "store", text, "memory")
    sqlite_path = None
    if store.startswith("sqlite:") and len(store) > len("sqlite:"):
        sqlite_path = r.path(store.removeprefix("sqlite:"))
        store = "sqlite"
    elif store == "redis" and not has_state:
        r.problem(_join(path, "store"), "redis needs the profile's top-level `state: redis://...`")
    elif store not in ("memory", "redis"):
        r.problem(_join(path, "store"), f"must be memory, sqlite:PATH or redis, got {store!r}")
        store = "memory"
    return CachePolicy(
        ttl=r.value(c, path, "ttl", duration, CachePolicy.ttl),
        stale_if_error=r.value(c, path, "stale_if_error", duration, CachePolicy.stale_if_error),
        max_bytes=r.value(c, path, "max_bytes", size, CachePolicy.max_bytes),
        store=store,
        sqlite_path=sqlite_path,
    )


def _read_breaker(r: _Reader, node: Any, path: str) -> BreakerPolicy | None:
    b = r.section(node, path, SECTIONS["breaker"])
    if b is None:
        return None
    d = BreakerPolicy()
    return BreakerPolicy(
        fail_max=r.value(b, path, "fail_max", integer(1), d.fail_max),
        reset_timeout=r.value(b, path, "reset_timeout", positive_duration, d.reset_timeout),
        failure_statuses=r.value(b, path, "failure_statuses", status_list, d.failure_statuses),
        half_open_max=r.value(b, path, "half_open_max", integer(1), d.half_open_max),
    )


def _read_retry(r: _Reader, node: Any, path: str) -> RetryPolicy | None:
    t = r.section(node, path, SECTIONS["retry"])
    if t is None:
        return None
    d = RetryPolicy()
    return RetryPolicy(
        attempts=r.value(t, path, "attempts", integer(1, 20), d.attempts),
        backoff=r.value(t, path, "backoff", duration, d.backoff),
        statuses=r.value(t, path, "statuses", status_list, d.statuses),
        methods=r.value(t, path, "methods", method_list, d.methods),
        try_timeout=r.value(t, path, "try_timeout", positive_duration, d.try_timeout),
        budget=r.value(t, path, "budget", percentage, d.budget),
    )


RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
QUOTA_UNITS = {"m": 60.0, "h": 3600.0, "d": 86400.0}


def per_window(units: Mapping[str, float]) -> Callable[[Any], tuple[int, float]]:
    """`50/s` and the like: (count, window in seconds)."""
    example = " or ".join(f"50/{unit}" for unit in units)

    def convert(value: Any) -> tuple[int, float]:
        count, _, unit = str(value).strip().partition("/") if isinstance(value, str) else ("", "", "")
        if not (count.isascii() and count.isdigit() and unit in units):
            raise InvalidValue(f"must be a count per window like {example}, got {_got(value)}")
        if int(count) <= 0:
            raise InvalidValue(f"must allow at least 1, got {_got(value)}")
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
        raise InvalidValue(f"must be a percentage like 20%, got {_got(value)}")
    return share / 100


def _read_limit(r: _Reader, node: Any, path: str) -> LimitPolicy | None:
    m = r.section(node, path, SECTIONS["limit"])
    if m is None:
        return None
    d = LimitPolicy()
    rate = r.value(m, path, "rate", per_window(RATE_UNITS))
    quota = r.value(m, path, "quota", per_window(QUOTA_UNITS))
    if "burst" in m and "rate" not in m:
        r.problem(_join(path, "burst"), "needs rate: it is the bucket of the rate")
    return LimitPolicy(
        rate=rate[0] / rate[1] if rate else None,
        burst=r.value(m, path, "burst", integer(1), d.burst),
        quota=quota[0] if quota else None,
        quota_window=quota[1] if quota else d.quota_window,
        concurrency=r.value(m, path, "concurrency", integer(1), d.concurrency),
        queue=r.value(m, path, "queue", integer(0), d.queue),
        max_wait=r.value(m, path, "max_wait", duration, d.max_wait),
        follow_upstream=r.value(m, path, "follow_upstream", boolean, d.follow_upstream),
    )


def _read_async(r: _Reader, node: Any, path: str) -> AsyncPolicy | None:
    a = r.section(node, path, SECTIONS["async"])
    if a is None:
        return None
    return AsyncPolicy(keep=r.value(a, path, "keep", positive_duration, AsyncPolicy.keep))


def _read_soap(r: _Reader, node: Any, path: str) -> SoapPolicy | None:
    s = r.section(node, path, SECTIONS["soap"])
    if s is None:
        return None
    namespace = r.value(s, path, "namespace", text)
    version = r.value(s, path, "version", choice("1.1", "1.2"), SoapPolicy.version)
    action = r.value(s, path, "action", soap_action_template, SoapPolicy.action)
    wsdl = r.value(s, path, "wsdl", lambda v: wsdl_location(r, v))
    schema = None
    if wsdl and version:
        from .wsdl import WsdlError, load_wsdl  # zeep loads only for profiles that name a WSDL

        try:
            schema = load_wsdl(wsdl, version)
        except WsdlError as e:
            r.problem(_join(path, "wsdl"), str(e))
    return SoapPolicy(namespace, version, action, wsdl, schema) if namespace else None


def soap_action_template(value: Any) -> str:
    """A SOAPAction with {namespace} and {operation} in it; it is sent in a quoted header value."""
    template = text(value)
    unknown = set(PLACEHOLDER_RE.findall(template)) - {"namespace", "operation"}
    if unknown:
        raise InvalidValue(f"may use {{namespace}} and {{operation}}, not {{{', '.join(sorted(unknown))}}}")
    if any(c == '"' or c == "\\" or not c.isprintable() for c in template):
        raise InvalidValue("must not contain quotes, backslashes or control characters (it is sent quoted in a header)")
    return template


def wsdl_location(r: _Reader, value: Any) -> str:
    """An http(s) URL as written, or a file (relative to the profile's folder) resolved."""
    raw = text(value)
    if raw.lower().startswith(("http://", "https://")):
        return raw
    if "://" in raw:
        raise InvalidValue(f"must be a file or an http(s) URL, got {raw!r}")
    return str(r.path(raw))


def _read_hedge(r: _Reader, node: Any, path: str) -> HedgePolicy | None:
    h = r.section(node, path, SECTIONS["hedge"])
    if h is None:
        return None
    return HedgePolicy(
        after=r.value(h, path, "after", positive_duration, HedgePolicy.after),
        max=r.value(h, path, "max", integer(1, 5), HedgePolicy.max),
    )


def _read_failover(r: _Reader, node: Any, path: str, url: UpstreamURL | None) -> tuple[UpstreamURL, ...]:
    """The failover URLs in order, each different from `url` and from the others."""
    if not isinstance(node, list) or not node:
        r.problem(path, f"must be a non-empty list of http(s) URLs, got {_describe(node)}")
        return ()
    urls: list[UpstreamURL] = []
    for i, item in enumerate(node):
        try:
            failover_url = upstream_url(r.substitute(item))
        except InvalidValue as e:
            r.problem(f"{path}[{i}]", str(e))
            continue
        if failover_url == url or failover_url in urls:
            r.problem(f"{path}[{i}]", f"{failover_url} is already tried before (url or an earlier failover entry)")
            continue
        urls.append(failover_url)
    return tuple(urls)


def _read_fallback(r: _Reader, node: Any, path: str) -> FallbackAnswer | None:
    f = r.section(node, path, SECTIONS["fallback"])
    if f is None:
        return None
    headers_path, raw_headers = _join(path, "headers"), f.get("headers") or {}
    if not isinstance(raw_headers, dict):
        r.problem(headers_path, f"must be a mapping of header names to values, got {_describe(raw_headers)}")
        raw_headers = {}
    headers = []
    for name in raw_headers:
        try:
            answer_header(name)
        except InvalidValue as e:
            r.problem(_join(headers_path, name), str(e))
        headers.append((name, r.value(raw_headers, headers_path, name, header_value)))
    status = r.value(f, path, "status", integer(200, 599))
    body = r.value(f, path, "body", body_text, "")
    return FallbackAnswer(status, tuple(headers), body.encode()) if status else None


def answer_header(value: Any) -> str:
    """A header of an answer the ambassador makes: not one the transport or this hop owns."""
    name = header_name(value)
    if name.lower() in HOP_BY_HOP | TRANSPORT_OWNED:
        raise InvalidValue(f"{name} is set by the ambassador itself")
    return name


def body_text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"must be a string (quote it to keep it as written), got {_describe(value)}")
    return value


def _read_upstream(r: _Reader, name: Any, node: Any, path: str, has_state: bool) -> Upstream | None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        r.problem(path, f"upstream names must match {NAME_PATTERN}, got {_got(name)}")
    u = r.section(node, path, SECTIONS["upstream"])
    if u is None:
        return None

    def optional(key: str, read: Callable[..., Any], *extra: Any) -> Any:
        if key not in u:
            return None
        # A bare `cache:` is YAML null: the feature with its defaults.
        section = {} if u[key] is None and key in DEFAULTED_SECTIONS else u[key]
        return read(r, section, _join(path, key), *extra)

    url = r.value(u, path, "url", upstream_url)
    match = optional("match", _read_match)
    upstream = Upstream(
        name=str(name),
        url=url,
        match=match,
        timeout=r.value(u, path, "timeout", positive_duration, Upstream.timeout),
        tls=optional("tls", _read_tls) or TLSPolicy(),
        auth=optional("auth", _read_auth),
        cache=optional("cache", _read_cache, has_state),
        breaker=optional("breaker", _read_breaker),
        retry=optional("retry", _read_retry),
        async_=optional("async", _read_async),
        soap=optional("soap", _read_soap),
        limit=optional("limit", _read_limit),
        hedge=optional("hedge", _read_hedge),
        failover=optional("failover", _read_failover, url) or (),
        fallback=optional("fallback", _read_fallback),
        proxy=r.value(u, path, "proxy", egress_proxy),
    )
    return upstream if url and match else None


def _read_aggregates(r: _Reader, node: Any, upstream_names: set[str]) -> dict[str, Aggregate]:
    if node is None:  # `aggregates:` with every entry commented out
        return {}
    if not isinstance(node, dict):
        r.problem("aggregates", f"must be a mapping of GET paths to parts, got {_describe(node)}")
        return {}
    aggregates = {}
    routes: dict[str, str] = {}
    for template, parts in node.items():
        path = _join("aggregates", template)
        template = str(template)
        if not template.startswith("/") or any(c in template for c in "?#") or any(c.isspace() for c in template):
            r.problem(path, "must be a path starting with '/' (no query, no spaces)")
            continue
        if template == ADMIN_PREFIX or template.startswith(ADMIN_PREFIX + "/"):
            r.problem(path, f"{ADMIN_PREFIX}/ is reserved for the ambassador")
            continue
        if any(not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}|[^{}]*", seg) for seg in template.split("/")):
            r.problem(path, "a {capture} must be a whole path segment, named with letters, digits and '_'")
            continue
        captures = PLACEHOLDER_RE.findall(template)
        if len(set(captures)) != len(captures):
            r.problem(path, "a capture name is used twice")
            continue
        route = PLACEHOLDER_RE.sub("{}", template)
        if route in routes:
            r.problem(path, f"matches the same requests as {routes[route]}")
            continue
        routes[route] = template
        if not isinstance(parts, dict) or not parts:
            r.problem(path, f"must map part names to 'upstream:/path', got {_describe(parts)}")
            continue
        read_parts = {}
        for part_name, spec in parts.items():
            part_path = _join(path, part_name)
            if part_name == AGGREGATE_ERRORS_KEY:
                r.problem(part_path, f"{AGGREGATE_ERRORS_KEY} is reserved: the answer reports failed parts there")
                continue
            try:
                spec = r.substitute(spec)
            except InvalidValue as e:
                r.problem(part_path, str(e))
                continue
            if not isinstance(spec, str) or ":" not in spec:
                r.problem(part_path, f"must be 'upstream:/path', got {_describe(spec)}")
                continue
            upstream, _, part = spec.partition(":")
            if upstream not in upstream_names:
                r.problem(part_path, f"names unknown upstream {upstream!r}")
                continue
            if not part.startswith("/") or any(c.isspace() for c in part):
                r.problem(part_path, f"the path after '{upstream}:' must start with '/' and have no spaces, got {part!r}")
                continue
            if any(c in PART_PLACEHOLDER_RE.sub("", part) for c in "{}"):
                r.problem(part_path, "'{' and '}' may only enclose a {capture} of the aggregate's path or a {query.name} of the client's query")
                continue
            unknown = {n for n in PART_PLACEHOLDER_RE.findall(part) if not n.startswith(QUERY_PLACEHOLDER)} - set(captures)
            if unknown:
                r.problem(part_path, f"uses {{{', '.join(sorted(unknown))}}} which the path does not capture")
                continue
            read_parts[str(part_name)] = AggregatePart(upstream, part)
        aggregates[template] = Aggregate(template, MappingProxyType(read_parts))
    return aggregates


def _check_routes(r: _Reader, upstreams: Mapping[str, Upstream]) -> None:
    for key in ("path_prefix", "host"):
        seen: dict[str, str] = {}
        for upstream in upstreams.values():
            value = getattr(upstream.match, key)
            if value is None:
                continue
            if value in seen:
                r.problem(f"upstreams.{upstream.name}.match.{key}", f"{value!r} is already used by upstream {seen[value]!r}")
            seen[value] = upstream.name


def parse_profile(document: Any, path: Path) -> Profile:
    """Validate a parsed YAML document; raises ProfileError listing every problem."""
    r = _Reader(path.parent)
    if document is None:
        raise ProfileError(str(path), [("upstreams", "is required (the profile is empty)")])
    top = r.section(document, "", SECTIONS["profile"])
    if top is None:
        raise ProfileError(str(path), r.problems)
    state = r.value(top, "", "state", functools.partial(redis_url, folder=r.folder))
    allowed_origins = _read_list(r, top, "allowed_origins", origin)
    allowed_hosts = _read_list(r, top, "allowed_hosts", plain_host_name)
    upstreams: dict[str, Upstream] = {}
    raw_upstreams = top.get("upstreams")
    if "upstreams" in top:
        if not isinstance(raw_upstreams, dict) or not raw_upstreams:
            r.problem("upstreams", f"must map one or more upstream names to their settings, got {_describe(raw_upstreams)}")
            raw_upstreams = {}
        for name, node in raw_upstreams.items():
            upstream = _read_upstream(r, name, node, _join("upstreams", name), "state" in top)
            if upstream:
                upstreams[str(name)] = upstream
    _check_routes(r, upstreams)
    # Parts may name an upstream that has problems of its own: those are reported there.
    aggregates = _read_aggregates(r, top["aggregates"], {str(n) for n in raw_upstreams or ()}) if "aggregates" in top else {}
    if r.problems:
        raise ProfileError(str(path), r.problems)
    return Profile(
        path=path,
        upstreams=MappingProxyType(upstreams),
        aggregates=MappingProxyType(aggregates),
        state=state,
        allowed_origins=allowed_origins,
        allowed_hosts=allowed_hosts,
        files_read=frozenset(r.files_read),
    )


# --- the file --------------------------------------------------------------------------


def _duplicate_keys(node: yaml.Node, path: str, visited: set[int]) -> Iterator[tuple[str, str]]:
    """Keys given twice in one mapping (PyYAML would silently keep the last one)."""
    if id(node) in visited:  # aliases can make the node graph cyclic
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                yield from _duplicate_keys(value_node, path, visited)
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key) in first_line:
                    yield _join(path, key), f"duplicate key (line {line}; first at line {first_line[key_node.tag, key]})"
                else:
                    first_line[key_node.tag, key] = line
            yield from _duplicate_keys(value_node, _join(path, key), visited)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, path, visited)


def read_yaml(source: str, file: str) -> Any:
    """One YAML document, refusing duplicate keys; raises ProfileError."""
    loader = yaml.SafeLoader(source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = list(_duplicate_keys(node, "", set()))
        if duplicates:
            raise ProfileError(file, duplicates)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ProfileError(file, [("", f"not valid YAML: {where}{problem}")]) from None
    finally:
        loader.dispose()


def load_profile(path: str | os.PathLike) -> Profile:
    """Read and validate a profile file; raises ProfileError."""
    file = Path(path).resolve()
    try:
        source = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ProfileError(str(file), [("", f"cannot read the profile: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        raise ProfileError(str(file), [("", f"cannot read the profile: not UTF-8 text ({e.reason} at byte {e.start})")]) from None
    return parse_profile(read_yaml(source, str(file)), file)


def resolve_profile_name(name: str, profiles_dir: Path) -> Path:
    """`prod` -> profiles/prod.yaml; anything that looks like a path stays a path."""
    if name and "/" not in name and not name.endswith((".yaml", ".yml")):
        return profiles_dir / f"{name}.yaml"
    return Path(name)
