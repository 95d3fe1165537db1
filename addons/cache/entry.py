"""A stored response and everything its reuse needs, worked out once when it is stored.

RFC 9111 section 3 (what may be stored, and the 304 header update of 3.2) lives here; serving
an entry is then additions and comparisons on its fields.
"""

from __future__ import annotations

import email.utils
import json
import struct
import sys
from dataclasses import asdict, dataclass

from multidict import CIMultiDict

from ..bounded import MAX_BODY
from ..exchange import UpstreamRequest, UpstreamResponse, end_to_end
from ..profile import CachePolicy
from . import freshness, keys

# Never stored: recomputed (Age), ours (X-Cache, X-Ambassador-*), or per message (RFC 9111 3.1).
NOT_STORED = ("age", "x-cache")
# A 304 does not replace these on the stored response (RFC 9111 3.2): fields describing the stored
# content itself (its length, coding, range, digests), which a 304 without content cannot change.
NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range", "content-md5", "content-digest", "age", "x-cache"})
# Statuses the cache understands and may store; 206 and 304 are not complete responses.
STORABLE_STATUSES = frozenset(range(200, 600)) - {206, 304}
# Final statuses whose caching requirements this cache implements, for `must-understand` (RFC 9111
# 5.2.2.3): those of RFC 9110 section 15, and 429, 431, 451.
UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 305, 307, 308, *range(400, 418), 421, 422, 426, 429, 431, 451, *range(500, 506)}
)
# Kept after a response turned stale when it has a validator: a 304 is cheaper than a new body.
VALIDATOR_KEEP = 86400.0
# Fields of a 304 made from a stored response (RFC 9110 15.4.5).
NOT_MODIFIED_FIELDS = ("cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified")
CREDENTIALS = ("authorization", "cookie")
# The device token this cache announces in Surrogate-Capability; `;ambassador` targets it.
SURROGATE_TOKEN = "ambassador"
FLOAT_FIELDS = 6


@dataclass(frozen=True, slots=True)
class Entry:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    request_time: float
    response_time: float
    corrected_initial_age: float
    lifetime: float
    vary: tuple[str, ...]
    vary_values: tuple[str | None, ...]
    etag: str | None
    last_modified: str | None
    modified_time: float  # Last-Modified, else Date: for the client's If-Modified-Since
    no_cache: bool  # response no-cache: never reused without a successful revalidation
    must_revalidate: bool  # must-revalidate / proxy-revalidate / s-maxage: never served stale
    shared_with_credentials: bool  # public / s-maxage: may answer requests carrying credentials
    stale_while_revalidate: float
    stale_if_error: float

    @property
    def size(self) -> int:
        """Bytes this entry takes in memory, Python's object overhead included (for max_bytes)."""
        fields = (self.body, self.reason, self.headers, self.etag, self.last_modified, self.vary, self.vary_values)
        return (
            sys.getsizeof(self)
            + sum(sys.getsizeof(f) for f in fields)
            + sum(sys.getsizeof(h) + sys.getsizeof(h[0]) + sys.getsizeof(h[1]) for h in self.headers)
            + sum(sys.getsizeof(v) for v in (*self.vary, *self.vary_values))
            + FLOAT_FIELDS * sys.getsizeof(0.0)
        )

    def age(self, now: float) -> float:
        """RFC 9111 4.2.3 current_age."""
        return self.corrected_initial_age + (now - self.response_time)

    def keep_for(self, policy: CachePolicy, now: float) -> float:
        """Seconds from `now` this entry can still be of use (for store expiry)."""
        stale_use = max(self.stale_while_revalidate, self.stale_if_error, policy.stale_if_error)
        if self.etag or self.last_modified:
            stale_use = max(stale_use, VALIDATOR_KEEP)
        return max(1.0, self.lifetime + stale_use - self.age(now))

    def matches(self, headers: CIMultiDict[str]) -> bool:
        """RFC 9111 4.1: the request's selecting fields are those of the stored request."""
        return not self.vary or keys.selecting_values(self.vary, headers) == self.vary_values

    def response(self, now: float, x_cache: str, with_body: bool = True) -> UpstreamResponse:
        headers = CIMultiDict(self.headers)
        headers["Age"] = str(int(self.age(now)))
        headers["X-Cache"] = x_cache
        return UpstreamResponse(self.status, self.reason, headers, self.body if with_body else b"")

    def partial(self, now: float, x_cache: str, first: int, last: int) -> UpstreamResponse:
        """A 206 with bytes first..last of the stored body (RFC 9110 15.3.7)."""
        headers = self.response(now, x_cache).headers
        headers["Content-Range"] = f"bytes {first}-{last}/{len(self.body)}"
        headers["Content-Length"] = str(last - first + 1)
        return UpstreamResponse(206, "Partial Content", headers, self.body[first : last + 1])

    def not_modified(self, now: float, x_cache: str) -> UpstreamResponse:
        headers = CIMultiDict((k, v) for k, v in self.headers if k.lower() in NOT_MODIFIED_FIELDS)
        headers["Age"] = str(int(self.age(now)))
        headers["X-Cache"] = x_cache
        return UpstreamResponse(304, "Not Modified", headers)


