"""Prometheus metrics, one registry for the process; labels are bounded (upstream names and
reason codes, not paths).

Stages and addons increment these directly; each upstream service counts what it handles
through its `UpstreamMeter`, whichever door the request came in by (a client's request, an
aggregate part, a batch item, an async job); `/_ambassador/metrics` renders `REGISTRY`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import tomllib
from pathlib import Path

import mitmproxy.version
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

# `*_created` series (a timestamp per label set) double the output and tell a scraper nothing
# that the process start time does not.
disable_created_metrics()

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "ambassador_requests",
    "Requests handled per upstream (client requests, aggregate parts, batch items, async jobs), by status class (2xx..5xx).",
    ["upstream", "status_class"], registry=REGISTRY,
)
LATENCY = Histogram(
    "ambassador_request_duration_seconds", "Time from request to answer per upstream.",
    ["upstream"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CACHE_RESULTS = Counter(
    "ambassador_cache_results", "Cache outcomes per upstream (hit, miss, stale, bypass).",
    ["upstream", "result"], registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "ambassador_breaker_state", "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
    ["upstream"], registry=REGISTRY,
)
BREAKER_TRANSITIONS = Counter(
    "ambassador_breaker_transitions", "Circuit breaker state changes per upstream, by new state.",
    ["upstream", "state"], registry=REGISTRY,
)
URL_BREAKER_STATE = Gauge(
    "ambassador_failover_breaker_state",
    "Circuit breaker state of each failover URL per upstream: 0 closed, 1 half-open, 2 open.",
    ["upstream", "url"], registry=REGISTRY,
)
URL_BREAKER_TRANSITIONS = Counter(
    "ambassador_failover_breaker_transitions", "Breaker state changes of each failover URL, by new state.",
    ["upstream", "url", "state"], registry=REGISTRY,
)
HEDGES = Counter(
    "ambassador_hedges", "Extra copies of slow requests per upstream, by outcome (sent, won).",
    ["upstream", "outcome"], registry=REGISTRY,
)
FAILOVERS = Counter(
    "ambassador_failovers", "Tries that went on to a failover URL per upstream.", ["upstream"], registry=REGISTRY,
)
FALLBACKS = Counter(
    "ambassador_fallbacks", "Answers given from the profile's fallback per upstream.", ["upstream"], registry=REGISTRY,
)
RETRIES = Counter(
    "ambassador_retries", "Retried upstream attempts per upstream.", ["upstream"], registry=REGISTRY,
)
TOKEN_FETCHES = Counter(
    "ambassador_token_fetches", "OAuth2 token fetches per upstream, by outcome (ok, failed).",
    ["upstream", "outcome"], registry=REGISTRY,
)
ASYNC_JOBS = Counter(
    "ambassador_async_jobs", "Async jobs per upstream, by event (accepted, done, failed, expired).",
    ["upstream", "event"], registry=REGISTRY,
)
LIMIT_WAITING = Gauge(
    "ambassador_limit_waiting", "Requests waiting for the upstream's limit (rate, quota, concurrency, pause).",
    ["upstream"], registry=REGISTRY,
)
LIMIT_WAIT = Histogram(
    "ambassador_limit_wait_seconds", "Time requests waited for the upstream's limit before being sent.",
    ["upstream"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LIMIT_REFUSED = Counter(
    "ambassador_limit_refused", "Requests refused as rate_limited because waiting could not help.",
    ["upstream"], registry=REGISTRY,
)
LIMIT_PAUSED_UNTIL = Gauge(
    "ambassador_limit_paused_until_seconds",
    "Unix time until which the upstream asked for no requests (follow_upstream); 0 when not paused.",
    ["upstream"], registry=REGISTRY,
)
REFUSALS = Counter(
    "ambassador_refusals",
    "The ambassador's own answers, by reason; upstream is empty for requests no upstream was chosen for.",
    ["upstream", "reason"], registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "ambassador_requests_in_flight", "Requests being handled per upstream.", ["upstream"], registry=REGISTRY,
)
PROFILE_RELOADS = Counter(
    "ambassador_profile_reloads", "Profile reloads after the first load, by outcome (loaded, refused).",
    ["outcome"], registry=REGISTRY,
)
for _outcome in ("loaded", "refused"):
    PROFILE_RELOADS.labels(_outcome)  # both series from the start: a rate over a missing one is empty
BUILD = Info("ambassador_build", "The versions running.", registry=REGISTRY)

# Every family labelled by upstream: an upstream that a reload removes leaves them all.
PER_UPSTREAM = (
    REQUESTS, LATENCY, CACHE_RESULTS, BREAKER_STATE, BREAKER_TRANSITIONS, RETRIES, TOKEN_FETCHES, ASYNC_JOBS, REFUSALS,
    IN_FLIGHT, LIMIT_WAITING, LIMIT_WAIT, LIMIT_REFUSED, LIMIT_PAUSED_UNTIL,
)


def suite_version() -> str:
    try:
        return importlib.metadata.version("mitm-ambassador")
    except importlib.metadata.PackageNotFoundError:
        # Run from the source tree (./run.sh): pyproject.toml is where the version is written.
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


BUILD.info({"version": suite_version(), "mitmproxy": mitmproxy.version.VERSION, "python": platform.python_version()})


def forget_upstream(name: str) -> None:
    """Remove every series of an upstream that is no longer in the profile."""
    for family in PER_UPSTREAM:
        family.remove_by_labels({"upstream": name})


def count_refusal(upstream: str | None, reason: str) -> None:
    REFUSALS.labels(upstream or "", reason).inc()


class UpstreamMeter:
    """One upstream's request metrics, their label children looked up once: `labels()` takes a
    lock and hashes its arguments on every call, and this runs for every request."""

    __slots__ = ("upstream", "in_flight", "latency", "by_class")

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.in_flight = IN_FLIGHT.labels(upstream)
        self.latency = LATENCY.labels(upstream)
        self.by_class: dict[int, Counter] = {}  # created on first use: no empty 5xx series for a healthy upstream

    def answered(self, status: int, seconds: float) -> None:
        status_class = status // 100
        counter = self.by_class.get(status_class)
        if counter is None:
            counter = self.by_class[status_class] = REQUESTS.labels(self.upstream, f"{status_class}xx")
        counter.inc()
        self.latency.observe(seconds)
