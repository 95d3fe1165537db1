"""The cache store in the profile's `state` Redis (one server or a Redis Cluster), shared by
every ambassador instance that names it.

One upstream's entries and their byte account are four keys, all with the upstream's hash
tag so that a cluster keeps them in one slot, and every change is one Lua script that is given
all four (it touches no other key):

- `...blobs`: hash, entry key -> its variants (serialised);
- `...used`: sorted set, entry key -> last use (ms, Redis' clock): the least recent is evicted;
- `...expires`: sorted set, entry key -> when it stops being of any use (ms, Redis' clock);
- `...bytes`: the sum of the blobs' lengths.

Expiry is kept in the sorted set rather than by Redis (`PX` on a key of its own): every script
first drops entries whose time has passed, so the account always equals the bytes of the
blobs stored, and those never exceed `max_bytes`, expired or not. An expired entry leaves
Redis at the next cache operation on that upstream from any instance, or the next count; the
four keys themselves expire with the last of their entries. None of them must be evicted by
Redis on its own (`maxmemory-policy noeviction`): the account would no longer match.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .. import shared_redis
from .entry import Entry, dump_variants, load_variants

log = logging.getLogger("ambassador.cache")

REDIS_TIMEOUT = 1.0  # a store slower than this is treated as down: answer from upstream instead
COUNT_REFRESH = 1.0  # seconds between recounts of the shared entries
SWEEP = 100  # expired entries one script drops at most: scripts stay short, the rest go next time

# KEYS = blobs, used, expires, bytes (above). `now` is Redis' clock, the same for every instance.
_PROLOGUE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function forget(entry)
  local size = redis.call('HSTRLEN', KEYS[1], entry)
  redis.call('ZREM', KEYS[2], entry)
  redis.call('ZREM', KEYS[3], entry)
  if size == 0 then return tonumber(redis.call('GET', KEYS[4])) or 0 end
  redis.call('HDEL', KEYS[1], entry)
  return redis.call('DECRBY', KEYS[4], size)
end
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, {SWEEP})) do
  forget(entry)
end
"""
# ARGV: entry
GET = _PROLOGUE + """
local expires = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not expires then return nil end
if tonumber(expires) <= now then
  forget(ARGV[1])
  return nil
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
return redis.call('HGET', KEYS[1], ARGV[1])
"""
# ARGV: entry, blob, keep_ms, max_bytes
PUT = _PROLOGUE + """
local max = tonumber(ARGV[4])
forget(ARGV[1])
local size = string.len(ARGV[2])
if size > max then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
local used = redis.call('INCRBY', KEYS[4], size)
while used > max do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then
    -- the account outlived its entries (Redis evicted a key under maxmemory): start afresh
    redis.call('DEL', unpack(KEYS))
    return 0
  end
  used = forget(oldest)
end
-- The four keys outlive their last entry by nothing: an upstream no longer used leaves no trace.
local keep = tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
end
return used
"""
# ARGV: entry
DELETE = _PROLOGUE + "forget(ARGV[1])\n"
# Drops what expired; the number of entries left.
COUNT = _PROLOGUE + "return redis.call('HLEN', KEYS[1])\n"
CLEAR = "redis.call('DEL', unpack(KEYS))\n"


class RedisStore:
    """One upstream's entries in the shared Redis; the least recently used are evicted beyond
    `max_bytes` of blobs, whichever instance stored them."""

    def __init__(self, url: str, upstream_name: str, namespace: str, max_bytes: int):
        self.redis = shared_redis.connect(url, REDIS_TIMEOUT)
        self.max_bytes = max_bytes
        base = f"{shared_redis.upstream_keys(upstream_name)}cache:{namespace}:"
        self.keys = [base + part for part in ("blobs", "used", "expires", "bytes")]
        self.scripts = {name: self.redis.register_script(code) for name, code in
                        (("get", GET), ("put", PUT), ("delete", DELETE), ("count", COUNT), ("clear", CLEAR))}
        self.counted_at = 0.0
        self.counting: asyncio.Task | None = None
        self._entries = 0

    @property
    def entries(self) -> int:
        """The last count of this upstream's entries; asks for a recount when it is old."""
        if time.monotonic() - self.counted_at > COUNT_REFRESH and not self.counting:
            try:
                self.counting = asyncio.get_running_loop().create_task(self._count())
            except RuntimeError:
                pass  # asked from outside the event loop: the last count has to do
        return self._entries

    async def _count(self) -> None:
        try:
            self._entries = await self._run("count")
            self.counted_at = time.monotonic()
        except shared_redis.ERRORS as e:
            log.debug("cannot count cache entries in redis: %s", e)
        finally:
            self.counting = None

    def _run(self, script: str, *args):
        return self.scripts[script](keys=self.keys, args=args)

    async def get(self, key: str) -> list[Entry] | None:
        blob = await self._run("get", key)
        return None if blob is None else load_variants(blob)

    async def put(self, key: str, variants: list[Entry], keep_for: float) -> None:
        await self._run("put", key, dump_variants(variants), max(1, int(keep_for * 1000)), self.max_bytes)

    async def delete(self, key: str) -> None:
        await self._run("delete", key)

    async def clear(self, prefix: str) -> None:
        """Everything: this store holds the one namespace it was made for, which is `prefix`."""
        await self._run("clear")
        self._entries = 0
        self.counted_at = 0.0

    async def close(self) -> None:
        if self.counting:
            self.counting.cancel()
        await self.redis.aclose()
