"""A pure-Python HTTP load generator, for when wrk is not installed (and for `--quick`).

    python bench/loadgen.py --connections 16 --duration 5 [--header 'Name: value'] URL

Keeps CONNECTIONS keep-alive connections busy for DURATION seconds, each sending the next
GET as soon as the previous answer is read (what wrk does), and prints one line
`BENCH-RESULT {json}` in the same shape as bench/report.lua does for wrk. Python's own cost
caps the rate it can drive far below wrk's, so its figures measure the proxies less sharply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter

import aiohttp


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def drive(url: str, connections: int, duration: float, headers: dict[str, str], timeout: float) -> dict:
    latencies: list[float] = []
    errors: Counter = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        started = time.perf_counter()
        deadline = started + duration

        async def worker() -> None:
            while (sent := time.perf_counter()) < deadline:
                try:
                    async with session.get(url, headers=headers, allow_redirects=False) as answer:
                        await answer.read()
                except TimeoutError:
                    errors["timeout"] += 1
                    continue
                except aiohttp.ClientConnectorError:
                    errors["connect"] += 1
                    continue
                except (aiohttp.ClientError, OSError):
                    errors["read"] += 1
                    continue
                latencies.append((time.perf_counter() - sent) * 1000)
                if answer.status >= 400:
                    errors["status"] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "duration_s": round(elapsed, 6),
        "errors": {kind: errors[kind] for kind in ("connect", "read", "write", "status", "timeout")},
        "latency_ms": {f"p{p}": round(percentile(latencies, p), 3) for p in (50, 90, 99)}
        | {"max": round(latencies[-1] if latencies else 0.0, 3)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    result = asyncio.run(drive(args.url, args.connections, args.duration, headers, args.timeout))
    print("BENCH-RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
