"""Operating the ambassador: what it did, for people and for Prometheus.

- `metrics_response` answers `GET /_ambassador/metrics` from `metrics.REGISTRY`.
- `ExchangeObserver` sees every answered flow once: it writes one log line per exchange (at
  info level, so `-q` silences it) and annotates the flow for mitmweb (`flow.comment`, and
  `flow.marked` when something unusual happened). The metrics count requests where every door
  leads, in the upstream services (service.py). `ConnectionLog` keeps mitmproxy's connection
  chatter out of that log unless asked for (-v).

The observer runs in the `request` hook after the Forwarder, not in `response`: the Save addon
(`./run.sh record`) writes flows in its `response` hook, and the recording should carry the
annotations too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from mitmproxy import ctx, http
from prometheus_client.exposition import choose_encoder

from . import metrics
from .profile import ADMIN_PREFIX
from .routing import is_admin_path

log = logging.getLogger("ambassador")

METRICS_PATH = f"{ADMIN_PREFIX}/metrics"
ERROR_MARKER = ":no_entry:"  # the ambassador answered itself (circuit_open, timeout, ...)
DEGRADED_MARKER = ":warning:"  # answered, but not plainly: stale copy, retries, breaker not closed
REPLAY_MARKER = ":repeat:"  # answered from a recording (./run.sh replay)


def metrics_response(flow: http.HTTPFlow) -> http.Response:
    """`GET /_ambassador/metrics`: Prometheus text format (OpenMetrics when the scraper asks)."""
    encode, content_type = choose_encoder(flow.request.headers.get("Accept", ""))
    return http.Response.make(200, encode(metrics.REGISTRY), {"Content-Type": content_type})


@dataclass(slots=True)  # one per flow: slots build faster than a frozen dataclass
class Exchange:
    """One answered request, as the ambassador handled it (from `flow.metadata["ambassador"]`)."""

    method: str
    path: str
    status: int
    seconds: float
    upstream: str | None = None
    cache: str | None = None
    breaker: str | None = None
    attempts: int | None = None
    auth: str | None = None
    shown_headers: Mapping[str, str] = field(default_factory=dict)  # already redacted by the auth stage
    reason: str | None = None  # set when the ambassador answered itself
    replayed: bool = False
    waited: float | None = None  # seconds the request waited for the upstream's limit
    hedged: int = 0  # extra copies sent
    failed_urls: tuple[str, ...] = ()  # URLs that failed, before failover went on
    failover_to: str | None = None  # the failover URL that answered
    fallback: str | None = None  # why the profile's fallback answered

    @classmethod
    def of(cls, flow: http.HTTPFlow, now: float) -> Exchange:
        notes = flow.metadata.get("ambassador", {})
        replayed = bool(notes.get("replayed")) or flow.is_replay == "response"
        upstream = notes.get("upstream")
        if upstream is None and replayed:
            upstream = flow.response.headers.get("X-Ambassador-Upstream")  # recorded with the response
        return cls(
            method=flow.request.method,
            path=flow.request.path,
            status=flow.response.status_code,
            seconds=max(0.0, now - flow.request.timestamp_start),
            upstream=upstream,
            cache=notes.get("cache"),
            breaker=notes.get("breaker"),
            attempts=notes.get("attempts"),
            auth=notes.get("auth"),
            shown_headers=notes.get("shown_headers", {}),
            reason=notes.get("reason"),
            replayed=replayed,
            waited=notes.get("waited"),
            hedged=notes.get("hedged", 0),
            failed_urls=tuple(notes.get("failed_urls", ())),
            failover_to=notes.get("failover_to"),
            fallback=notes.get("fallback"),
        )

    def log_line(self) -> str:
        parts = [self.upstream or "-", self.method, self.path, str(self.status)]
        parts.append(f"cache={self.cache or '-'}")
        parts.append(f"attempts={self.attempts if self.attempts is not None else '-'}")
        if self.reason:
            parts.append(f"reason={self.reason}")
        if self.replayed:
            parts.append("replayed")
        parts.append(f"{self.seconds * 1000:.0f}ms")
        return " ".join(parts)

    def comment(self) -> str:
        """What a person debugging in mitmweb wants to see in the flow list."""
        parts = [f"upstream {self.upstream}" if self.upstream else "no upstream"]
        if self.replayed:
            parts.append("replayed from recording")
        if self.reason:
            parts.append(f"answered by the ambassador: {self.reason}")
        if self.cache:
            parts.append(f"cache {self.cache}")
        if self.breaker:
            parts.append(f"breaker {self.breaker}")
        if self.attempts is not None:
            parts.append(f"attempts {self.attempts}")
        if self.waited:
            parts.append(f"waited {self.waited:.3g}s for the limit")
        if self.hedged:
            parts.append(f"hedged: {self.hedged} extra {'copy' if self.hedged == 1 else 'copies'}")
        if self.failover_to:
            parts.append(f"failover to {self.failover_to}")
        if self.failed_urls:
            parts.append(f"failed: {', '.join(self.failed_urls)}")
        if self.fallback:
            parts.append(f"fallback answer ({self.fallback})")
        if self.auth:
            shown = ", ".join(f"{name}: {value}" for name, value in self.shown_headers.items())
            parts.append(f"auth {self.auth}" + (f" ({shown})" if shown else ""))
        return " · ".join(parts)

    def marker(self) -> str:
        if self.reason:
            return ERROR_MARKER
        if self.replayed:
            return REPLAY_MARKER
        if self.cache == "STALE" or (self.breaker not in (None, "closed")) or (self.attempts or 1) > 1 or self.fallback:
            return DEGRADED_MARKER
        return ""


class ExchangeObserver:
    """Logs and annotates every answered flow except the admin endpoints' own."""

    def __init__(self) -> None:
        self.log_exchanges = True

    def configure(self, updated) -> None:
        if "termlog_verbosity" in updated:
            # Under -q the line would be built and then dropped: don't build it.
            self.log_exchanges = ctx.options.termlog_verbosity in ("info", "debug")

    def request(self, flow: http.HTTPFlow) -> None:
        if not flow.live or not flow.response or is_admin_path(flow.request.path):
            return  # not live: a flow loaded from a file (`--rfile`) is no exchange of ours
        exchange = Exchange.of(flow, time.time())
        if self.log_exchanges:
            log.info(exchange.log_line())
        flow.comment = exchange.comment()
        flow.marked = exchange.marker()


class ConnectionLog:
    """mitmproxy's "client connect" / "client disconnect" lines only at debug verbosity (-v):
    at the default one the log is one line per exchange, not three."""

    CHATTER = frozenset({"client connect", "client disconnect"})
    LOGGER = logging.getLogger("mitmproxy.proxy.server")

    def __init__(self) -> None:
        self.verbose = False

    def load(self, loader) -> None:
        self.LOGGER.addFilter(self.keep)

    def done(self) -> None:
        self.LOGGER.removeFilter(self.keep)

    def keep(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.msg not in self.CHATTER

    def configure(self, updated) -> None:
        if "termlog_verbosity" in updated:
            self.verbose = ctx.options.termlog_verbosity == "debug"
