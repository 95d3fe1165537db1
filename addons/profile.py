"""The profile: YAML parsed and validated once into immutable, typed policy objects.

Every problem is reported with the file, the key path and what is wrong, and all problems
of a file are collected before giving up, so that one `check` run shows everything to fix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import yaml

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\Z")
SIZE_RE = re.compile(r"(\d+)\s*(B|KB|MB|GB)?\Z", re.IGNORECASE)
SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
SUBSTITUTION_RE = re.compile(r"\$\{([^}]*)\}")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"})
ADMIN_PREFIX = "/_ambassador"


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

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        hostpart = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{hostpart}" + ("" if self.port == default else f":{self.port}")

    def __str__(self) -> str:
        return self.origin + self.base_path


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


@dataclass(frozen=True)
class AsyncPolicy:
    keep: float = 3600.0


@dataclass(frozen=True)
class SoapPolicy:
    namespace: str
    version: str = "1.1"


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


# --- reading ---------------------------------------------------------------------------

_MISSING = object()


class InvalidValue(ValueError):
    """Raised by a converter; the reader records it with the key path."""


class _Reader:
    """Walks the YAML tree, converting values and collecting problems with their key paths."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def section(self, node: Any, path: str, allowed: set[str], required: set[str] = frozenset()) -> dict | None:
        if not isinstance(node, dict):
            self.problem(path, f"must be a mapping, got {_describe(node)}")
            return None
        for key in node:
            if key not in allowed:
                hint = _closest(str(key), allowed)
                self.problem(_join(path, key), "unknown key" + (f" (did you mean '{hint}'?)" if hint else ""))
        for key in sorted(required - node.keys()):
            self.problem(_join(path, key), "is required")
        return node

    def value(self, node: dict, path: str, key: str, convert: Callable[[Any], Any], default: Any = None) -> Any:
        raw = node.get(key, _MISSING)
        if raw is _MISSING:
            return default
        try:
            return convert(self.substitute(raw, _join(path, key)))
        except InvalidValue as e:
            self.problem(_join(path, key), str(e))
            return default

    def substitute(self, raw: Any, path: str) -> Any:
        if not isinstance(raw, str) or "${" not in raw:
            return raw

        def replace(m: re.Match) -> str:
            expr = m.group(1)
            if expr.startswith("file:"):
                file = self.path(expr[len("file:"):])
                try:
                    return file.read_text().rstrip("\n")
                except OSError as e:
                    raise InvalidValue(f"cannot read {file}: {e.strerror}") from None
            name, sep, default = expr.partition(":-")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise InvalidValue(f"bad substitution '${{{expr}}}'")
            if name in os.environ:
                return os.environ[name]
            if sep:
                return default
            raise InvalidValue(f"environment variable {name} is not set")

        return SUBSTITUTION_RE.sub(replace, raw)

    def path(self, raw: str) -> Path:
        return (self.folder / os.path.expanduser(raw)).resolve()


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def _closest(key: str, allowed: set[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return found[0] if found else None


# --- converters (raise InvalidValue with the problem) -----------------------------------------


def duration(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidValue(f"must be a duration like 250ms, 5s, 2m, 1h, got {_describe(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = DURATION_RE.match(str(value).strip())
        if not m:
            raise InvalidValue(f"must be a duration like 250ms, 5s, 2m, 1h, got {value!r}")
        seconds = float(m.group(1)) * DURATION_UNITS[m.group(2) or "s"]
    if seconds < 0:
        raise InvalidValue(f"must not be negative, got {value!r}")
    return seconds


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise InvalidValue(f"must be greater than zero, got {value!r}")
    return seconds


def size(value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidValue(f"must be a size like 512KB, 64MB or a number of bytes, got {_describe(value)}")
    if isinstance(value, int):
        n = value
    else:
        m = SIZE_RE.match(str(value).strip())
        if not m:
            raise InvalidValue(f"must be a size like 512KB, 64MB or a number of bytes, got {value!r}")
        n = int(m.group(1)) * SIZE_UNITS[(m.group(2) or "b").lower()]
    if n <= 0:
        raise InvalidValue(f"must be greater than zero, got {value!r}")
    return n


def integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"must be an integer, got {_describe(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise InvalidValue(f"must be an integer {bound}, got {value}")
        return value

    return convert


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidValue(f"must be true or false, got {_describe(value)}")


def text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidValue(f"must be a string, got {_describe(value)}")
    if str(value) == "":
        raise InvalidValue("must not be empty")
    return str(value)


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if str(value) not in options:
            raise InvalidValue(f"must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    return convert


def status_list(value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise InvalidValue(f"must be a non-empty list of HTTP status codes, got {_describe(value)}")
    statuses = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
            raise InvalidValue(f"must list HTTP status codes (100-599), got {item!r}")
        statuses.add(item)
    return frozenset(statuses)


def method_list(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise InvalidValue(f"must be a non-empty list of HTTP methods, got {_describe(value)}")
    methods = set()
    for item in value:
        if not isinstance(item, str) or item.upper() not in HTTP_METHODS:
            raise InvalidValue(f"must list HTTP methods ({', '.join(sorted(HTTP_METHODS))}), got {item!r}")
        methods.add(item.upper())
    return frozenset(methods)


def upstream_url(value: Any) -> UpstreamURL:
    raw = text(value)
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as e:
        raise InvalidValue(f"is not a valid URL ({e}): {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(f"must be an http:// or https:// URL with a host, got {raw!r}")
    if parts.query or parts.fragment:
        raise InvalidValue(f"must not have a query or fragment, got {raw!r}")
    if parts.username or parts.password:
        raise InvalidValue("must not carry credentials; use the auth section")
    return UpstreamURL(
        scheme=parts.scheme,
        host=parts.hostname.lower(),
        port=port or (443 if parts.scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
    )


def path_prefix(value: Any) -> str:
    prefix = text(value)
    if not prefix.startswith("/"):
        raise InvalidValue(f"must start with '/', got {prefix!r}")
    if any(c in prefix for c in "?#%") or any(seg in (".", "..") for seg in prefix.split("/")):
        raise InvalidValue(f"must be a plain path without '?', '#', '%' or dot segments, got {prefix!r}")
    prefix = prefix.rstrip("/") or "/"
    if prefix == ADMIN_PREFIX or prefix.startswith(ADMIN_PREFIX + "/"):
        raise InvalidValue(f"{ADMIN_PREFIX}/ is reserved for the ambassador")
    return prefix


def host_name(value: Any) -> str:
    host = text(value).lower()
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", name) or (port and not port.isdigit()):
        raise InvalidValue(f"must be a host name, optionally with :port, got {value!r}")
    return host


def redis_url(value: Any) -> str:
    raw = text(value)
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise InvalidValue(f"must be a redis://host:port/db URL, got {raw!r}")
    return raw


# --- sections ------------------------------------------------------------------------------

UPSTREAM_KEYS = {"url", "match", "timeout", "tls", "auth", "cache", "breaker", "retry", "async", "soap"}
AUTH_KEYS = {
    "bearer": ({"token"}, {"token"}),
    "header": ({"name", "value"}, {"name", "value"}),
    "query": ({"name", "value"}, {"name", "value"}),
    "basic": ({"username", "password"}, {"username", "password"}),
    "oauth2_client_credentials": (
        {"token_url", "client_id", "client_secret", "scope", "auth_style"},
        {"token_url", "client_id", "client_secret"},
    ),
}


def _read_match(r: _Reader, node: Any, path: str) -> Match | None:
    m = r.section(node, path, {"path_prefix", "host"})
    if m is None:
        return None
    if not m.keys() & {"path_prefix", "host"}:
        r.problem(path, "needs at least one of path_prefix, host")
    return Match(
        path_prefix=r.value(m, path, "path_prefix", path_prefix),
        host=r.value(m, path, "host", host_name),
    )


def _read_tls(r: _Reader, node: Any, path: str) -> TLSPolicy:
    t = r.section(node, path, {"verify", "ca", "client_cert", "client_key"})
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
    if tls.client_key and "client_cert" not in t:
        r.problem(_join(path, "client_key"), "needs client_cert")
    return tls


def _read_auth(r: _Reader, node: Any, path: str) -> AuthPolicy | None:
    if not isinstance(node, dict):
        r.problem(path, f"must be a mapping, got {_describe(node)}")
        return None
    kind = node.get("type")
    if kind not in AUTH_KEYS:
        r.problem(_join(path, "type"), f"must be one of {', '.join(AUTH_KEYS)}, got {kind!r}" if kind is not None else "is required")
        return None
    allowed, required = AUTH_KEYS[kind]
    a = r.section(node, path, allowed | {"type"}, required)
    values = {key: r.value(a, path, key, text) for key in allowed if key != "auth_style"}
    if any(values[key] is None for key in required):
        return None
    match kind:
        case "bearer":
            return BearerAuth(values["token"])
        case "header":
            return HeaderAuth(values["name"], values["value"])
        case "query":
            return QueryAuth(values["name"], values["value"])
        case "basic":
            return BasicAuth(values["username"], values["password"])
    token_url = values["token_url"]
    try:
        upstream_url(token_url)
    except InvalidValue as e:
        r.problem(_join(path, "token_url"), str(e))
    return OAuth2ClientCredentials(
        token_url=token_url,
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        scope=values["scope"],
        auth_style=r.value(a, path, "auth_style", choice("basic", "body"), "basic"),
    )


def _read_cache(r: _Reader, node: Any, path: str, state: str | None) -> CachePolicy | None:
    c = r.section(node, path, {"ttl", "stale_if_error", "max_bytes", "store"})
    if c is None:
        return None
    store = r.value(c, path, "store", text, "memory")
    sqlite_path = None
    if store.startswith("sqlite:") and len(store) > len("sqlite:"):
        sqlite_path = r.path(store[len("sqlite:"):])
        store = "sqlite"
    elif store == "redis" and not state:
        r.problem(_join(path, "store"), "redis needs the profile's top-level `state: redis://...`")
    elif store not in ("memory", "redis"):
        r.problem(_join(path, "store"), f"must be memory, sqlite:PATH or redis, got {store!r}")
        store = "memory"
    return CachePolicy(
        ttl=r.value(c, path, "ttl", duration, 0.0),
        stale_if_error=r.value(c, path, "stale_if_error", duration, 0.0),
        max_bytes=r.value(c, path, "max_bytes", size, CachePolicy.max_bytes),
        store=store,
        sqlite_path=sqlite_path,
    )


def _read_breaker(r: _Reader, node: Any, path: str) -> BreakerPolicy | None:
    b = r.section(node, path, {"fail_max", "reset_timeout", "failure_statuses", "half_open_max"})
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
    t = r.section(node, path, {"attempts", "backoff", "statuses", "methods"})
    if t is None:
        return None
    d = RetryPolicy()
    return RetryPolicy(
        attempts=r.value(t, path, "attempts", integer(1, 20), d.attempts),
        backoff=r.value(t, path, "backoff", duration, d.backoff),
        statuses=r.value(t, path, "statuses", status_list, d.statuses),
        methods=r.value(t, path, "methods", method_list, d.methods),
    )


def _read_async(r: _Reader, node: Any, path: str) -> AsyncPolicy | None:
    if node is None:  # `async: {}` and a bare `async:` both switch it on with defaults
        return AsyncPolicy()
    a = r.section(node, path, {"keep"})
    if a is None:
        return None
    return AsyncPolicy(keep=r.value(a, path, "keep", positive_duration, AsyncPolicy.keep))


def _read_soap(r: _Reader, node: Any, path: str) -> SoapPolicy | None:
    s = r.section(node, path, {"namespace", "version"}, {"namespace"})
    if s is None or "namespace" not in s:
        return None
    return SoapPolicy(
        namespace=r.value(s, path, "namespace", text),
        version=r.value(s, path, "version", choice("1.1", "1.2"), "1.1"),
    )


def _read_upstream(r: _Reader, name: str, node: Any, path: str, state: str | None) -> Upstream | None:
    if not NAME_RE.match(str(name)):
        r.problem(path, "upstream names must match [a-z0-9][a-z0-9_-]*")
    u = r.section(node, path, UPSTREAM_KEYS, {"url", "match"})
    if u is None:
        return None

    def optional(key: str, read: Callable[..., Any], *extra: Any) -> Any:
        return read(r, u[key], _join(path, key), *extra) if key in u else None

    url = r.value(u, path, "url", upstream_url)
    match = optional("match", _read_match)
    upstream = Upstream(
        name=str(name),
        url=url,
        match=match,
        timeout=r.value(u, path, "timeout", positive_duration, Upstream.timeout),
        tls=optional("tls", _read_tls) or TLSPolicy(),
        auth=optional("auth", _read_auth),
        cache=optional("cache", _read_cache, state),
        breaker=optional("breaker", _read_breaker),
        retry=optional("retry", _read_retry),
        async_=optional("async", _read_async),
        soap=optional("soap", _read_soap),
    )
    return upstream if url and match else None


def _read_aggregates(r: _Reader, node: Any, upstreams: Mapping[str, Upstream]) -> dict[str, Aggregate]:
    if not isinstance(node, dict):
        r.problem("aggregates", f"must be a mapping of GET paths to parts, got {_describe(node)}")
        return {}
    aggregates = {}
    for template, parts in node.items():
        path = _join("aggregates", template)
        template = str(template)
        if not template.startswith("/") or "?" in template:
            r.problem(path, "must be a path starting with '/' (no query)")
            continue
        if template.startswith(ADMIN_PREFIX + "/"):
            r.problem(path, f"{ADMIN_PREFIX}/ is reserved for the ambassador")
            continue
        captures = PLACEHOLDER_RE.findall(template)
        if any(not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}|[^{}]*", seg) for seg in template.split("/")):
            r.problem(path, "a {capture} must be a whole path segment")
            continue
        if len(set(captures)) != len(captures):
            r.problem(path, "a capture name is used twice")
            continue
        if not isinstance(parts, dict) or not parts:
            r.problem(path, f"must map part names to 'upstream:/path', got {_describe(parts)}")
            continue
        read_parts = {}
        for part_name, spec in parts.items():
            part_path = _join(path, part_name)
            if not isinstance(spec, str) or ":" not in spec:
                r.problem(part_path, f"must be 'upstream:/path', got {_describe(spec)}")
                continue
            upstream, _, part = spec.partition(":")
            if upstream not in upstreams:
                r.problem(part_path, f"names unknown upstream {upstream!r}")
                continue
            if not part.startswith("/"):
                r.problem(part_path, f"the path after '{upstream}:' must start with '/', got {part!r}")
                continue
            unknown = set(PLACEHOLDER_RE.findall(part)) - set(captures)
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
    top = r.section(document, "", {"upstreams", "aggregates", "state"}, {"upstreams"})
    if top is None:
        raise ProfileError(str(path), r.problems)
    state = r.value(top, "", "state", redis_url)
    upstreams: dict[str, Upstream] = {}
    raw_upstreams = top.get("upstreams")
    if "upstreams" in top:
        if not isinstance(raw_upstreams, dict) or not raw_upstreams:
            r.problem("upstreams", f"must map one or more upstream names to their settings, got {_describe(raw_upstreams)}")
        else:
            for name, node in raw_upstreams.items():
                upstream = _read_upstream(r, name, node, _join("upstreams", name), state)
                if upstream:
                    upstreams[str(name)] = upstream
    _check_routes(r, upstreams)
    aggregates = _read_aggregates(r, top["aggregates"], upstreams) if "aggregates" in top else {}
    if r.problems:
        raise ProfileError(str(path), r.problems)
    return Profile(
        path=path,
        upstreams=MappingProxyType(upstreams),
        aggregates=MappingProxyType(aggregates),
        state=state,
    )


def load_profile(path: str | os.PathLike) -> Profile:
    """Read and validate a profile file; raises ProfileError."""
    file = Path(path)
    try:
        text_ = file.read_text()
    except OSError as e:
        raise ProfileError(str(file), [("", f"cannot read the profile: {e.strerror}")]) from None
    try:
        document = yaml.safe_load(text_)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ProfileError(str(file), [("", f"not valid YAML: {where}{problem}")]) from None
    return parse_profile(document, file.resolve())


def resolve_profile_name(name: str, profiles_dir: Path) -> Path:
    """`prod` -> profiles/prod.yaml; anything that looks like a path stays a path."""
    if name and "/" not in name and not name.endswith((".yaml", ".yml")):
        return profiles_dir / f"{name}.yaml"
    return Path(name)
