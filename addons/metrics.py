"""Prometheus metrics, one registry for the process; labels are bounded (upstream names, not paths).

Stages and addons increment these directly; `/_ambassador/metrics` renders `REGISTRY`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# `*_created` series (a timestamp per label set) double the output and tell a scraper nothing
# that the process start time does not.
disable_created_metrics()

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "ambassador_requests", "Answers given to clients per upstream, by status class (2xx..5xx).",
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
