"""An upstream as the rest of the ambassador sees it: its policies in front of its transport.

Each policy of an upstream's profile section (auth, cache, breaker, retry...) is a stage:
`async def __call__(request, call_next) -> UpstreamResponse`. The service chains the stages its
profile selects, so every caller (direct requests, aggregates, batch, async jobs) gets the same
behaviour from one place.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

from . import metrics
from .errors import AmbassadorError
from .exchange import UpstreamExchange, UpstreamRequest, UpstreamResponse
from .profile import Upstream
from .reflected import Secrets
from .replay import Recording
from .transport import Transport, proxy_secret_forms

Handler = Callable[[UpstreamRequest], Awaitable[UpstreamResponse]]


class Stage(Protocol):
    """One policy of an upstream. `name` is its profile section ("auth", "cache", ...).

    A stage never changes the request it is given (outer stages look at it afterwards): it
    passes a copy on (`request.with_header`, `request.with_path`). `request.notes` is shared
    by all copies, for reporting what was done.

    A stage may also define `status() -> JSON value`, shown under its name in
    `/_ambassador/status`, and `close()` (async), called when its service is retired.
    """

    name: str

    async def __call__(self, request: UpstreamRequest, call_next: Handler) -> UpstreamResponse: ...


def timeout_of(upstream: Upstream, request: UpstreamRequest) -> float:
    """The upstream's timeout, or the client's shorter one (X-Ambassador-Timeout)."""
    if request.timeout is not None:
        return min(upstream.timeout, request.timeout)
    return upstream.timeout


def deadline_of(upstream: Upstream, request: UpstreamRequest) -> float:
    """When the request's time is up (time.monotonic()), retries and token waits included."""
    return request.started + timeout_of(upstream, request)


_closing: set[asyncio.Task] = set()  # strong references until the tasks finish


@dataclass
class UpstreamStats:
    """Counters kept across profile swaps, keyed by upstream name."""

    responses: Counter = field(default_factory=Counter)  # by status code
    errors: Counter = field(default_factory=Counter)  # the ambassador's own answers, by reason

    def as_dict(self) -> dict:
        return {
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "errors": dict(sorted(self.errors.items())),
        }


