"""Pacing benchmark: how exactly `limit` paces, alone and shared, and what it costs.

    .venv/bin/python bench/limit.py [--requests 200]

1. Precision. REQUESTS concurrent requests through a real ambassador with
   `limit: {rate: 50/s, burst: 5}` to an upstream that notes when each arrives. Reported: the
   most arrivals in any one-second window (must be at most 55: rate plus burst); and how long
   from the first request reaching the upstream to the last answer, against the ideal
   (REQUESTS - burst) / rate (3.9 s for 200; must be within 10%). The clients' connections
   are open beforehand (an app's keep-alive pool). Before the first request reaches the
   upstream, mitmproxy takes in all REQUESTS at once, a few hundred milliseconds here (bare
   mitmdump alike): reported as `first_arrival_s`, and `last_finished_s` counts from the
   clients' sending.
2. The same with two ambassadors sharing a real redis-server (`state: redis://...`), the
   requests split between them.
3. The stage's own cost, in-process: microseconds per request that a `limit` which never
   binds adds around an upstream that answers at once. Its cost in throughput, against the
   same profile without it, is a configuration of bench/run.py's ratio table
   (`--only limit-never-binds`; must be at least 0.95).

Exit status 0 when every "must" held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from multidict import CIMultiDict

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]
from harness import Ambassador, FakeUpstream, Reply  # noqa: E402  (tests/ is not a package)
from redis_server import RedisServer  # noqa: E402

from addons.exchange import UpstreamRequest, UpstreamResponse  # noqa: E402
from addons.limit import LimitStage  # noqa: E402
from addons.profile import LimitPolicy  # noqa: E402

RATE, BURST = 50, 5


class Arrivals:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, req) -> Reply:
        with self.lock:
            self.times.append(time.monotonic())
        return Reply(200, body=b"ok")


def profile(url: str, limit: str | None, state: str | None = None) -> str:
    text = f"state: {state}\n" if state else ""
    text += f"upstreams:\n  paced:\n    url: {url}\n    match: {{path_prefix: /paced}}\n    timeout: 30s\n"
    return text + (f"    limit: {limit}\n" if limit else "")


def most_in_one_second(times: list[float]) -> int:
    ordered = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - 1:
            first += 1
        most = max(most, last - first + 1)
    return most


async def burst_of(ports: list[int], count: int) -> tuple[float, float, list[int]]:
    """`count` requests at once over connections opened beforehand (an app's keep-alive pool):
    when they were sent and when the last answer came (time.monotonic()), and the statuses."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def get(i: int, path: str) -> int:
            async with session.get(f"http://127.0.0.1:{ports[i % len(ports)]}{path}") as answer:
                await answer.read()
                return answer.status

        await asyncio.gather(*(get(i, "/_ambassador/health") for i in range(count)))
        started = time.monotonic()
        statuses = await asyncio.gather(*(get(i, f"/paced/{i}") for i in range(count)))
        return started, time.monotonic(), statuses

def precision(folder: Path, requests: int, shared: bool) -> dict:
    arrivals = Arrivals()
    limit = f"{{rate: {RATE}/s, burst: {BURST}, queue: {requests}, max_wait: 20s}}"
    with FakeUpstream(arrivals) as upstream:
        if shared:
            with RedisServer(folder) as redis:
                text = profile(upstream.url, limit, redis.url)
                (folder / "a").mkdir()
                (folder / "b").mkdir()
                with Ambassador(folder / "a", text) as a, Ambassador(folder / "b", text) as b:
                    started, done, statuses = asyncio.run(burst_of([a.port, b.port], requests))
        else:
            with Ambassador(folder, profile(upstream.url, limit)) as a:
                started, done, statuses = asyncio.run(burst_of([a.port], requests))
    ideal = (requests - BURST) / RATE
    most = most_in_one_second(arrivals.times)
    first_arrival = min(arrivals.times)
    paced = done - first_arrival
    return {
        "instances": 2 if shared else 1,
        "answered_200": statuses.count(200),
        "most_in_one_second": most,
        "first_arrival_s": round(first_arrival - started, 3),
        "last_finished_s": round(done - started, 3),
        "paced_s": round(paced, 3),
        "ideal_s": ideal,
        "off_by": f"{(paced - ideal) / ideal:+.1%}",
        "ok": most <= RATE + BURST and abs(paced - ideal) <= 0.1 * ideal and statuses.count(200) == requests,
    }


async def stage_microseconds(count: int = 50000) -> float:
    """What LimitStage adds per request when it never binds, in microseconds."""
    answer = UpstreamResponse(200, "OK", CIMultiDict())

    async def upstream(request: UpstreamRequest) -> UpstreamResponse:
        return answer

    stage = LimitStage("bench", LimitPolicy(rate=1e9, burst=10**9, concurrency=10**6), lambda request: float("inf"))
    request = UpstreamRequest("GET", "/x", CIMultiDict())
    timings = {}
    for name, call in (("bare", upstream), ("limit", lambda r: stage(r, upstream))):
        started = time.perf_counter()
        for _ in range(count):
            await call(request)
        timings[name] = (time.perf_counter() - started) / count * 1e6
    return round(timings["limit"] - timings["bare"], 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "one").mkdir()
        (folder / "two").mkdir()
        report = {
            "precision": precision(folder / "one", args.requests, shared=False),
            "precision_shared": precision(folder / "two", args.requests, shared=True),
            "stage_us_per_request": asyncio.run(stage_microseconds()),
        }
    print(json.dumps(report, indent=2))
    return 0 if report["precision"]["ok"] and report["precision_shared"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
