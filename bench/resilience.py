"""Resilience benchmark: the breaker and retries of a real ambassador under concurrent load.

    .venv/bin/python bench/resilience.py [--connections 16] [--rounds 3] [--duration 3]

1. Scenario. An upstream that is healthy, then fails (503), then hangs (answers after the
   timeout), then recovers, while CONNECTIONS clients keep sending requests through an
   upstream with `breaker` and `retry`. Reported: time to trip (failures start -> first
   `circuit_open` answer), requests that reached the upstream while the breaker was open (must
   be 0), requests per half-open period (must be `half_open_max`), time to recover (upstream
   healthy again -> first 200).
2. Overhead. Healthy traffic through two ambassadors in front of the same upstream server,
   whose profiles differ only by breaker and retry, alternating round after round in the
   same run: requests/s and latency of each, and their ratio. On a shared machine that ratio
   is noisy, so the stages' own cost is also measured in-process: microseconds per request
   that the retry and breaker stages add around an upstream that answers at once.

How requests are attributed to breaker states: the ambassador logs each state change; this
script stamps every log line and every upstream arrival with its own monotonic clock. An
arrival more than GRACE after an "-> open" line and before the next "-> half-open" line
reached the upstream while open; an arrival between "-> half-open" (minus GRACE: the log line
can trail the trial on a busy machine) and the next change is a trial of that period. GRACE
covers requests admitted just before the breaker opened that were still on their way.

Exit status 0 when the scenario met its two "must" conditions, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from loadgen import drive  # noqa: E402  (bench/ is not a package)

from addons.breaker import BreakerStage  # noqa: E402
from addons.exchange import UpstreamRequest, UpstreamResponse  # noqa: E402
from addons.profile import BreakerPolicy, RetryPolicy  # noqa: E402
from addons.retry import RetryStage  # noqa: E402

FAIL_MAX = 5
RESET_TIMEOUT = 2.0
HALF_OPEN_MAX = 1
TIMEOUT = 1.0
GRACE = 0.05
TRANSITION_RE = re.compile(r"upstream (\w+): circuit breaker (\S+) -> (\S+)")

def profile(upstream_url: str, resilient: bool) -> str:
    """One upstream, `partner`; with breaker and retry or without, otherwise the same."""
    text = f"""
upstreams:
  partner:
    url: {upstream_url}
    match: {{path_prefix: /partner}}
    timeout: {TIMEOUT:g}s
"""
    if resilient:
        text += f"""    breaker: {{fail_max: {FAIL_MAX}, reset_timeout: {RESET_TIMEOUT:g}s, half_open_max: {HALF_OPEN_MAX}}}
    retry: {{attempts: 3, backoff: 50ms}}
"""
    return text


class Upstream:
    """The partner service, in this process: its behaviour is switched by the scenario."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | fail | hang
        self.arrivals: list[float] = []  # monotonic times of the scenario's requests

    async def handle(self, request: web.Request) -> web.Response:
        if request.path.startswith("/scenario"):
            self.arrivals.append(time.monotonic())
            if self.mode == "fail":
                return web.Response(status=503, text="down\n")
            if self.mode == "hang":
                await asyncio.sleep(TIMEOUT * 3)
        return web.Response(text="ok\n")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


class Ambassador:
    """./run.sh PROFILE as a subprocess; every output line stamped when read."""

    def __init__(self, profile: Path, confdir: Path) -> None:
        # flow_detail=0: no line per flow (the breaker logs its state changes at warning level).
        self.argv = [str(ROOT / "run.sh"), str(profile), "--listen-port", "0", "--set", f"confdir={confdir}", "--set", "flow_detail=0"]
        self.lines: list[tuple[float, str]] = []
        self.listening = threading.Event()
        self.port = 0

    def __enter__(self) -> Ambassador:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self.read, daemon=True).start()
        if not self.listening.wait(60):
            raise SystemExit("the ambassador did not start:\n" + "\n".join(line for _, line in self.lines))
        return self

    def read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
            if m := re.search(r"listening at 127\.0\.0\.1:(\d+)", line):
                self.port = int(m.group(1))
                self.listening.set()

    def transitions(self, upstream: str) -> list[tuple[float, str]]:
        return [(at, m.group(3)) for at, line in list(self.lines) if (m := TRANSITION_RE.search(line)) and m.group(1) == upstream]

    def __exit__(self, *exc) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


