"""Reading an upstream's sections, one function each."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Callable


from .model import (
    AUTH_TYPES, AsyncPolicy, AuthPolicy, BasicAuth, BearerAuth, BreakerPolicy, CachePolicy,
    DEFAULTED_SECTIONS, FallbackAnswer, HeaderAuth, HedgePolicy, LimitPolicy, Match, NAME_PATTERN,
    NAME_RE, OAuth2ClientCredentials, QueryAuth, RetryPolicy, SECTIONS, SoapPolicy, TLSPolicy,
    Upstream, UpstreamURL,
)
from .reading import MISSING, Reader, join
from .values import (
    InvalidValue, QUOTA_UNITS, RATE_UNITS, answer_header, basic_username, body_text, boolean,
    choice, credential_header, describe, duration, egress_proxy, got, header_value, host_name,
    integer, method_list, path_prefix, per_window, percentage, positive_duration, size,
    soap_action_template, status_list, text, upstream_url, url_text,
)


def read_list(r: Reader, node: dict, key: str, convert: Callable[[Any], Any]) -> frozenset:
    """A list of values, each problem reported at its index (`allowed_origins[1]`)."""
    items = node.get(key)
    if key not in node or items is None:
        return frozenset()
    if not isinstance(items, list):
        r.problem(key, f"must be a list, got {describe(items)}")
        return frozenset()
    converted = set()
    for i, item in enumerate(items):
        try:
            converted.add(convert(r.substitute(item)))
        except InvalidValue as e:
            r.problem(f"{key}[{i}]", str(e))
    return frozenset(converted)


def read_match(r: Reader, node: Any, path: str) -> Match | None:
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


def read_tls(r: Reader, node: Any, path: str) -> TLSPolicy:
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
        r.problem(join(path, "client_key"), "needs client_cert")
        return tls
    try:
        tls.context()  # PEM files that exist but do not load: found by `check`, not at start-up
    except (ssl.SSLError, OSError) as e:
        r.problem(path, f"cannot use the certificates: {e}")
    return tls


def read_auth(r: Reader, node: Any, path: str) -> AuthPolicy | None:
    if not isinstance(node, dict):
        r.problem(path, f"must be a mapping, got {describe(node)}")
        return None
    kind = node.get("type", MISSING)
    if kind is MISSING:
        r.problem(join(path, "type"), f"is required: one of {', '.join(AUTH_TYPES)}")
        return None
    if not isinstance(kind, str) or kind not in AUTH_TYPES:
        r.problem(join(path, "type"), f"must be one of {', '.join(AUTH_TYPES)}, got {got(kind)}")
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


def read_cache(r: Reader, node: Any, path: str, has_state: bool) -> CachePolicy | None:
    c = r.section(node, path, SECTIONS["cache"])
    if c is None:
        return None
    store = r.value(c, path, "store", text, "memory")
    sqlite_path = None
    if store.startswith("sqlite:") and len(store) > len("sqlite:"):
        sqlite_path = r.path(store.removeprefix("sqlite:"))
        store = "sqlite"
    elif store == "redis" and not has_state:
        r.problem(join(path, "store"), "redis needs the profile's top-level `state: redis://...`")
    elif store not in ("memory", "redis"):
        r.problem(join(path, "store"), f"must be memory, sqlite:PATH or redis, got {store!r}")
        store = "memory"
    return CachePolicy(
        ttl=r.value(c, path, "ttl", duration, CachePolicy.ttl),
        stale_if_error=r.value(c, path, "stale_if_error", duration, CachePolicy.stale_if_error),
        max_bytes=r.value(c, path, "max_bytes", size, CachePolicy.max_bytes),
        store=store,
        sqlite_path=sqlite_path,
    )


def read_breaker(r: Reader, node: Any, path: str) -> BreakerPolicy | None:
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


def read_retry(r: Reader, node: Any, path: str) -> RetryPolicy | None:
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


def read_limit(r: Reader, node: Any, path: str) -> LimitPolicy | None:
    m = r.section(node, path, SECTIONS["limit"])
    if m is None:
        return None
    d = LimitPolicy()
    rate = r.value(m, path, "rate", per_window(RATE_UNITS))
    quota = r.value(m, path, "quota", per_window(QUOTA_UNITS))
    if "burst" in m and "rate" not in m:
        r.problem(join(path, "burst"), "needs rate: it is the bucket of the rate")
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


def read_async(r: Reader, node: Any, path: str) -> AsyncPolicy | None:
    a = r.section(node, path, SECTIONS["async"])
    if a is None:
        return None
    return AsyncPolicy(keep=r.value(a, path, "keep", positive_duration, AsyncPolicy.keep))


def read_soap(r: Reader, node: Any, path: str) -> SoapPolicy | None:
    s = r.section(node, path, SECTIONS["soap"])
    if s is None:
        return None
    namespace = r.value(s, path, "namespace", text)
    version = r.value(s, path, "version", choice("1.1", "1.2"), SoapPolicy.version)
    action = r.value(s, path, "action", soap_action_template, SoapPolicy.action)
    wsdl = r.value(s, path, "wsdl", lambda v: wsdl_location(r, v))
    schema = None
    if wsdl and version and not r.fetch and "://" in wsdl:
        r.to_fetch.append(wsdl)
    elif wsdl and version:
        from ..wsdl import WsdlError, load_wsdl  # zeep loads only for profiles that name a WSDL

        try:
            schema = load_wsdl(wsdl, version)
        except WsdlError as e:
            r.problem(join(path, "wsdl"), str(e))
    return SoapPolicy(namespace, version, action, wsdl, schema) if namespace else None


def wsdl_location(r: Reader, value: Any) -> str:
    """An http(s) URL as written, or a file (relative to the profile's folder) resolved."""
    raw = text(value)
    if raw.lower().startswith(("http://", "https://")):
        return raw
    if "://" in raw:
        raise InvalidValue(f"must be a file or an http(s) URL, got {raw!r}")
    return str(r.path(raw))


def read_hedge(r: Reader, node: Any, path: str) -> HedgePolicy | None:
    h = r.section(node, path, SECTIONS["hedge"])
    if h is None:
        return None
    return HedgePolicy(
        after=r.value(h, path, "after", positive_duration, HedgePolicy.after),
        max=r.value(h, path, "max", integer(1, 5), HedgePolicy.max),
    )


def read_failover(r: Reader, node: Any, path: str, url: UpstreamURL | None) -> tuple[UpstreamURL, ...]:
    """The failover URLs in order, each different from `url` and from the others."""
    if not isinstance(node, list) or not node:
        r.problem(path, f"must be a non-empty list of http(s) URLs, got {describe(node)}")
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


def read_fallback(r: Reader, node: Any, path: str) -> FallbackAnswer | None:
    f = r.section(node, path, SECTIONS["fallback"])
    if f is None:
        return None
    headers_path, raw_headers = join(path, "headers"), f.get("headers") or {}
    if not isinstance(raw_headers, dict):
        r.problem(headers_path, f"must be a mapping of header names to values, got {describe(raw_headers)}")
        raw_headers = {}
    headers = []
    for name in raw_headers:
        try:
            answer_header(name)
        except InvalidValue as e:
            r.problem(join(headers_path, name), str(e))
        headers.append((name, r.value(raw_headers, headers_path, name, header_value)))
    status = r.value(f, path, "status", integer(200, 599))
    body = r.value(f, path, "body", body_text, "")
    return FallbackAnswer(status, tuple(headers), body.encode()) if status else None


def read_upstream(r: Reader, name: Any, node: Any, path: str, has_state: bool) -> Upstream | None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        r.problem(path, f"upstream names must match {NAME_PATTERN}, got {got(name)}")
    u = r.section(node, path, SECTIONS["upstream"])
    if u is None:
        return None

    def optional(key: str, read: Callable[..., Any], *extra: Any) -> Any:
        if key not in u:
            return None
        # A bare `cache:` is YAML null: the feature with its defaults.
        section = {} if u[key] is None and key in DEFAULTED_SECTIONS else u[key]
        return read(r, section, join(path, key), *extra)

    url = r.value(u, path, "url", upstream_url)
    match = optional("match", read_match)
    upstream = Upstream(
        name=str(name),
        url=url,
        match=match,
        timeout=r.value(u, path, "timeout", positive_duration, Upstream.timeout),
        tls=optional("tls", read_tls) or TLSPolicy(),
        auth=optional("auth", read_auth),
        cache=optional("cache", read_cache, has_state),
        breaker=optional("breaker", read_breaker),
        retry=optional("retry", read_retry),
        async_=optional("async", read_async),
        soap=optional("soap", read_soap),
        limit=optional("limit", read_limit),
        hedge=optional("hedge", read_hedge),
        failover=optional("failover", read_failover, url) or (),
        fallback=optional("fallback", read_fallback),
        proxy=r.value(u, path, "proxy", egress_proxy),
    )
    return upstream if url and match else None
