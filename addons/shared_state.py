"""Breaker state shared by every ambassador instance through Redis (`state: redis://...`).

pybreaker's own `CircuitRedisStorage` is not usable for this: it reads and writes in separate
round trips (two instances can both take the last trial or both count from the same value),
keeps `opened_at` in whole seconds, does not namespace by breaker name, and resets the shared
failure counter whenever one instance merely notices a transition. Here each decision is one
Lua script, so it is atomic in Redis:

- `ADMIT` moves open -> half-open once `reset_timeout` has passed (Redis' own clock, in ms)
  and hands out at most `half_open_max` trial tickets across all instances;
- `RECORD` applies an outcome, or gives back a cancelled trial, only if the ticket's
  generation is still the current one (the same rule as the local `Breaker`);
- `FORCE` opens or closes it (admin commands);
- `READ` returns the state unchanged.

Nothing is written when an instance starts: a missing key reads as closed, so counters never
reset because an instance (re)starts. The key is `ambassador:{<upstream name>}:breaker`: the same
upstream name in any profile is the same partner service, and on a Redis Cluster the key sits in
the slot of that upstream's other keys.

Every instance keeps the last state it read for at most `FRESH_FOR`: while that is closed,
requests are admitted without a round trip, and successes cost none while no failures are
counted, so healthy traffic touches Redis about twice a second per upstream. When another
instance opens the breaker, this one sees it within `FRESH_FOR` plus a round trip.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pybreaker import STATE_CLOSED as CLOSED, STATE_HALF_OPEN as HALF_OPEN, STATE_OPEN as OPEN

from . import shared_redis
from .profile import BreakerPolicy

FRESH_FOR = 0.5  # seconds a state read from Redis is trusted while closed or open
# A request waits at most this long for Redis before the instance falls back to its local
# breaker; the fallback must cost requests little, so this is short.
REDIS_TIMEOUT = 0.5

# Shared prologue: the caller's view of the breaker hash, and Redis' clock in milliseconds.
_LOAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'state', 'gen', 'fails', 'opened', 'trials', 'since')
local state = b[1] or 'closed'
local gen = tonumber(b[2]) or 0
local fails = tonumber(b[3]) or 0
local opened = tonumber(b[4]) or 0
local trials = tonumber(b[5]) or 0
local since = tonumber(b[6]) or 0
local function reply(admitted)
  local wait = 0
  if state == 'open' then wait = math.max(0, opened + tonumber(ARGV[1]) - now) end
  return {state, gen, fails, admitted, wait}
end
"""

# ARGV: reset_timeout_ms
READ = _LOAD + "return reply(0)"

# ARGV: reset_timeout_ms, half_open_max, trial_lease_ms
ADMIT = _LOAD + """
if state == 'open' then
  if now < opened + tonumber(ARGV[1]) then return reply(0) end
  state = 'half-open'; gen = gen + 1; trials = 0; since = now
  redis.call('HSET', KEYS[1], 'state', state, 'gen', gen, 'trials', 0, 'since', now)
elseif state == 'half-open' and trials >= tonumber(ARGV[2]) and now >= since + tonumber(ARGV[3]) then
  -- the trials' outcomes never came (their instance stopped): start a new round of trials
  gen = gen + 1; trials = 0; since = now
  redis.call('HSET', KEYS[1], 'gen', gen, 'trials', 0, 'since', now)
end
if state == 'half-open' then
  if trials >= tonumber(ARGV[2]) then return reply(0) end
  trials = trials + 1
  redis.call('HSET', KEYS[1], 'trials', trials)
end
return reply(1)
"""

# ARGV: reset_timeout_ms, generation, outcome (success | failure | cancel), fail_max
RECORD = _LOAD + """
if tonumber(ARGV[2]) ~= gen then return reply(0) end
local outcome = ARGV[3]
if outcome == 'cancel' then
  if state == 'half-open' and trials > 0 then
    trials = trials - 1
    redis.call('HSET', KEYS[1], 'trials', trials)
  end
elseif state == 'closed' then
  if outcome == 'failure' then
    fails = fails + 1
    if fails >= tonumber(ARGV[4]) then
      state = 'open'; gen = gen + 1; opened = now
      redis.call('HSET', KEYS[1], 'state', state, 'gen', gen, 'fails', fails, 'opened', now, 'trials', 0)
    else
      redis.call('HSET', KEYS[1], 'fails', fails)
    end
  elseif fails > 0 then
    fails = 0
    redis.call('HSET', KEYS[1], 'fails', 0)
  end
elseif state == 'half-open' then
  gen = gen + 1; trials = 0
  if outcome == 'failure' then
    state = 'open'; opened = now
    redis.call('HSET', KEYS[1], 'state', state, 'gen', gen, 'opened', now, 'trials', 0)
  else
    state = 'closed'; fails = 0
    redis.call('HSET', KEYS[1], 'state', state, 'gen', gen, 'fails', 0, 'trials', 0)
  end
end
return reply(0)
"""