@dataclass
class Load:
    """CONNECTIONS clients sending GETs back to back; every answer kept as (time, status, reason)."""

    url: str
    connections: int
    answers: list[tuple[float, int, str | None]] = field(default_factory=list)
    running: bool = True

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await asyncio.gather(*(self.client(session) for _ in range(self.connections)))

    async def client(self, session: aiohttp.ClientSession) -> None:
        while self.running:
            try:
                async with session.get(self.url) as answer:
                    body = await answer.read()
            except (aiohttp.ClientError, TimeoutError) as e:
                self.answers.append((time.monotonic(), 0, type(e).__name__))
                continue
            reason = json.loads(body).get("reason") if answer.content_type == "application/json" else None
            self.answers.append((time.monotonic(), answer.status, reason))

    def first(self, after: float, matches) -> float | None:
        return next((at for at, status, reason in self.answers if at >= after and matches(status, reason)), None)


async def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("the scenario did not reach its next step in time")
        await asyncio.sleep(0.01)


async def scenario(amb: Ambassador, upstream: Upstream, connections: int) -> dict:
    load = Load(f"http://127.0.0.1:{amb.port}/partner/scenario", connections)
    running = asyncio.get_running_loop().create_task(load.run())
    await asyncio.sleep(1.0)  # healthy traffic

    upstream.mode = "fail"
    failing_since = time.monotonic()
    await wait_for(lambda: load.first(failing_since, lambda s, r: r == "circuit_open"), 30)
    tripped = load.first(failing_since, lambda s, r: r == "circuit_open")
    # One half-open period while still failing, one while hanging, then recovery.
    await wait_for(lambda: sum(1 for _, s in amb.transitions("partner") if s == "half-open") >= 1
                   and amb.transitions("partner")[-1][1] == "open", 30)
    upstream.mode = "hang"
    await wait_for(lambda: sum(1 for _, s in amb.transitions("partner") if s == "half-open") >= 2
                   and amb.transitions("partner")[-1][1] == "open", 30)
    upstream.mode = "ok"
    healthy_since = time.monotonic()
    await wait_for(lambda: load.first(healthy_since, lambda s, r: s == 200), 30)
    recovered = load.first(healthy_since, lambda s, r: s == 200)
    await asyncio.sleep(0.5)
    load.running = False
    await running

    changes = amb.transitions("partner")
    windows = []  # (state, start, end)
    for (at, state), (next_at, _) in zip(changes, changes[1:] + [(float("inf"), "")]):
        windows.append((state, at, next_at))
    while_open = [t for t in upstream.arrivals
                  if any(state == "open" and start + GRACE < t < end - GRACE for state, start, end in windows)]
    trials = [sum(1 for t in upstream.arrivals if start - GRACE <= t < end) for state, start, end in windows if state == "half-open"]
    return {
        "connections": connections,
        "answers": len(load.answers),
        "time_to_trip_s": round(tripped - failing_since, 3),
        "reached_upstream_while_open": len(while_open),
        "requests_per_half_open_period": trials,
        "half_open_max": HALF_OPEN_MAX,
        "time_to_recover_s": round(recovered - healthy_since, 3),
        "transitions": [state for _, state in changes],
    }


async def retries_sent(amb: Ambassador) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{amb.port}/_ambassador/metrics") as answer:
            text = await answer.text()
    prefix = 'ambassador_retries_total{upstream="partner"}'
    return sum(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith(prefix))