class UpstreamService:
    def __init__(self, upstream: Upstream, stats: UpstreamStats, stages: list[Stage] = ()):
        self.upstream = upstream
        self.stats = stats
        # One per URL (`url`, then the failover URLs), chosen by `request.target`.
        self.transports = [Transport(upstream, url) for url in upstream.urls]
        self.stages = list(stages)
        self.meter = metrics.UpstreamMeter(upstream.name)
        self.inflight = 0
        self.retired = False
        self.replay: Recording | None = None  # replaying a recording: the upstream is never contacted
        self.switched_off: frozenset[str] = frozenset()  # sections the feature switches turned off
        self.chain = self.stages  # the stages a request passes (see choose_chain)
        self.stages_to_close = [s for s in self.stages if hasattr(s, "close")]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def status(self) -> dict:
        report = {"url": str(self.upstream.url)}
        if self.upstream.proxy is not None:
            report["proxy"] = self.upstream.proxy.url  # without its credentials
        report.update({s.name: s.status() for s in self.stages if hasattr(s, "status")})
        report.update(self.stats.as_dict())
        return report

    def deadline_of(self, request: UpstreamRequest) -> float:
        return deadline_of(self.upstream, request)

    def timeout_error(self, request: UpstreamRequest) -> AmbassadorError:
        name = self.upstream.name
        return AmbassadorError("timeout", f"upstream {name} did not answer within {timeout_of(self.upstream, request):.3g}s", name)

    async def send_once(self, request: UpstreamRequest) -> UpstreamResponse:
        """One exchange with the upstream (or the recording), bounded by what is left of the
        request's timeout, told to the request's observer when it ends."""
        if request.observer is None:
            return await self._exchange(request)
        started, response, problem = time.time(), None, None
        try:
            response = await self._exchange(request)
            return response
        except AmbassadorError as e:
            problem = e.message
            raise
        except asyncio.CancelledError:
            problem = "cancelled: its answer was no longer needed"
            raise
        finally:
            request.observer(
                UpstreamExchange(
                    "try", self.upstream.name, request.method, self.transports[request.target].origin + request.path,
                    request.headers, request.body, started, time.time(), response, problem,
                )
            )

    async def _exchange(self, request: UpstreamRequest) -> UpstreamResponse:
        if self.replay is not None:
            return self.replayed(request)
        remaining = self.deadline_of(request) - time.monotonic()
        if remaining <= 0:
            raise self.timeout_error(request)
        try:
            return await self.transports[request.target].send(request, remaining)
        except TimeoutError:
            raise self.timeout_error(request) from None

    async def handle(self, request: UpstreamRequest) -> UpstreamResponse:
        """Every door (a client's request, an aggregate part, a batch item, an async job) comes
        through here: this is where requests are counted, once each."""
        meter = self.meter
        meter.in_flight.inc()
        self.inflight += 1
        started = time.monotonic()
        try:
            response = await self._run(self.chain, 0, request)
        except AmbassadorError as e:
            self.stats.errors[e.reason] += 1
            meter.answered(e.status, time.monotonic() - started)
            metrics.count_refusal(self.upstream.name, e.reason)
            e.counted = True
            raise
        finally:
            meter.in_flight.dec()
            self.inflight -= 1
            if self.retired and self.inflight == 0:
                self._close_soon()
        meter.answered(response.status, time.monotonic() - started)
        self.stats.responses[response.status] += 1
        return response

    def set_replay(self, recording: Recording | None) -> None:
        """Answer from `recording` instead of the upstream (None: contact it again). The stages
        still run, so the answer reports what happened in replay (cache, breaker, tries); all but
        auth: no credential is needed offline, and a token endpoint is network too."""
        self.replay = recording
        self.choose_chain()

    def switch_off(self, sections: frozenset[str]) -> None:
        """Run without the stages of `sections` (e.g. {"cache"}) until switched on again. The
        stages are kept, with their state (breaker counts, cached entries, tokens), for then."""
        self.switched_off = sections
        self.choose_chain()

    def choose_chain(self) -> None:
        """The stages a request passes: computed here, once per change, never per request."""
        skipped = (self.switched_off | {"auth"}) if self.replay is not None else self.switched_off
        self.chain = [s for s in self.stages if s.name not in skipped] if skipped else self.stages

    def replayed(self, request: UpstreamRequest) -> UpstreamResponse:
        answer = self.replay.answer(self.upstream.name, request)
        if answer is None:
            raise AmbassadorError("not_recorded", f"no recorded response for {request.method} {request.path}", self.upstream.name)
        request.notes["replayed"] = True
        return answer

    def redact(self, text: str) -> str:
        """`text` with every form of this upstream's secrets replaced by `[redacted]`."""
        return Secrets(self.secret_forms()).replaced_in_text(text)

    def secret_forms(self) -> list[str]:
        auth = self.stage("auth")
        forms = [*(auth.secret_forms() if auth is not None else ()), *proxy_secret_forms(self.upstream.proxy)]
        return sorted(forms, key=len, reverse=True)

    def without_credential(self, path: str) -> str:
        """A path as sent to the upstream, without the credential the auth stage put in it."""
        auth = self.stage("auth")
        return auth.without_credential(path) if auth is not None else path

    def _run(self, chain: list[Stage], index: int, request: UpstreamRequest) -> Awaitable[UpstreamResponse]:
        if index == len(chain):
            return self.send_once(request)
        return chain[index](request, lambda r: self._run(chain, index + 1, r))

    def retire(self) -> None:
        """A new profile replaced this service: close its connections once in-flight requests end."""
        self.retired = True
        if self.inflight == 0:
            self._close_soon()

    def _close_soon(self) -> None:
        # A task of its own: the last request's answer does not wait for the closing.
        task = asyncio.get_running_loop().create_task(self.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def close(self) -> None:
        """Close the stages once and the connections. Safe to repeat: a flow matched just
        before a swap may still come through and open a connection again."""
        stages, self.stages_to_close = self.stages_to_close, []
        for stage in stages:
            await stage.close()
        for transport in self.transports:
            await transport.close()
