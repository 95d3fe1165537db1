"""The cache stage: a shared HTTP cache (RFC 9111, RFC 5861) in front of an upstream.

Outermost stage: a hit touches neither retry, breaker, auth nor the network. Misses and
revalidations go through the inner stages, whose `AmbassadorError`s (connect_error, timeout,
circuit_open) let the cache answer with a stale copy where `stale-if-error` allows it.

Every answer carries `X-Cache`, errors the cache passes on included:
HIT (from the cache: fresh, or revalidated with a 304), MISS (from the upstream),
STALE (a stale copy: stale-while-revalidate, stale-if-error, or the client's max-stale),
BYPASS (the cache was not consulted, or may not keep the answer: unsafe methods, ranges it
cannot answer, If-Match, no-store in the request, a client credential on an answer that is not public).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, OrderedDict

from multidict import CIMultiDict

from .. import metrics
from ..errors import AmbassadorError
from ..exchange import UpstreamRequest, UpstreamResponse
from ..profile import Upstream
from ..service import Handler
from . import freshness, keys, ranges
from .entry import SURROGATE_TOKEN, Entry, has_credentials, make_entry, merge_not_modified, same_representation
from .redis_store import RedisStore
from .stores import Guarded, MemoryStore, SqliteStore, Store

log = logging.getLogger("ambassador.cache")

HIT, MISS, STALE, BYPASS = "HIT", "MISS", "STALE", "BYPASS"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Requests the cache cannot answer from a complete stored response; they pass through.
PASS_FIELDS = ("if-range", "if-match", "if-unmodified-since")
CLIENT_VALIDATORS = ("if-none-match", "if-modified-since")
# Upstream failures a stale copy may cover (RFC 5861 section 4, and the profile's stale_if_error).
ERROR_STATUSES = frozenset({500, 502, 503, 504})
ERROR_REASONS = frozenset({"connect_error", "timeout", "circuit_open"})
# Request directives that ask for the origin's current answer: such requests do not join a flight.
END_TO_END_DIRECTIVES = ("no-cache", "max-age", "min-fresh")
# Announced to the upstream (W3C Edge Architecture): Surrogate-Control may target this cache.
SURROGATE_CAPABILITY = f'{SURROGATE_TOKEN}="Surrogate/1.0"'
MAX_VARIANTS = 8
PASS_KEYS = 10_000


def make_store(upstream: Upstream, state: str | None) -> Store:
    policy = upstream.cache
    if policy.store == "sqlite":
        return SqliteStore(policy.sqlite_path, policy.max_bytes)
    if policy.store == "redis":
        return RedisStore(state, upstream.name, keys.namespace(upstream), policy.max_bytes)
    return MemoryStore(policy.max_bytes)


class CacheStage:
    name = "cache"

    def __init__(self, upstream: Upstream, store: Store):
        self.upstream = upstream
        self.policy = upstream.cache
        self.store = Guarded(store, upstream.name)
        self.counts: Counter[str] = Counter()
        self.results = {r: metrics.CACHE_RESULTS.labels(upstream.name, r.lower()) for r in (HIT, MISS, STALE, BYPASS)}
        # Exchanges under way per key; requests for the same key wait for them (coalescing).
        self.flights: dict[str, asyncio.Future[Entry | None]] = {}
        self.background: set[asyncio.Task] = set()
        # URIs whose last answer could not be stored: their requests do not wait for each other.
        self.passes: OrderedDict[str, None] = OrderedDict()

    # --- the stage ---------------------------------------------------------------------

    async def __call__(self, request: UpstreamRequest, call_next: Handler) -> UpstreamResponse:
        request_cc = None  # None: the cache may not answer this request and stays out of its way
        if request.method in ("GET", "HEAD") and not any(f in request.headers for f in PASS_FIELDS):
            request_cc = freshness.request_directives(request.headers.getall("cache-control", None), request.headers.getall("pragma", None))
            if "no-store" in request_cc:
                request_cc = None  # RFC 9111 5.2.1.5: nothing of this exchange may be stored
        try:
            if request_cc is None:
                response, result = await self._pass(request, call_next), BYPASS
            elif "range" in request.headers:
                response, result = await self._range(request, request_cc, call_next)
            else:
                response, result = await self._cached(request, request_cc, call_next)
        except AmbassadorError as e:
            self._record(request, BYPASS if request_cc is None else MISS)
            e.headers["X-Cache"] = request.notes["cache"]
            raise
        self._record(request, result)
        response.headers["X-Cache"] = result
        if "surrogate-control" in response.headers:
            del response.headers["surrogate-control"]  # addressed to gateway caches: this one
        return response

    def _record(self, request: UpstreamRequest, result: str) -> None:
        request.notes["cache"] = result
        self.counts[result] += 1
        self.results[result].inc()

    def status(self) -> dict:
        return {
            "entries": self.store.entries,
            "hits": self.counts[HIT],
            "misses": self.counts[MISS],
            "stale": self.counts[STALE],
            "bypass": self.counts[BYPASS],
        }

    def clear(self) -> asyncio.Task:
        """Forget every stored response of this upstream (`ambassador.cache.clear`).

        Callable from synchronous command handlers; await the task to know it is done.
        """
        task = asyncio.get_running_loop().create_task(self.store.clear(keys.namespace(self.upstream)))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        await self.store.close()

    # --- requests that are not answered from the cache ------------------------------------

    async def _pass(self, request: UpstreamRequest, call_next: Handler) -> UpstreamResponse:
        response = await call_next(request)
        if request.method not in SAFE_METHODS and response.status < 400:
            # RFC 9111 4.4: an unsafe method that succeeded changes what is stored for its URI.
            targets = {keys.primary_key(self.upstream, request.path)}
            for field in ("location", "content-location"):
                for value in response.headers.getall(field, []):
                    if key := keys.related_key(self.upstream, request.path, value):
                        targets.add(key)
            for key in targets:
                await self.store.delete(key)
        return response

    # --- GET and HEAD ------------------------------------------------------------------

    async def _range(self, request: UpstreamRequest, request_cc: freshness.Directives, call_next: Handler) -> tuple[UpstreamResponse, str]:
        """A single byte range of a fresh stored response is answered from it (RFC 9110 14.2);
        any other ranged request goes to the upstream, and its partial answer is not stored."""
        if request.method == "GET":
            entry = self._select(await self.store.get(keys.primary_key(self.upstream, request.path)) or [], request)
            now = time.time()
            if entry is not None and entry.status == 200 and self._reusable(entry, entry.age(now), request_cc) == HIT:
                if span := ranges.byte_range(request.headers["range"], len(entry.body)):
                    return entry.partial(now, HIT, *span), HIT
        return await self._pass(request, call_next), BYPASS

    async def _cached(self, request: UpstreamRequest, request_cc: freshness.Directives, call_next: Handler) -> tuple[UpstreamResponse, str]:
        key = keys.primary_key(self.upstream, request.path)
        variants = await self.store.get(key) or []
        entry = self._select(variants, request)
        now = time.time()
        if entry is not None:
            age = entry.age(now)
            if result := self._reusable(entry, age, request_cc):
                return self._from_cache(request, entry, now, result), result
            if self._may_serve_while_revalidating(entry, age, request_cc):
                self._revalidate_in_background(key, request, entry, call_next)
                return self._from_cache(request, entry, now, STALE), STALE
        if "only-if-cached" in request_cc:
            raise AmbassadorError("only_if_cached", "only-if-cached: no stored response can answer this request", self.upstream.name)
        flight = self.flights.get(key)
        if request.method != "GET" or key in self.passes or (flight and any(d in request_cc for d in END_TO_END_DIRECTIVES)):
            return await self._exchange(key, request, entry, call_next, request_cc)
        if flight is None:
            return await self._lead(self._take_off(key), key, request, entry, call_next, request_cc)
        # Coalescing: wait for the exchange under way, then use what it stored if it fits.
        stored = await asyncio.shield(flight)
        if stored is not None and self._select([stored], request) and self._reusable(stored, stored.age(time.time()), request_cc):
            return self._from_cache(request, stored, time.time(), HIT), HIT
        # Not usable for this request, or the exchange failed: ask for ourselves (no blind failure).
        return await self._exchange(key, request, entry, call_next, request_cc)

    def _select(self, variants: list[Entry], request: UpstreamRequest) -> Entry | None:
        """The most recent stored response for this request (RFC 9111 4.1, 3.5)."""
        credentials = has_credentials(request.headers)
        for entry in variants:
            if entry.matches(request.headers) and (entry.shared_with_credentials or not credentials):
                return entry
        return None

    @staticmethod
    def _reusable(entry: Entry, age: float, request_cc: freshness.Directives) -> str | None:
        """HIT or STALE when the entry may answer without contacting the upstream (RFC 9111 4.2, 5.2.1)."""
        if entry.no_cache or "no-cache" in request_cc:
            return None
        if "max-age" in request_cc:
            max_age = freshness.delta_seconds(request_cc["max-age"])
            if max_age is not None and age > max_age:
                return None
        remaining = entry.lifetime - age
        if remaining > 0:
            min_fresh = freshness.delta_seconds(request_cc.get("min-fresh"))
            return HIT if min_fresh is None or remaining >= min_fresh else None
        if "max-stale" in request_cc and not entry.must_revalidate:
            limit = request_cc["max-stale"]
            if limit is None:
                return STALE
            seconds = freshness.delta_seconds(limit)
            if seconds is not None and -remaining <= seconds:
                return STALE
        return None

    @staticmethod
    def _may_serve_while_revalidating(entry: Entry, age: float, request_cc: freshness.Directives) -> bool:
        """RFC 5861 section 3, unless the origin or the client rules stale answers out."""
        if entry.must_revalidate or entry.no_cache or any(d in request_cc for d in END_TO_END_DIRECTIVES):
            return False
        return 0 <= age - entry.lifetime <= entry.stale_while_revalidate

    def _may_serve_on_error(self, entry: Entry | None, request_cc: freshness.Directives) -> bool:
        """RFC 5861 section 4 and the profile's stale_if_error, unless stale is ruled out."""
        if entry is None or entry.must_revalidate or entry.no_cache or "no-cache" in request_cc:
            return False
        window = max(entry.stale_if_error, self.policy.stale_if_error)
        if "stale-if-error" in request_cc:
            window = max(window, freshness.stale_window(request_cc, "stale-if-error"))
        return entry.age(time.time()) - entry.lifetime <= window

    def _from_cache(self, request: UpstreamRequest, entry: Entry, now: float, result: str) -> UpstreamResponse:
        if entry.status == 200 and self._client_validators_match(request, entry):
            return entry.not_modified(now, result)
        return entry.response(now, result, with_body=request.method != "HEAD")

    @staticmethod
    def _client_validators_match(request: UpstreamRequest, entry: Entry) -> bool:
        """RFC 9111 4.3.2 / RFC 9110 13.1.2-3: the client's own conditional GET or HEAD."""
        if_none_match = request.headers.getall("if-none-match", None)
        if if_none_match is not None:
            tags = [t for line in if_none_match for t in freshness.entity_tags(line)]
            return "*" in tags or (entry.etag is not None and any(freshness.weak_match(t, entry.etag) for t in tags))
        since = freshness.http_date(request.headers.get("if-modified-since"))
        return since is not None and entry.modified_time <= since

    # --- asking the upstream ------------------------------------------------------------

    def _take_off(self, key: str) -> asyncio.Future[Entry | None]:
        """Mark an exchange for `key` as under way, before anything can await."""
        flight = self.flights[key] = asyncio.get_running_loop().create_future()
        return flight

    async def _lead(self, flight, key, request, entry, call_next, request_cc) -> tuple[UpstreamResponse, str]:
        """The one exchange for `key` that concurrent requests wait for."""
        stored = None
        try:
            response, result, stored = await self._exchange_storing(key, request, entry, call_next, request_cc)
            return response, result
        finally:
            if self.flights.get(key) is flight:
                del self.flights[key]
            flight.set_result(stored)

    async def _exchange(self, key, request, entry, call_next, request_cc) -> tuple[UpstreamResponse, str]:
        response, result, _ = await self._exchange_storing(key, request, entry, call_next, request_cc)
        return response, result

    async def _exchange_storing(
        self,
        key: str,
        request: UpstreamRequest,
        entry: Entry | None,
        call_next: Handler,
        request_cc: freshness.Directives,
    ) -> tuple[UpstreamResponse, str, Entry | None]:
        """Ask the upstream (conditionally when `entry` has validators), store and answer."""
        revalidating = entry is not None and request.method == "GET" and bool(entry.etag or entry.last_modified)
        headers = CIMultiDict(request.headers)
        headers.add("Surrogate-Capability", SURROGATE_CAPABILITY)  # so the upstream can target us
        if revalidating:
            # Our validators replace the client's: the cache needs a full answer unless its own
            # copy is current; the client's conditions are then evaluated on that copy.
            for name in CLIENT_VALIDATORS:
                headers.popall(name, None)
            if entry.etag:
                headers["If-None-Match"] = entry.etag
            if entry.last_modified:
                headers["If-Modified-Since"] = entry.last_modified
        forward = dataclasses.replace(request, headers=headers)
        request_time = time.time()
        try:
            response = await call_next(forward)
        except AmbassadorError as e:
            if e.reason in ERROR_REASONS and self._may_serve_on_error(entry, request_cc):
                log.info("upstream %s: %s; answering with a stale copy", self.upstream.name, e.reason)
                return self._from_cache(request, entry, time.time(), STALE), STALE, None
            raise
        response_time = time.time()

        if response.status == 304 and revalidating:
            etag = freshness.single(response.headers.getall("etag", []))
            if etag is None or etag == entry.etag:
                merged = merge_not_modified(entry, response)
                fresh = make_entry(forward, merged, request_time, response_time, self.policy, request_cc)
                if fresh is not None:
                    await self._store(key, fresh)
                    return self._from_cache(request, fresh, response_time, HIT), HIT, fresh
                return merged, HIT, None
            # A 304 for another representation than ours: ask again without conditions.
            return await self._exchange_storing(key, request, None, call_next, request_cc)

        if response.status in ERROR_STATUSES and self._may_serve_on_error(entry, request_cc):
            log.info("upstream %s answered %d; answering with a stale copy", self.upstream.name, response.status)
            return self._from_cache(request, entry, time.time(), STALE), STALE, None

        if request.method == "HEAD":
            if entry is not None and response.status == entry.status and same_representation(entry, response):
                # RFC 9111 4.3.5: a HEAD response freshens the stored GET response it describes.
                get = dataclasses.replace(forward, method="GET")
                merged = merge_not_modified(entry, response)
                if fresh := make_entry(get, merged, request_time, response_time, self.policy, request_cc):
                    await self._store(key, fresh)
            return response, MISS, None

        fresh = make_entry(forward, response, request_time, response_time, self.policy, request_cc)
        if fresh is not None:
            self.passes.pop(key, None)
            await self._store(key, fresh)
            if revalidating and response.status == 200 and self._client_validators_match(request, fresh):
                return fresh.not_modified(response_time, MISS), MISS, fresh
        elif response.status < 500 and response.status != 304 and not has_credentials(request.headers):
            # The upstream's answer for this URI may not be stored: later requests for it need
            # not wait for each other, and a copy we had is outdated.
            self._remember_pass(key)
            if entry is not None:
                await self._store(key, None, drop=entry)
        if fresh is None and has_credentials(request.headers):
            return response, BYPASS, None  # RFC 9111 3.5: not public, so not for the shared cache
        return response, MISS, fresh

    def _remember_pass(self, key: str) -> None:
        self.passes[key] = None
        self.passes.move_to_end(key)
        if len(self.passes) > PASS_KEYS:
            self.passes.popitem(last=False)

    async def _store(self, key: str, fresh: Entry | None, drop: Entry | None = None) -> None:
        """Put `fresh` first among the key's variants, replacing the one it matches (or `drop`).

        The variants are read again here, not taken from before the exchange: concurrent
        exchanges for other variants of the URI (waiters for another Vary value) stored theirs
        meanwhile, and must not be overwritten."""
        variants = await self.store.get(key) or []
        if fresh is not None:
            kept = [fresh] + [v for v in variants if (v.vary, v.vary_values) != (fresh.vary, fresh.vary_values)]
        else:
            kept = [v for v in variants if v != drop]
        kept = kept[:MAX_VARIANTS]
        if not kept:
            await self.store.delete(key)
            return
        now = time.time()
        await self.store.put(key, kept, max(v.keep_for(self.policy, now) for v in kept))

    def _revalidate_in_background(
        self, key: str, request: UpstreamRequest, entry: Entry, call_next: Handler
    ) -> None:
        """stale-while-revalidate: refresh the entry after answering with it; one refresh at a time."""
        if key in self.flights:
            return
        refresh = UpstreamRequest("GET", request.path, CIMultiDict(request.headers), b"")
        for name in CLIENT_VALIDATORS:
            refresh.headers.popall(name, None)
        flight = self._take_off(key)
        task = asyncio.get_running_loop().create_task(
            self._lead(flight, key, refresh, entry, call_next, freshness.NO_DIRECTIVES)
        )
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("upstream %s: background revalidation failed: %s", self.upstream.name, task.exception())
