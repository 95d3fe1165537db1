"""The profile's policy objects: immutable and typed, made once by the loader; the keys each
section allows and the value patterns, which `profiles/schema.json` describes the same way
(tests/unit/test_schema.py keeps the two in agreement)."""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit




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
PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"  # where profile names are looked up
AGGREGATE_ERRORS_KEY = "_errors"  # where an aggregate's answer reports failed parts


@dataclass(frozen=True)
class Keys:
    """The keys a profile section allows and the ones it requires."""

    allowed: frozenset[str]
    required: frozenset[str] = frozenset()


def keys_of(allowed: str, required: str = "") -> Keys:
    return Keys(frozenset(allowed.split()), frozenset(required.split()))


# Section name (as in profiles/schema.json's $defs) -> its keys.
SECTIONS: Mapping[str, Keys] = MappingProxyType({
    "profile": keys_of("upstreams aggregates state allowed_origins allowed_hosts", "upstreams"),
    "upstream": keys_of("url match timeout tls auth cache breaker retry async soap limit hedge failover fallback proxy", "url match"),
    "match": keys_of("path_prefix host"),
    "tls": keys_of("verify ca client_cert client_key"),
    "auth_bearer": keys_of("type token", "type token"),
    "auth_header": keys_of("type name value", "type name value"),
    "auth_query": keys_of("type name value", "type name value"),
    "auth_basic": keys_of("type username password", "type username password"),
    "auth_oauth2_client_credentials": keys_of(
        "type token_url client_id client_secret scope auth_style", "type token_url client_id client_secret"
    ),
    "cache": keys_of("ttl stale_if_error max_bytes store"),
    "breaker": keys_of("fail_max reset_timeout failure_statuses half_open_max"),
    "retry": keys_of("attempts backoff statuses methods try_timeout budget"),
    "limit": keys_of("rate burst quota concurrency queue max_wait follow_upstream"),
    "async": keys_of("keep"),
    "soap": keys_of("namespace version wsdl action", "namespace"),
    "hedge": keys_of("after max"),
    "fallback": keys_of("status headers body", "status"),
})
AUTH_TYPES = tuple(name.removeprefix("auth_") for name in SECTIONS if name.startswith("auth_"))
# Sections whose keys all have defaults: a bare `cache:` (YAML null) switches the feature on.
DEFAULTED_SECTIONS = frozenset({"tls", "cache", "breaker", "retry", "async", "limit", "hedge"})


class NeedsNetwork(Exception):
    """The profile is valid as far as it was read without the network, but it names documents
    to fetch (a WSDL by URL): load it again where waiting on the network blocks nothing."""

    def __init__(self, file: str, urls: list[str]):
        self.file = file
        self.urls = urls
        super().__init__(f"{file} names {', '.join(urls)}, to fetch before it can be used")


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
