"""An upstream's `rate`, `quota` and upstream pause shared by every instance through Redis.

One Lua script makes each decision atomically, on Redis' own clock, with the same rules as
`pacing.take` (token bucket, calendar window, pause): two instances can never both take the
last token. The state of one upstream is one hash, `ambassador:{<name>}:limit`, and the
requests of every instance that started but are not yet written to the wire (see
`pacing.py`: the bucket does not refill over them) are a sorted set beside it,
`...:limit:held`, each by its start time; one held longer than HOLD_LONGEST (an instance that
died meanwhile) stops counting. The hash tag keeps whatever else an upstream stores in Redis
on one cluster slot. Both expire once idle long enough to be full again, so nothing is written
when an instance starts.

`concurrency` is not shared: it counts requests in flight, and an instance that dies with
requests in flight would hold their places in Redis until some lease ran out. Each instance
keeps its own count, exact and free.

Every reply also carries the shared state, mirrored locally as a `pacing.PaceState` in this
instance's clock: estimates for queued requests, status and the fallback while Redis is
unreachable all start from the last state Redis gave.
"""

from __future__ import annotations

import itertools
import os
import time

import redis.asyncio as aioredis

from .pacing import Pace, PaceState
from . import shared_redis
from .shared_state import REDIS_TIMEOUT, SharedStateUnavailable


# How long a started request may take to reach the wire before it stops holding its place
# in the bucket: far longer than opening a connection takes, short enough that the places of
# an instance that died with requests in hand come back soon.
HOLD_LONGEST = 5.0

# KEYS: the state hash, the held set. ARGV: op (take | sent | give | pause | resume), tokens per ms (0:
# no rate), burst, quota (0: none), quota window in ms, the longest hold in ms, then for take
# and sent: the request's name in the held set; for give: that name and the window start (ms)
# of the take; for pause: until (ms, Redis clock).
# Returns {wait ms, tokens, used, window start ms, paused until ms, now ms}.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local wms = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[6]))
local held = redis.call('ZCARD', KEYS[2])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'win', 'used', 'pause')
local tokens = tonumber(h[1]) or burst
local at = tonumber(h[2]) or now
local win = math.floor(now / wms) * wms
local used = 0
if tonumber(h[3]) == win then used = tonumber(h[4]) or 0 end
local pause = tonumber(h[5]) or 0
if rate > 0 and now > at then tokens = math.min(burst - held, tokens + (now - at) * rate) end
if op == 'sent' then
  redis.call('ZREM', KEYS[2], ARGV[7])
elseif op == 'give' then
  held = held - redis.call('ZREM', KEYS[2], ARGV[7])
  if rate > 0 then tokens = math.min(burst - held, tokens + 1) end
  if tonumber(ARGV[8]) == win and used > 0 then used = used - 1 end
elseif op == 'pause' then
  pause = math.max(pause, tonumber(ARGV[7]))
elseif op == 'resume' then
  pause = 0
end
local wait = 0
if pause > now then wait = pause - now end
if rate > 0 and tokens < 1 then wait = math.max(wait, (1 - tokens) / rate) end
if quota > 0 and used >= quota then wait = math.max(wait, win + wms - now) end
if op == 'take' and wait == 0 then
  if rate > 0 then tokens = tokens - 1 end
  used = used + 1
  redis.call('ZADD', KEYS[2], now, ARGV[7])
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now, 'win', win, 'used', used, 'pause', pause)
local keep = math.max(wms, tonumber(ARGV[6]))
if rate > 0 then keep = math.max(keep, burst / rate) end
keep = math.ceil(math.max(keep, pause - now)) + 1000
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return {tostring(wait), tostring(tokens), used, win, pause, now}
"""


class SharedPace:
    """One upstream's shared pacing. Raises SharedStateUnavailable when Redis fails."""

    def __init__(self, client: aioredis.Redis, upstream_name: str, pace: Pace, hold_longest: float = HOLD_LONGEST):
        self.client = client
        key = shared_redis.upstream_keys(upstream_name) + "limit"
        self.keys = [key, key + ":held"]
        self.args = [
            repr(pace.rate / 1000) if pace.rate else "0", pace.burst, pace.quota or 0, round(pace.window * 1000),
            round(hold_longest * 1000),
        ]
        # Names of this instance's requests in the held set: unique across instances.
        prefix = f"{os.getpid()}:{id(self):x}:{time.time_ns():x}:"
        self.names = (f"{prefix}{n}" for n in itertools.count())
        self.script = client.register_script(SCRIPT)
        self.offset = 0.0  # this instance's wall clock minus Redis' clock, in seconds

    @classmethod
    def connect(cls, url: str, upstream_name: str, pace: Pace) -> SharedPace:
        # No client-side retries: a Redis that is down must cost a request one short wait.
        return cls(shared_redis.connect(url, REDIS_TIMEOUT, retries=False), upstream_name, pace)

    async def run(self, op: str, *extra) -> tuple[PaceState, float]:
        """The shared state after `op`, in this instance's clock, and the seconds to wait."""
        try:
            wait_ms, tokens, used, window_ms, pause_ms, now_ms = await self.script(
                keys=self.keys, args=[op, *self.args, *extra]
            )
        except shared_redis.ERRORS as e:
            raise SharedStateUnavailable(f"{type(e).__name__}: {e}") from None
        local_now = time.time()
        self.offset = local_now - int(now_ms) / 1000
        state = PaceState(
            tokens=float(tokens),
            at=local_now,
            window_start=int(window_ms) / 1000,  # UTC-aligned: the same window on every clock
            used=int(used),
            paused_until=int(pause_ms) / 1000 + self.offset if int(pause_ms) else 0.0,
            # None held: Redis holds the requests in hand, and this mirror serves to pace
            # this instance alone while Redis is away, starting with none.
        )
        return state, float(wait_ms) / 1000

    def name(self) -> str:
        """A name for the next request to take; it is held under it until `sent`."""
        return next(self.names)

    async def take(self, name: str) -> tuple[PaceState, float]:
        return await self.run("take", name)

    async def sent(self, name: str) -> PaceState:
        return (await self.run("sent", name))[0]

    async def give_back(self, name: str, window_start: float) -> PaceState:
        return (await self.run("give", name, round(window_start * 1000)))[0]

    async def pause(self, until: float) -> PaceState:
        return (await self.run("pause", round((until - self.offset) * 1000)))[0]

    async def resume(self) -> PaceState:
        """End the pause for every instance."""
        return (await self.run("resume"))[0]

    async def close(self) -> None:
        await self.client.aclose()
