"""Benchmark of aggregates and batch: what composing upstream requests costs, in one run.

    .venv/bin/python bench/compose.py [--requests N] [--concurrency C] [--duration S] [--batch-size B]

Starts a JSON upstream on loopback whose `/delay/{ms}` answers after that many milliseconds
(without blocking: many wait at once), and the real ambassador (./run.sh) in front of it with
an aggregate of three parts of known latency (50, 100 and 200 ms). It measures

1. aggregate latency, one request at a time, against its slowest part requested directly
   through the ambassador, and against the sum of the parts (what a sequential fan-out costs);
2. aggregates per second with C concurrent clients;
3. batch throughput: items per second in batches of B fast requests with C concurrent clients,
   next to the same fast request sent one by one with C concurrent clients.

Prints a Markdown table and one line `BENCH-RESULT {json}`. Not a test: read the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import Ambassador  # noqa: E402  (the tests' launcher of ./run.sh: reused, not copied)

PART_DELAYS_MS = (50, 100, 200)


def make_upstream() -> web.Application:
    async def delay(request: web.Request) -> web.Response:
        ms = int(request.match_info["ms"])
        await asyncio.sleep(ms / 1000)
        return web.json_response({"delay_ms": ms, "id": request.query.get("id")})

    app = web.Application()
    app.router.add_get("/delay/{ms:\\d+}", delay)
    return app


class UpstreamProcess:
    """The upstream in its own process (`compose.py upstream PORT`): in the load generator's
    process, the two would take turns at the GIL and measure each other."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> UpstreamProcess:
        self.proc = subprocess.Popen([sys.executable, __file__, "upstream", str(self.port)])
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the benchmark upstream did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def profile(upstream_port: int) -> str:
    parts = "\n".join(f"    p{ms}: legacy:/delay/{ms}?id={{id}}" for ms in PART_DELAYS_MS)
    return f"""
upstreams:
  legacy:
    url: http://127.0.0.1:{upstream_port}
    match: {{path_prefix: /legacy}}
aggregates:
  /dashboard/{{id}}:
{parts}
"""


def percentile(ordered: list[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else 0.0


async def sequential_latency(session: aiohttp.ClientSession, url: str, n: int) -> dict:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.get(url) as answer:
            await answer.read()
            assert answer.status == 200, answer.status
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {"p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1)}


async def throughput(session: aiohttp.ClientSession, send, concurrency: int, duration: float) -> dict:
    """Keep `concurrency` clients busy with `send()` (returns units done) for `duration` seconds."""
    done = 0
    failures = 0
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal done, failures
        while time.perf_counter() < deadline:
            try:
                units = await send(session)  # not `done += await ...`: that reads `done` before awaiting
                done += units
            except (AssertionError, aiohttp.ClientError, TimeoutError):
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"per_second": round(done / (time.perf_counter() - started), 1), "failures": failures}


async def measure(base: str, settings: argparse.Namespace) -> dict:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:
        # Warm up connections (ambassador to upstream included).
        await sequential_latency(session, "/dashboard/0", 3)
        aggregate = await sequential_latency(session, "/dashboard/1", settings.requests)
        slowest = await sequential_latency(session, f"/legacy/delay/{max(PART_DELAYS_MS)}?id=1", settings.requests)

        async def one_aggregate(s):
            async with s.get("/dashboard/2") as answer:
                await answer.read()
                assert answer.status == 200
            return 1

        items = [{"method": "GET", "path": f"/legacy/delay/0?id={n}"} for n in range(settings.batch_size)]
        batch_body = json.dumps(items).encode()

        async def one_batch(s):
            async with s.post("/_ambassador/batch", data=batch_body, headers={"Content-Type": "application/json"}) as answer:
                results = await answer.json()
                assert answer.status == 200 and all(r["status"] == 200 for r in results)
            return len(results)

        async def one_direct(s):
            async with s.get("/legacy/delay/0?id=1") as answer:
                await answer.read()
                assert answer.status == 200
            return 1

        aggregates = await throughput(session, one_aggregate, settings.concurrency, settings.duration)
        batch = await throughput(session, one_batch, settings.concurrency, settings.duration)
        direct = await throughput(session, one_direct, settings.concurrency, settings.duration)
    return {
        "aggregate_latency": aggregate,
        "slowest_part_latency": slowest,
        "sum_of_parts_ms": sum(PART_DELAYS_MS),
        "aggregates": aggregates,
        "batch_items": batch,
        "single_requests": direct,
    }


def markdown(result: dict, settings: argparse.Namespace) -> str:
    agg, slow = result["aggregate_latency"], result["slowest_part_latency"]
    rows = [
        f"Compose benchmark, {result['date']}, {platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| aggregate of parts {'/'.join(map(str, PART_DELAYS_MS))} ms, p50 / p99 | {agg['p50_ms']} / {agg['p99_ms']} ms |",
        f"| slowest part (200 ms) alone through the ambassador, p50 / p99 | {slow['p50_ms']} / {slow['p99_ms']} ms |",
        f"| aggregate overhead over its slowest part, p50 | {round(agg['p50_ms'] - slow['p50_ms'], 1)} ms |",
        f"| sum of the parts (a sequential fan-out) | {result['sum_of_parts_ms']} ms |",
        f"| aggregates/s, {settings.concurrency} clients | {result['aggregates']['per_second']} |",
        f"| batch items/s, batches of {settings.batch_size}, {settings.concurrency} clients | {result['batch_items']['per_second']} |",
        f"| single requests/s, {settings.concurrency} clients | {result['single_requests']['per_second']} |",
    ]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if argv[:1] == ["upstream"]:
        web.run_app(make_upstream(), host="127.0.0.1", port=int(argv[1]), print=None, access_log=None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="sequential requests for the latency figures")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput measure")
    parser.add_argument("--batch-size", type=int, default=20)
    settings = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, UpstreamProcess() as upstream:
        with Ambassador(Path(tmp), profile(upstream.port)) as amb:
            result = asyncio.run(measure(f"http://127.0.0.1:{amb.port}", settings))
    result["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(markdown(result, settings))
    print("BENCH-RESULT " + json.dumps(result))
    failures = sum(result[k]["failures"] for k in ("aggregates", "batch_items", "single_requests"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