async def overhead(ambassadors: dict[str, Ambassador], connections: int, rounds: int, duration: float) -> dict:
    """The same healthy load on two ambassadors whose profiles differ only by breaker and retry.

    Two processes rather than two upstreams of one profile: within one process, measured
    throughput depends on an upstream's place in the profile by more than the stages cost.
    """
    results: dict[str, list[dict]] = {name: [] for name in ambassadors}
    retries_before = await retries_sent(ambassadors["guarded"])
    for round_ in range(rounds):
        # ABBA order, so that a machine getting busier or quieter favours neither.
        for name in ("bare", "guarded") if round_ % 2 == 0 else ("guarded", "bare"):
            run = await drive(f"http://127.0.0.1:{ambassadors[name].port}/partner/healthy", connections, duration, {}, 10)
            run["requests_per_s"] = run["requests"] / run["duration_s"]
            results[name].append(run)
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "requests_per_s": round(statistics.median(r["requests_per_s"] for r in runs), 1),
            "p50_ms": round(statistics.median(r["latency_ms"]["p50"] for r in runs), 3),
            "p99_ms": round(statistics.median(r["latency_ms"]["p99"] for r in runs), 3),
            "failed": sum(sum(r["errors"].values()) for r in runs),
        }
    # Retries on healthy traffic would mean tries timing out on the machine's own delays.
    summary["guarded"]["retries"] = await retries_sent(ambassadors["guarded"]) - retries_before
    summary["throughput_ratio"] = round(summary["guarded"]["requests_per_s"] / summary["bare"]["requests_per_s"], 3)
    summary["rounds"], summary["duration_s"] = rounds, duration
    return summary


async def stage_cost(requests: int = 20000) -> dict:
    """Microseconds per request of retry + breaker around an upstream that answers at once."""
    answer = UpstreamResponse(200, "OK", CIMultiDict())

    async def upstream(request: UpstreamRequest) -> UpstreamResponse:
        return answer

    retry = RetryStage("bench", RetryPolicy(), lambda r: r.started + 30)
    breaker = BreakerStage("bench", BreakerPolicy())

    async def guarded(request: UpstreamRequest) -> UpstreamResponse:
        return await retry(request, lambda r: breaker(r, upstream))

    costs = {}
    for name, handler in (("bare", upstream), ("guarded", guarded)):
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(requests):
                await handler(UpstreamRequest("GET", "/x", CIMultiDict()))
            best = min(best, (time.perf_counter() - started) / requests * 1e6)
        costs[name] = best
    return {"added_us_per_request": round(costs["guarded"] - costs["bare"], 2), "bare_us_per_request": round(costs["bare"], 2)}


async def main(args: argparse.Namespace) -> int:
    upstream = Upstream()
    url = await upstream.start()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def started(name: str, resilient: bool) -> Ambassador:
            (folder / name).mkdir()
            (folder / name / "profile.yaml").write_text(profile(url, resilient))
            return Ambassador(folder / name / "profile.yaml", folder / name)

        with started("scenario", True) as amb:
            report = {"scenario": await scenario(amb, upstream, args.connections)}
        with started("bare", False) as bare, started("guarded", True) as guarded:
            report["overhead"] = await overhead({"bare": bare, "guarded": guarded}, args.connections, args.rounds, args.duration)
    report["overhead"]["stages_in_process"] = await stage_cost()
    await upstream.runner.cleanup()
    print(json.dumps(report, indent=1))
    s = report["scenario"]
    ok = s["reached_upstream_while_open"] == 0 and all(n == HALF_OPEN_MAX for n in s["requests_per_half_open_period"])
    print("scenario:", "PASS" if ok else "FAIL", "(0 requests while open, half_open_max per half-open period)")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="alternating overhead rounds")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per overhead round")
    sys.exit(asyncio.run(main(parser.parse_args())))
