"""The `failover` stage: the upstream's other URLs, tried in order when `url` cannot answer.

A try walks the URLs (`url`, then `failover` in profile order) and ends at the first that
answers: it moves on when a URL fails (connection error, timeout, an answer with one of the
breaker's failure statuses) or when that URL's breaker refuses. Each URL has a breaker of its
own (breaker.py's `UrlBreakers`), so a dead `url` is skipped at no cost until it half-opens.
All URLs share the request's timeout: after a timeout the next URL gets what time is left, and
none when nothing is. Retries sit above: each try walks the URLs again, those that failed
earlier in the request last, so that a retry after a timeout goes to the next URL first.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from . import metrics
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse
from .profile import Upstream
from .routing import join_path
from .switches import FeatureSwitch

FAILED_REASONS = frozenset({"timeout", "connect_error"})
URL_HEADER = "X-Ambassador-Upstream-Url"

Outcome = UpstreamResponse | AmbassadorError


def try_order(urls: list[str], failed: list[str]) -> list[int]:
    """The indexes of `urls` in the order a try walks them: those that have not failed in this
    request in profile order, then those that have, in the order they failed."""
    fresh = [i for i, url in enumerate(urls) if url not in failed]
    return fresh + [urls.index(url) for url in failed if url in urls]


def rebased(path: str, from_base: str, to_base: str) -> str:
    """A path at one URL of the upstream (its base path included) as the path at another."""
    return join_path(to_base, path[len(from_base):])


def failed(outcome: Outcome, failure_statuses: frozenset[int]) -> bool:
    if isinstance(outcome, AmbassadorError):
        return outcome.reason in FAILED_REASONS
    return outcome.status in failure_statuses


class FailoverStage:
    name = "failover"

    def __init__(self, upstream: Upstream, failure_statuses: frozenset[int], deadline_of: Callable[[UpstreamRequest], float], breakers=None):
        """`breakers`: the upstream's `UrlBreakers`, for the status; None without a breaker."""
        self.urls = upstream.urls
        self.names = [str(url) for url in self.urls]
        self.failure_statuses = failure_statuses
        self.deadline_of = deadline_of
        self.breakers = breakers
        self.failovers = metrics.FAILOVERS.labels(upstream.name)
        self.count = 0  # tries that went on to a failover URL, for the status

    async def __call__(self, request: UpstreamRequest, call_next) -> UpstreamResponse:
        # Shared by the request's tries and hedge copies, as all its notes are.
        failed_urls: list[str] = request.notes.setdefault("failed_urls", [])
        outcome: Outcome | None = None
        refused: AmbassadorError | None = None
        for target in try_order(self.names, failed_urls):
            if target:
                if self.deadline_of(request) <= time.monotonic():
                    break  # the request's time is up: a try now would only time out
                self.failovers.inc()
                self.count += 1
                attempt = dataclasses.replace(
                    request, path=rebased(request.path, self.urls[0].base_path, self.urls[target].base_path), target=target
                )
            else:
                attempt = request
            try:
                result = await call_next(attempt)
            except AmbassadorError as e:
                if e.reason == "circuit_open":
                    refused = refused or e
                    continue
                if e.reason not in FAILED_REASONS:
                    raise  # says nothing about this URL (auth_failed, bad_request...)
                result = e
            if isinstance(result, UpstreamResponse):
                result.headers[URL_HEADER] = self.names[target]
            if not failed(result, self.failure_statuses):
                if target:
                    request.notes["failover_to"] = self.names[target]
                return result
            if self.names[target] in failed_urls:
                failed_urls.remove(self.names[target])
            failed_urls.append(self.names[target])
            outcome = result
        if outcome is None:
            raise refused  # every URL's breaker refused
        if isinstance(outcome, AmbassadorError):
            raise outcome
        return outcome

    def status(self) -> dict:
        """Each URL and, with a breaker, its breaker's state."""
        urls = [{"url": name} for name in self.names]
        if self.breakers is not None:
            for i, entry in enumerate(urls):
                entry["breaker"] = self.breakers.url_status(i)
        return {"failovers": self.count, "urls": urls}


class Failover(FeatureSwitch):
    """The failover as a mitmproxy addon: its switch, option `ambassador_failover`."""

    section = "failover"
    does = "the upstream's other URLs when `url` cannot answer"
