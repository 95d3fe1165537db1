"""The profile's `state`: the Redis that ambassador instances share, one server or a Redis Cluster.

- `redis://host:port/db`, `rediss://...` (TLS; the server's certificate is checked against the
  system's CAs or `?ssl_ca_certs=PATH`), `unix:///path.sock`, or `redis+cluster://host:port`:
  any node of a Redis Cluster, the others are discovered.
- Every key of one upstream carries the hash tag `{upstream name}`, so a cluster keeps them in
  one slot and each Lua script (breaker decisions, the cache's byte account) runs on one node.
- A password in the URL is a secret: messages show the URL with `***` in its place.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

CLUSTER_SCHEME = "redis+cluster"
SCHEMES = ("redis", "rediss", "unix", CLUSTER_SCHEME)
# Query options a `state` URL may carry (redis-py's own names); files are relative to the profile.
FILE_OPTIONS = frozenset({"ssl_ca_certs", "ssl_certfile", "ssl_keyfile"})
OPTIONS = FILE_OPTIONS | {"db", "ssl_cert_reqs", "ssl_check_hostname"}

Client = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
# What a Redis that cannot be asked raises; a cluster's client also raises its own exception,
# not a RedisError, when no node answers.
ERRORS = (RedisError, RedisClusterException, OSError)


def upstream_keys(upstream_name: str) -> str:
    """What every key of one upstream starts with; its hash tag keeps them in one cluster slot
    (upstream names never contain braces)."""
    return f"ambassador:{{{upstream_name}}}:"


def redacted(url: str) -> str:
    """The URL as it may be shown: the password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def state_url(url: str, folder: Path) -> str:
    """A profile's `state`, checked, with relative certificate files made absolute.
    Raises ValueError with a message that never shows the password."""
    parts = urlsplit(url)
    shown = redacted(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"has an invalid port: {shown!r}") from None
    if parts.scheme not in SCHEMES or not (parts.hostname or (parts.scheme == "unix" and parts.path)):
        raise ValueError(
            f"must be a redis://host:port/db URL, rediss://host:port/db (TLS), unix:///path.sock "
            f"or redis+cluster://host:port, got {shown!r}"
        )
    if parts.scheme == CLUSTER_SCHEME and (parts.path.strip("/") not in ("", "0") or port is None):
        raise ValueError(f"a Redis Cluster needs host:port and has only database 0, got {shown!r}")
    options = parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({name for name, _ in options} - OPTIONS)
    if unknown:
        raise ValueError(f"unknown option {', '.join(unknown)} (known: {', '.join(sorted(OPTIONS))})")
    if not any(name in FILE_OPTIONS for name, _ in options):
        return url
    resolved = []
    for name, value in options:
        if name in FILE_OPTIONS:
            path = folder / Path(value).expanduser()
            if not path.is_file():
                raise ValueError(f"{name}: no such file {str(path)!r}")
            value = str(path)
        resolved.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(resolved)))


def connect(url: str, timeout: float, retries: bool = True) -> Client:
    """A client for a checked `state` URL. Without `retries`, a Redis that is down costs a
    caller one `timeout`, not several."""
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if not retries:
        options["retry"] = Retry(NoBackoff(), 0)
    parts = urlsplit(url)
    if parts.scheme == CLUSTER_SCHEME:
        return redis.asyncio.cluster.RedisCluster.from_url(urlunsplit(parts._replace(scheme="redis")), **options)
    return redis.asyncio.Redis.from_url(url, **options)