# ARGV: reset_timeout_ms, state (open | closed)
FORCE = _LOAD + """
state = ARGV[2]; gen = gen + 1; fails = 0; opened = now
redis.call('HSET', KEYS[1], 'state', state, 'gen', gen, 'fails', 0, 'opened', now, 'trials', 0)
return reply(0)
"""


class SharedStateUnavailable(Exception):
    """Redis could not be asked; the caller falls back to its local breaker."""


@dataclass
class View:
    """The breaker state as last read from Redis."""

    state: str = CLOSED
    generation: int = 0
    failures: int = 0
    half_open_at: float = 0.0  # time.monotonic() at which an open breaker admits trials
    read_at: float = float("-inf")  # time.monotonic() of the read


class SharedBreakerState:
    """One upstream's breaker in Redis. Raises SharedStateUnavailable when Redis fails."""

    def __init__(
        self, client: shared_redis.Client, upstream_name: str, policy: BreakerPolicy, trial_lease: float, url: str | None = None
    ):
        self.client = client
        # A failover URL's breaker is a key of its own, in the slot of its upstream's keys.
        self.key = shared_redis.upstream_keys(upstream_name) + ("breaker" if url is None else f"breaker@{url}")
        self.policy = policy
        self.reset_ms = round(policy.reset_timeout * 1000)
        self.lease_ms = round(trial_lease * 1000)
        self.view = View()
        self.reading: asyncio.Task | None = None
        self.scripts = {name: client.register_script(source) for name, source in
                        (("read", READ), ("admit", ADMIT), ("record", RECORD), ("force", FORCE))}

    @classmethod
    def connect(
        cls, url: str, upstream_name: str, policy: BreakerPolicy, trial_lease: float, failover_url: str | None = None
    ) -> SharedBreakerState:
        # No client-side retries: a Redis that is down must cost a request one short wait.
        return cls(shared_redis.connect(url, REDIS_TIMEOUT, retries=False), upstream_name, policy, trial_lease, failover_url)

    @property
    def state(self) -> str:
        return self.view.state

    def seconds_until_half_open(self) -> float:
        return self.view.half_open_at - time.monotonic()

    async def admit(self) -> tuple[int, bool] | None:
        """Admission: (generation, is a trial), or None when refused."""
        if time.monotonic() - self.view.read_at >= FRESH_FOR:
            await self.refresh()
        view = self.view
        if view.state == CLOSED:
            return view.generation, False
        if view.state == OPEN and view.half_open_at > time.monotonic():
            return None
        admitted = await self.run("admit", self.policy.half_open_max, self.lease_ms)
        if not admitted:
            return None
        return self.view.generation, self.view.state == HALF_OPEN

    async def record(self, generation: int, trial: bool, failed: bool) -> None:
        if not failed and not trial and self.view.failures == 0 and generation == self.view.generation:
            return  # nothing to reset: healthy traffic costs no round trip
        await self.run("record", generation, "failure" if failed else "success", self.policy.fail_max)

    async def release(self, generation: int) -> None:
        """Give back a trial that ended without an outcome."""
        await self.run("record", generation, "cancel", self.policy.fail_max)

    async def force(self, state: str) -> None:
        await self.run("force", state)

    async def refresh(self) -> None:
        """Read the state; concurrent callers share one read."""
        if self.reading is None or self.reading.done():
            self.reading = asyncio.get_running_loop().create_task(self.run("read"))
        await asyncio.shield(self.reading)

    def refresh_soon(self) -> None:
        """Start a read in the background if the view is stale (Redis errors are ignored here)."""
        if time.monotonic() - self.view.read_at >= FRESH_FOR and (self.reading is None or self.reading.done()):
            self.reading = asyncio.get_running_loop().create_task(self.run("read"))
            self.reading.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def run(self, script: str, *args) -> bool:
        """Run a script; updates the view and returns whether it admitted the request."""
        try:
            state, generation, failures, admitted, wait_ms = await self.scripts[script](
                keys=[self.key], args=[self.reset_ms, *args]
            )
        except shared_redis.ERRORS as e:
            raise SharedStateUnavailable(f"{type(e).__name__}: {e}") from None
        now = time.monotonic()
        self.view = View(state.decode(), int(generation), int(failures), now + int(wait_ms) / 1000, now)
        return bool(admitted)

    async def close(self) -> None:
        await self.client.aclose()