def has_credentials(headers: CIMultiDict[str]) -> bool:
    return any(name in headers for name in CREDENTIALS)


def make_entry(
    request: UpstreamRequest,
    response: UpstreamResponse,
    request_time: float,
    response_time: float,
    policy: CachePolicy,
    request_cc: freshness.Directives,
) -> Entry | None:
    """The entry to store for a response to a GET, or None where RFC 9111 section 3 forbids it."""
    if request.method != "GET" or response.status not in STORABLE_STATUSES or "no-store" in request_cc:
        return None
    if len(response.body) > MAX_BODY:
        return None  # answered, not kept: a store holds many entries
    cc, duplicates = freshness.parse_cache_control(response.headers.getall("cache-control", []))
    # Surrogate-Control speaks to gateway caches like this one: its no-store and max-age replace
    # Cache-Control's storage and freshness rules, which then address the client's caches only.
    # private and the client-credential rule still hold.
    surrogate = freshness.surrogate_control(response.headers.getall("surrogate-control", []), SURROGATE_TOKEN)
    if "no-store" in surrogate:
        return None
    surrogate_lifetime = "max-age" in surrogate
    if "must-understand" in cc:
        if response.status not in UNDERSTOOD_STATUSES:
            return None
        cc.pop("no-store", None)  # no-store is there for caches that do not understand the status
    if ("no-store" in cc and not surrogate_lifetime) or "private" in cc:
        return None
    shared_with_credentials = "public" in cc or "s-maxage" in cc
    if has_credentials(request.headers) and not shared_with_credentials:
        return None  # RFC 9111 3.5, and a Cookie too
    if "set-cookie" in response.headers and not shared_with_credentials:
        # The RFC allows it, but a cookie set in answer to one request would be handed to every
        # later one: only where the origin says the answer is for everyone (public, s-maxage).
        return None
    vary = keys.vary_names(response.headers.getall("vary", []))
    if vary is None:
        return None  # Vary: * never matches a later request
    headers = end_to_end(response.headers, *NOT_STORED, *(k for k in response.headers if k.lower().startswith("x-ambassador-")))
    dates = headers.getall("date", [])
    date = freshness.http_date(freshness.single(dates))
    if date is None:
        # An invalid Date counts as the time of reception; a missing one is added (RFC 9110 6.6.1).
        date = response_time
        if not dates:
            headers["Date"] = email.utils.formatdate(response_time, usegmt=True)
    expires = headers.getall("expires", [])
    if surrogate_lifetime:
        lifetime = freshness.surrogate_lifetime(surrogate["max-age"])
    else:
        lifetime = freshness.explicit_lifetime(cc, duplicates, expires, date)
    last_modified = freshness.single(headers.getall("last-modified", []))
    if lifetime is None:
        if not freshness.heuristically_cacheable(response.status, cc):
            return None
        # No explicit freshness: the profile's ttl (legacy APIs) replaces the RFC's heuristic.
        lifetime = policy.ttl or freshness.heuristic_lifetime(date, last_modified)
    age = freshness.age_value(response.headers.getall("age", []))
    if age is None:
        age, lifetime = 0, 0.0  # an unreadable Age: stale (freshness.age_value)
    etag = freshness.single(headers.getall("etag", []))
    swr = freshness.stale_window(cc, "stale-while-revalidate")
    sie = freshness.stale_window(cc, "stale-if-error")
    if lifetime <= 0 and not (etag or last_modified or swr or sie or policy.stale_if_error):
        return None  # never reusable: stale at once, nothing to revalidate with
    names_values = keys.selecting_values(vary, request.headers)
    return Entry(
        status=response.status,
        reason=response.reason,
        headers=tuple(headers.items()),
        body=response.body,
        request_time=request_time,
        response_time=response_time,
        corrected_initial_age=freshness.corrected_initial_age(age, date, request_time, response_time),
        lifetime=lifetime,
        vary=vary,
        vary_values=names_values,
        etag=etag,
        last_modified=last_modified,
        modified_time=freshness.http_date(last_modified) or date,
        no_cache="no-cache" in cc,
        must_revalidate="must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc,
        shared_with_credentials=shared_with_credentials,
        stale_while_revalidate=swr,
        stale_if_error=sie,
    )


