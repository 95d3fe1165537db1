"""Hedging benchmark: the slow tail of an upstream, with and without `hedge`.

    .venv/bin/python bench/hedge.py [--connections 8] [--duration 10] [--after 50ms]

An upstream in this process answers in 20 ms, except 5% of requests (chosen at random, each
request on its own, hedge copies included) which take 1 s. One real ambassador (`./run.sh`)
fronts it as two upstreams that differ only by `hedge: {after: AFTER}`; CONNECTIONS clients
send GETs back to back through each in turn for DURATION seconds. Reported per upstream: the
latency percentiles the clients saw and the requests that reached the upstream per answered
request (its load).

Exit status 0 when p99 with hedging is at most a fifth of p99 without, and the upstream load
with hedging at most 1.1 times the load without; 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from loadgen import drive  # noqa: E402  (bench/ is not a package)
from resilience import Ambassador  # noqa: E402

FAST, SLOW, SLOW_SHARE = 0.020, 1.0, 0.05


class Upstream:
    """Answers after FAST seconds, or SLOW for a SLOW_SHARE of requests; counts arrivals by
    the first path segment (which of the two upstreams of the profile sent it)."""

    def __init__(self, seed: int = 1) -> None:
        self.random = random.Random(seed)
        self.arrivals: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals[request.path.split("/")[1]] += 1
        await asyncio.sleep(SLOW if self.random.random() < SLOW_SHARE else FAST)
        return web.Response(text="ok\n")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def profile(upstream_url: str, after: str) -> str:
    return f"""
upstreams:
  plain:
    url: {upstream_url}/plain
    match: {{path_prefix: /plain}}
    timeout: 5s
  hedged:
    url: {upstream_url}/hedged
    match: {{path_prefix: /hedged}}
    timeout: 5s
    hedge: {{after: {after}, max: 1}}
"""


async def main(args: argparse.Namespace) -> int:
    upstream = Upstream()
    url = await upstream.start()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hedge.yaml"
        path.write_text(profile(url, args.after))
        with Ambassador(path, Path(folder)) as amb:
            base = f"http://127.0.0.1:{amb.port}"
            await drive(f"{base}/hedged/warm", args.connections, 1.0, {}, 10)  # connections up
            upstream.arrivals.clear()
            for name in ("plain", "hedged"):
                started = time.monotonic()
                load = await drive(f"{base}/{name}/x", args.connections, args.duration, {}, 10)
                load["upstream_requests"] = upstream.arrivals[name]
                load["upstream_load"] = round(upstream.arrivals[name] / max(1, load["requests"]), 3)
                load["wall_s"] = round(time.monotonic() - started, 1)
                results[name] = load
    plain, hedged = results["plain"], results["hedged"]
    summary = {
        "after": args.after,
        "connections": args.connections,
        "p99_ratio": round(hedged["latency_ms"]["p99"] / plain["latency_ms"]["p99"], 3),
        "load_ratio": round(hedged["upstream_load"] / plain["upstream_load"], 3),
    }
    print(json.dumps({"plain": plain, "hedged": hedged, "summary": summary}, indent=1))
    return 0 if summary["p99_ratio"] <= 0.2 and summary["load_ratio"] <= 1.1 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--after", default="50ms")
    sys.exit(asyncio.run(main(parser.parse_args())))
