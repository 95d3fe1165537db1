"""The benchmark: the ambassador against bare mitmdump, on loopback, in one run.

    .venv/bin/python bench/run.py [--duration S] [--rounds N] [--only NAME]... [--quick]

Each configuration in CONFIGURATIONS compares the ambassador (the candidate) with a reference
mitmdump in front of the same upstream, under the same load. Each round measures each side
alone, alternating which goes first (ABBA), for requests/s and latency; then both at once on
the one CPU they are pinned to (paired), where whatever slows the machine down slows both
alike. The paired ratio is the one held against the configuration's target: on a shared
machine the alone runs' ratio drifts by tens of percent from round to round (docs/benchmarks.md).
It prints a Markdown table (date, machine, versions, requests/s, p50/p99, both ratios with their
spread, pass/fail) and writes bench/results/latest.json.

Exit status: 0 when every configuration that could run was measured without failed requests
(whether it met its target or not: read the table), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from upstream import CACHEABLE, TOKEN  # bench/upstream.py: the Python upstream serves what nginx serves

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

RESULTS = BENCH / "results" / "latest.json"
VENV = ROOT / ".venv"
MITMDUMP = VENV / "bin" / "mitmdump"  # the reference runs the very mitmproxy the ambassador runs
REPORT_LUA = BENCH / "report.lua"
SLOW_DELAY = 0.2  # seconds the slow upstream waits before each answer
ANSWER_FILE = "answer.json"  # the upstream's answer, for the answer-from-memory reference
BODY = (b'{"id": 42, "name": "ACME Widgets Ltd", "status": "active", "balance": "1234.56"}\n' * 13)[:1024]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 60.0  # two cores shared with other work: mitmproxy can take a while to start


class BenchError(Exception):
    """A configuration could not be measured (a process failed to start, a request failed)."""


# --- what is compared ------------------------------------------------------------------------


@dataclass(frozen=True)
class BareMitmdump:
    """mitmdump in reverse mode in front of the upstream: the reference."""

    label: str = "bare mitmdump"
    path: str = "/file"
    script: Path | None = None  # an addon for mitmdump -s (the answer-from-memory reference)
    answer_from: str = ""  # the upstream path whose answer the script serves (saved first, see save_answer)
    headers: tuple[tuple[str, str], ...] = ()  # what the client must send itself (the ambassador adds auth)

    def argv(self, upstream_url: str, port: int, workdir: Path) -> list[str]:
        argv = [str(MITMDUMP), "--mode", f"reverse:{upstream_url}", "-q", "--listen-host", "127.0.0.1",
                "--listen-port", str(port), "--set", "connection_strategy=lazy", "--set", f"confdir={workdir / 'conf'}"]
        if self.script:
            argv += ["-s", str(self.script), "--set", f"bench_answer={workdir / ANSWER_FILE}"]
        return argv


@dataclass(frozen=True)
class Ambassador:
    """The ambassador through ./run.sh with `profile` ({upstream} stands for the upstream's URL)."""

    profile: str
    label: str = "ambassador"
    path: str = "/api/file"
    headers: tuple[tuple[str, str], ...] = ()

    def profile_file(self, upstream_url: str, workdir: Path) -> Path:
        path = workdir / "profile.yaml"
        path.write_text(self.profile.replace("{upstream}", upstream_url))
        return path

    def argv(self, upstream_url: str, port: int, workdir: Path) -> list[str]:
        return [str(ROOT / "run.sh"), str(self.profile_file(upstream_url, workdir)), "-q",
                "--listen-port", str(port), "--set", f"confdir={workdir / 'conf'}"]


@dataclass(frozen=True)
class Configuration:
    name: str
    about: str
    upstream: str  # "fast" (nginx, or its Python stand-in) or "slow" (SLOW_DELAY per answer)
    connections: int
    target: float  # the least paired candidate/reference ratio of requests per second that passes
    reference: BareMitmdump | Ambassador
    candidate: Ambassador
    needs: frozenset[str] = frozenset()  # pipeline stages the candidate's profile must build


ROUTING_ONLY = """
upstreams:
  bench:
    url: {upstream}
    match: {path_prefix: /api}
"""

ALL_RESILIENCE = f"""
upstreams:
  bench:
    url: {{upstream}}/private
    match: {{path_prefix: /api}}
    auth: {{type: bearer, token: {TOKEN}}}
    cache: {{max_bytes: 64MB}}
    breaker: {{fail_max: 5, reset_timeout: 30s}}
    retry: {{attempts: 3, backoff: 100ms}}
"""

CACHED = """
upstreams:
  bench:
    url: {upstream}/cacheable
    match: {path_prefix: /api}
    cache: {ttl: 1h}
"""

# Every request takes a token, holds its place until written and counts against concurrency,
# yet never waits: what pacing costs an upstream that is not at its limit.
LIMIT_NEVER_BINDS = ROUTING_ONLY + "    limit: {rate: 1000000/s, burst: 1000000, concurrency: 100000}\n"

CONFIGURATIONS = [
    Configuration(
        "routing-only", "routing-only profile vs bare mitmdump, fast upstream (nginx serving a 1 KiB file)",
        upstream="fast", connections=16, target=0.90,
        reference=BareMitmdump(), candidate=Ambassador(ROUTING_ONLY),
    ),
    Configuration(
        "all-resilience", "auth (bearer) + cache (the upstream answers no-store) + breaker + retry vs bare mitmdump, fast upstream",
        upstream="fast", connections=16, target=0.85,
        reference=BareMitmdump(path="/private/file", headers=(("Authorization", f"Bearer {TOKEN}"),)),
        candidate=Ambassador(ALL_RESILIENCE),
        needs=frozenset({"auth", "cache", "breaker", "retry"}),
    ),
    Configuration(
        "cache-hits", "cache hits vs a bare mitmdump addon answering from memory (bench/answer_from_memory.py)",
        upstream="fast", connections=16, target=0.95,
        reference=BareMitmdump("mitmdump + memory addon", script=BENCH / "answer_from_memory.py", answer_from="/cacheable/file"),
        candidate=Ambassador(CACHED),
        needs=frozenset({"cache"}),
    ),
    Configuration(
        "limit-never-binds", "routing + a `limit` that never binds vs the same profile without it, fast upstream",
        upstream="fast", connections=16, target=0.95,
        reference=Ambassador(ROUTING_ONLY, label="ambassador without limit", path="/api/file"),
        candidate=Ambassador(LIMIT_NEVER_BINDS),
        needs=frozenset({"limit"}),
    ),
    Configuration(
        "slow-upstream", f"routing-only profile vs bare mitmdump, upstream answering after {SLOW_DELAY * 1000:.0f} ms, 100 clients",
        upstream="slow", connections=100, target=0.90,
        reference=BareMitmdump(), candidate=Ambassador(ROUTING_ONLY),
    ),
]


def missing_stages(config: Configuration, workdir: Path) -> list[str]:
    """The stages `config` needs that the ambassador's pipeline does not build yet."""
    if not config.needs:
        return []
    from addons.gateway import Gateway
    from addons.profile import load_profile

    async def built() -> set[str]:
        gateway = Gateway(load_profile(config.candidate.profile_file("http://127.0.0.1:9", workdir)))
        try:
            return {stage.name for service in gateway.services.values() for stage in service.stages}
        finally:
            for service in gateway.services.values():
                await service.close()

    return sorted(config.needs - asyncio.run(built()))


# --- the tools on this machine ---------------------------------------------------------------


def find_command(command: str) -> str | None:
    return shutil.which(command, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def find_or_install(command: str, package: str, notes: list[str]) -> str | None:
    """`command`, installed from Debian's `package` with apt-get when missing (as root)."""
    if found := find_command(command):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        notes.append(f"{command} is not installed and cannot be installed here (needs root and apt-get)")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", package]
    print(f"bench: {command} not found, installing: {' '.join(install)}", file=sys.stderr)
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        print("bench: retrying after apt-get update", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last_line = (done.stderr.strip().splitlines() or ["no message"])[-1]
            notes.append(f"installing {package} with apt-get failed: {last_line}")
    return find_command(command)


@dataclass
class Tools:
    wrk: str | None
    nginx: str | None
    pinning: tuple[str, str] | None  # taskset CPU lists: (proxies, load generator and upstreams)
    notes: list[str]

    @classmethod
    def find(cls, load_generator: str, upstream_server: str, install: bool) -> Tools:
        notes: list[str] = []
        locate = (lambda cmd, pkg: find_or_install(cmd, pkg, notes)) if install else (lambda cmd, pkg: find_command(cmd))
        wrk = locate("wrk", "wrk") if load_generator == "auto" else None
        nginx = locate("nginx", "nginx-light") if upstream_server == "auto" else None
        if not wrk:
            notes.append("load generator: bench/loadgen.py (pure Python) instead of wrk; it saturates well below "
                         "wrk, so its figures say less about the proxies")
        if not nginx:
            notes.append("fast upstream: bench/upstream.py (aiohttp) instead of nginx")
        cpus = sorted(os.sched_getaffinity(0))
        pinning = None
        if len(cpus) >= 2 and shutil.which("taskset"):
            pinning = (str(cpus[0]), ",".join(map(str, cpus[1:])))
        else:
            notes.append("no pinning: needs taskset and two CPUs; proxies, load and upstream share the CPUs")
        return cls(wrk, nginx, pinning, notes)

    def pinned(self, argv: list[str], role: int) -> list[str]:
        """`argv` under taskset: role 0 for the proxies, 1 for the load generator and upstreams."""
        return ["taskset", "-c", self.pinning[role], *argv] if self.pinning else argv


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A process in its own session, logging to a file; stopped with its whole group."""

    def __init__(self, name: str, argv: list[str], log: Path):
        self.name = name
        self.argv = argv
        self.log = log

    def __enter__(self) -> Server:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=ROOT)
        return self

    def wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.proc.returncode}) while starting:\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            time.sleep(0.05)
        raise BenchError(f"{self.name} not listening on port {port} after {START_TIMEOUT:g}s:\n{self.output()}")

    def cpu_seconds(self) -> float:
        """CPU time the process has used (user + system). run.sh and taskset exec the proxy itself."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def state(self) -> str:
        if self.proc.poll() is None:
            return f"{self.name} is running"
        return f"{self.name} exited ({self.proc.returncode}):\n{self.output()}"

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location = /file {{ }}
        location = /cacheable/file {{
            alias {www}/file;
            add_header Cache-Control "{cacheable}";
        }}
        location = /private/file {{
            alias {www}/file;
            add_header Cache-Control "no-store";
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
        }}
    }}
}}
"""


def upstream_server(kind: str, tools: Tools, workdir: Path, body_file: Path) -> tuple[Server, int]:
    port = free_port()
    if kind == "fast" and tools.nginx:
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=workdir, port=port, www=body_file.parent, cacheable=CACHEABLE, token=TOKEN))
        argv = [tools.nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
        name = "nginx"
    else:
        delay = SLOW_DELAY if kind == "slow" else 0.0
        argv = [sys.executable, str(BENCH / "upstream.py"), "--port", str(port), "--file", str(body_file), "--delay", str(delay)]
        name = f"upstream.py (delay {delay:g}s)"
    return Server(name, tools.pinned(argv, 1), workdir / "upstream.log"), port


# --- load ------------------------------------------------------------------------------------


def drive(url: str, connections: int, duration: float, headers: tuple[tuple[str, str], ...], tools: Tools) -> dict:
    """One load run against `url`: requests, requests_per_s, errors, latency_ms (p50, p90, p99, max)."""
    if tools.wrk:
        argv = [tools.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(REPORT_LUA)]
        argv += [arg for name, value in headers for arg in ("-H", f"{name}: {value}")]
    else:
        argv = [sys.executable, str(BENCH / "loadgen.py"), "--connections", str(connections), "--duration", str(duration)]
        argv += [arg for name, value in headers for arg in ("--header", f"{name}: {value}")]
    done = subprocess.run(tools.pinned([*argv, url], 1), capture_output=True, text=True, timeout=duration + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH-RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"load generator failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    result = json.loads(line.removeprefix("BENCH-RESULT "))
    result["requests_per_s"] = round(result["requests"] / result["duration_s"], 1)
    return result


def save_answer(url: str, path: Path) -> None:
    """The upstream's answer at `url`, saved for answer_from_memory.py to give every request,
    without the fields of this fetch's connection (urllib asks for "close")."""
    from addons.fields import HOP_BY_HOP

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(url, timeout=30) as answer:
        fields = [(k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP]
        saved = {"status": answer.status, "headers": fields, "body": base64.b64encode(answer.read()).decode()}
    path.write_text(json.dumps(saved))


def check_answers(url: str, headers: tuple[tuple[str, str], ...], label: str) -> None:
    """One request before measuring: a proxy that answers errors would measure its error path."""
    request = urllib.request.Request(url, headers=dict(headers))
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, whatever http_proxy says
    try:
        with direct.open(request, timeout=30) as answer:
            body = answer.read()
    except urllib.error.HTTPError as e:
        raise BenchError(f"{label} at {url} answered {e.code}: {e.read()[:500]!r}") from None
    except OSError as e:
        raise BenchError(f"{label} at {url}: {e}") from None
    if body != BODY:
        raise BenchError(f"{label} at {url} answered 200 but not the upstream's file: {body[:200]!r}")


# --- one configuration -----------------------------------------------------------------------


def summarize(runs: list[dict]) -> dict:
    return {
        "requests_per_s": round(statistics.median(r["requests_per_s"] for r in runs), 1),
        "requests_per_cpu_s": round(statistics.median(r["requests_per_cpu_s"] for r in runs), 1),
        "cpu_share": round(statistics.median(r["cpu_share"] for r in runs), 2),
        "p50_ms": round(statistics.median(r["latency_ms"]["p50"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["latency_ms"]["p99"] for r in runs), 3),
        "errors": sum(sum(r["errors"].values()) for r in runs),
    }


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def drive_proxy(proxy: Server, url: str, config: Configuration, duration: float, side, tools: Tools) -> dict:
    """A load run, plus the CPU time the proxy spent on it: requests per CPU-second is what the
    proxy costs per request, which other work on the machine disturbs far less than req/s."""
    cpu_before = proxy.cpu_seconds()
    result = drive(url, config.connections, duration, side.headers, tools)
    cpu = max(proxy.cpu_seconds() - cpu_before, 1 / CLOCK_TICKS)
    result["proxy_cpu_s"] = round(cpu, 2)
    result["cpu_share"] = round(cpu / result["duration_s"], 2)  # of one CPU: below ~0.9 the proxy was waiting or crowded out
    result["requests_per_cpu_s"] = round(result["requests"] / cpu, 1)
    return result


def drive_paired(proxies: dict[str, Server], urls: dict[str, str], config: Configuration, duration: float, sides: dict, tools: Tools) -> dict:
    """Both sides under load at once: the proxies share the CPU they are pinned to, so each one's
    share of the requests shows what it costs per request, whatever else slows the machine."""
    with concurrent.futures.ThreadPoolExecutor(len(sides)) as pool:
        running = {role: pool.submit(drive_proxy, proxies[role], urls[role], config, duration, side, tools) for role, side in sides.items()}
        return {role: run.result() for role, run in running.items()}


def measure(config: Configuration, tools: Tools, settings: argparse.Namespace, workdir: Path, body_file: Path) -> dict:
    sides = {"reference": config.reference, "candidate": config.candidate}
    urls, proxies = {}, {}
    with contextlib.ExitStack() as running:
        server, port = upstream_server(config.upstream, tools, workdir, body_file)
        running.enter_context(server).wait_listening(port)
        upstream_url = f"http://127.0.0.1:{port}"
        for role, side in sides.items():
            side_dir = workdir / role
            side_dir.mkdir()
            if isinstance(side, BareMitmdump) and side.answer_from:
                save_answer(upstream_url + side.answer_from, side_dir / ANSWER_FILE)
            port = free_port()
            proxies[role] = Server(side.label, tools.pinned(side.argv(upstream_url, port, side_dir), 0), side_dir / "log")
            running.enter_context(proxies[role]).wait_listening(port)
            urls[role] = f"http://127.0.0.1:{port}{side.path}"
            check_answers(urls[role], side.headers, side.label)
        if settings.warmup:
            for role, side in sides.items():
                drive(urls[role], config.connections, settings.warmup, side.headers, tools)
        rounds = []
        for number in range(settings.rounds):
            order = list(sides) if number % 2 == 0 else list(sides)[::-1]  # ABBA: linear drift cancels
            try:
                runs = {role: drive_proxy(proxies[role], urls[role], config, settings.duration, sides[role], tools) for role in order}
                paired = drive_paired(proxies, urls, config, settings.duration, sides, tools)
            except BenchError as e:
                states = "\n".join(proxy.state() for proxy in [server, *proxies.values()])
                return {"status": "error", "detail": f"round {number + 1}: {e}\n{states}", "rounds": rounds}
            ref, cand = runs["reference"], runs["candidate"]
            rounds.append({
                "order": order, **runs, "paired": paired,
                "ratio": round(cand["requests_per_s"] / ref["requests_per_s"], 3),
                "cpu_ratio": round(cand["requests_per_cpu_s"] / ref["requests_per_cpu_s"], 3),
                "paired_ratio": round(paired["candidate"]["requests_per_s"] / paired["reference"]["requests_per_s"], 3),
            })
            print(f"bench: {config.name} round {number + 1}/{settings.rounds}: alone req/s {ref['requests_per_s']:.0f} vs "
                  f"{cand['requests_per_s']:.0f} (ratio {rounds[-1]['ratio']:.3f}); paired req/s "
                  f"{paired['reference']['requests_per_s']:.0f} vs {paired['candidate']['requests_per_s']:.0f} "
                  f"(ratio {rounds[-1]['paired_ratio']:.3f})", file=sys.stderr)
    summary = {
        "reference": summarize([r["reference"] for r in rounds]),
        "candidate": summarize([r["candidate"] for r in rounds]),
        "ratio": spread([r["ratio"] for r in rounds]),
        "cpu_ratio": spread([r["cpu_ratio"] for r in rounds]),
        "paired_ratio": spread([r["paired_ratio"] for r in rounds]),
    }
    failed = summary["reference"]["errors"] + summary["candidate"]["errors"]
    failed += sum(sum(r["paired"][role]["errors"].values()) for r in rounds for role in sides)
    if failed:
        return {"status": "error", "detail": f"{failed} requests failed (see rounds)", "rounds": rounds, "summary": summary}
    status = "pass" if summary["paired_ratio"]["median"] >= config.target else "fail"
    return {"status": status, "rounds": rounds, "summary": summary}


def run_configuration(config: Configuration, tools: Tools, settings: argparse.Namespace, tmp: Path, body_file: Path) -> dict:
    workdir = tmp / config.name
    workdir.mkdir()
    entry = {
        "name": config.name, "about": config.about, "connections": config.connections, "target": config.target,
        "reference": config.reference.label, "candidate": config.candidate.label,
    }
    print(f"bench: {config.name}: {config.about}", file=sys.stderr)
    try:
        if missing := missing_stages(config, workdir):
            return entry | {"status": "not yet", "detail": f"the ambassador has no {', '.join(missing)} stage yet"}
        result = measure(config, tools, settings, workdir, body_file)
    except BenchError as e:
        result = {"status": "error", "detail": str(e)}
    if result["status"] == "error":
        print(f"bench: {config.name}: {result['detail']}", file=sys.stderr)
    return entry | result


# --- the report ------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def tool_version(argv: list[str], pattern: str) -> str | None:
    done = subprocess.run(argv, capture_output=True, text=True)
    m = re.search(pattern, done.stdout + done.stderr)
    return m.group(1) if m else None


def versions(tools: Tools) -> dict:
    found = {"python": platform.python_version(), **{p: metadata.version(p) for p in ("mitmproxy", "aiohttp")}}
    if tools.wrk:
        found["wrk"] = tool_version([tools.wrk, "-v"], r"wrk (?:debian/)?([\d.]+)")
    if tools.nginx:
        found["nginx"] = tool_version([tools.nginx, "-v"], r"nginx/(\S+)")
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    found["ambassador"] = commit.stdout.strip() or None
    return found


def _spread(ratio: dict) -> str:
    return f"{ratio['median']:.2f} ({ratio['min']:.2f}–{ratio['max']:.2f})"


def markdown(report: dict) -> str:
    machine, settings, v = report["machine"], report["settings"], report["versions"]
    tools = ", ".join(f"{name} {v[name]}" for name in ("mitmproxy", "python", "aiohttp", "wrk", "nginx") if v.get(name))
    pinning = settings["pinning"]
    lines = [
        f"Benchmark of {report['date']} on {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, "
        f"load average {machine['load_average_start'][0]:.2f} at start; {tools}; ambassador {v['ambassador']}.",
        f"Load: {settings['load_generator']}; {settings['rounds']} rounds, each of {settings['duration_s']:g} s per side alone "
        f"(alternating, ABBA) and {settings['duration_s']:g} s of both at once (paired), after {settings['warmup_s']:g} s warm-up; "
        f"fast upstream: {settings['fast_upstream']}; "
        + (f"proxies pinned to CPU {pinning['proxies']}, load generator and upstreams to CPU {pinning['load']}." if pinning else "no CPU pinning."),
        "",
        "| configuration | clients | reference | req/s | p50 / p99 ms | ambassador req/s | p50 / p99 ms "
        "| ratio paired (spread) | ratio alone (spread) | target (paired) | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["configurations"]:
        if s := c.get("summary"):
            ref, cand = s["reference"], s["candidate"]
            lines.append(
                f"| {c['name']} | {c['connections']} | {c['reference']} | {ref['requests_per_s']:.0f} | "
                f"{ref['p50_ms']:.1f} / {ref['p99_ms']:.1f} | {cand['requests_per_s']:.0f} | {cand['p50_ms']:.1f} / {cand['p99_ms']:.1f} | "
                f"{_spread(s['paired_ratio'])} | {_spread(s['ratio'])} | ≥ {c['target']:.2f} | {c['status']} |"
            )
        else:
            lines.append(f"| {c['name']} | {c['connections']} | {c['reference']} | | | | | | | ≥ {c['target']:.2f} | {c['status']}: {c['detail'].splitlines()[0]} |")
    if settings["notes"]:
        lines += ["", *(f"- {note}" for note in settings["notes"])]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of each load run (default 4)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per configuration (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per side first (default 2)")
    parser.add_argument("--only", action="append", choices=[c.name for c in CONFIGURATIONS], help="run only this configuration (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a check that it all works, not a measurement: 1 s, 2 rounds, no warm-up, installs nothing")
    parser.add_argument("--load-generator", choices=("auto", "python"), default="auto", help="auto: wrk (installed if missing), else bench/loadgen.py")
    parser.add_argument("--upstream-server", choices=("auto", "python"), default="auto", help="auto: nginx (installed if missing), else bench/upstream.py")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"the JSON results (default {RESULTS.relative_to(ROOT)})")
    settings = parser.parse_args(argv)
    if settings.quick:
        settings.duration, settings.rounds, settings.warmup = 1.0, 2, 0.0
    if settings.duration <= 0 or settings.rounds < 1 or settings.warmup < 0:
        parser.error("--duration must be positive, --rounds at least 1, --warmup not negative")
    if Path(sys.prefix).resolve() != VENV.resolve() or not MITMDUMP.exists():
        parser.error("run me with the project's venv: .venv/bin/python bench/run.py (./run.sh check default creates it)")
    return settings


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    tools = Tools.find(settings.load_generator, settings.upstream_server, install=not settings.quick)
    for note in tools.notes:
        print(f"bench: {note}", file=sys.stderr)
    report = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(), "load_average_start": os.getloadavg()},
        "versions": versions(tools),
        "settings": {
            "duration_s": settings.duration, "rounds": settings.rounds, "warmup_s": settings.warmup,
            "load_generator": "wrk" if tools.wrk else "bench/loadgen.py",
            "fast_upstream": "nginx" if tools.nginx else "bench/upstream.py",
            "pinning": {"proxies": tools.pinning[0], "load": tools.pinning[1]} if tools.pinning else None,
            "notes": tools.notes,
        },
    }
    selected = [c for c in CONFIGURATIONS if not settings.only or c.name in settings.only]
    with tempfile.TemporaryDirectory(prefix="ambassador-bench-") as tmp:
        body_file = Path(tmp) / "www" / "file"
        body_file.parent.mkdir()
        body_file.write_bytes(BODY)
        report["configurations"] = [run_configuration(c, tools, settings, Path(tmp), body_file) for c in selected]
    report["machine"]["load_average_end"] = os.getloadavg()
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"\nbench: results in {settings.output}", file=sys.stderr)
    return 1 if any(c["status"] == "error" for c in report["configurations"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