def merge_not_modified(entry: Entry, not_modified: UpstreamResponse) -> UpstreamResponse:
    """RFC 9111 3.2: the stored response with the 304's header fields replacing its own."""
    headers = CIMultiDict(entry.headers)
    fresh = end_to_end(not_modified.headers, *NOT_UPDATED)
    for name in {k.lower() for k in fresh if not k.lower().startswith("x-ambassador-")}:
        headers.popall(name, None)
        for value in fresh.getall(name):
            headers.add(name, value)
    for value in not_modified.headers.getall("age", []):
        headers.add("Age", value)  # the 304's Age is the one that counts for the new age
    return UpstreamResponse(entry.status, entry.reason, headers, entry.body)


def same_representation(entry: Entry, response: UpstreamResponse) -> bool:
    """RFC 9111 4.3.5: a HEAD response describes the stored one when their validators agree."""
    agreed = False
    for field, stored in (("etag", entry.etag), ("last-modified", entry.last_modified)):
        value = freshness.single(response.headers.getall(field, []))
        if (value is None) != (stored is None) or value != stored:
            return False
        agreed = agreed or value is not None
    length = response.headers.get("content-length")
    stored_length = next((v for k, v in entry.headers if k.lower() == "content-length"), None)
    return agreed and (length is None or stored_length is None or length == stored_length)


# --- serialised form for persistent and shared stores ------------------------------------------
# [4-byte length][JSON list of entry fields without bodies][bodies one after the other]
# Not pickle: a shared Redis must not be a way to run code in the ambassador.

_LENGTH = struct.Struct("!I")


def dump_variants(entries: list[Entry]) -> bytes:
    metas = []
    for entry in entries:
        meta = asdict(entry)
        del meta["body"]
        meta["body_length"] = len(entry.body)
        metas.append(meta)
    head = json.dumps(metas, separators=(",", ":")).encode()
    return b"".join([_LENGTH.pack(len(head)), head, *(e.body for e in entries)])


def load_variants(blob: bytes) -> list[Entry]:
    (length,) = _LENGTH.unpack_from(blob)
    metas = json.loads(blob[_LENGTH.size : _LENGTH.size + length])
    view = memoryview(blob)
    offset = _LENGTH.size + length
    entries = []
    for meta in metas:
        size = meta.pop("body_length")
        body = bytes(view[offset : offset + size])
        offset += size
        meta["headers"] = tuple(tuple(h) for h in meta["headers"])
        meta["vary"] = tuple(meta["vary"])
        meta["vary_values"] = tuple(meta["vary_values"])
        entries.append(Entry(body=body, **meta))
    return entries
