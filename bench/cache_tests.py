"""The public HTTP cache test suite (cache-tests.fyi, npm `http-cache-tests`) against the ambassador.

    .venv/bin/python bench/cache_tests.py [--id TEST_ID] [--json FILE]

Installs the pinned suite (bench/cache-tests/package-lock.json) with `npm ci` into a cache folder
(`$XDG_CACHE_HOME/mitm-ambassador/cache-tests`, reinstalled when the lock file changes), starts the
suite's test server on a free loopback port, starts the real ambassador (`./run.sh`) as a reverse
proxy with `cache: {}` in front of it, runs the suite's CLI against the ambassador and prints the
score: required and optimal tests passed, and the names of those that failed. `--id` runs one test
and prints the suite's dump of its exchanges (for debugging a failure).

Results are counted as the suite's own report does (lib/display.mjs): a test whose dependencies
did not pass counts as failed; `check` tests are information only and not scored.
Needs node and npm (the npm registry for the first install). Exit status 0 when the suite ran.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PINNED = BENCH / "cache-tests"  # package.json, package-lock.json, suite.mjs
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mitm-ambassador" / "cache-tests"
START_TIMEOUT = 60.0  # mitmproxy on a shared two-core machine can take a while to start
RUN_TIMEOUT = 300.0
PROFILE = """\
upstreams:
  suite:
    url: http://127.0.0.1:{port}
    match: {{path_prefix: /}}
    cache: {{}}
"""


def install() -> Path:
    """The suite's package folder, installed with `npm ci` unless the pinned lock is installed."""
    lock = (PINNED / "package-lock.json").read_bytes()
    stamp = CACHE / ".lock-sha256"
    digest = hashlib.sha256(lock).hexdigest()
    package = CACHE / "node_modules" / "http-cache-tests"
    if not (stamp.exists() and stamp.read_text() == digest and package.is_dir()):
        CACHE.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(PINNED / name, CACHE / name)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CACHE, check=True)
        stamp.write_text(digest)
    return package


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(answers, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not answers():
        if proc.poll() is not None:
            sys.exit(f"{what} exited ({proc.returncode}) during start-up:\n{log.read_text()}")
        if time.monotonic() > deadline:
            sys.exit(f"{what} not answering within {START_TIMEOUT:.0f}s:\n{log.read_text()}")
        time.sleep(0.1)


def answers(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        ok = conn.getresponse().status < 500
        conn.close()
        return ok
    except OSError:
        return False


def start(argv: list[str], log: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, **kw)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Score:
    required: tuple[int, int]
    optimal: tuple[int, int]
    failed_required: list[str]
    failed_optimal: list[str]


def score(tests: list[dict], results: dict) -> Score:
    """The suite's verdicts (lib/display.mjs determineTestResult) counted by kind."""
    by_id = {t["id"]: t for t in tests}

    def passed(test_id: str) -> bool:
        test = by_id[test_id]
        if not all(passed(d) for d in test["depends_on"]):
            return False  # a dependency failed: the result says nothing
        return results.get(test_id) is True

    counts = {"required": [0, 0], "optimal": [0, 0]}
    failed: dict[str, list[str]] = {"required": [], "optimal": []}
    for test in tests:
        if test["kind"] not in counts:
            continue
        counts[test["kind"]][1] += 1
        if passed(test["id"]):
            counts[test["kind"]][0] += 1
        else:
            failed[test["kind"]].append(test["id"])
    return Score(tuple(counts["required"]), tuple(counts["optimal"]), failed["required"], failed["optimal"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--id", default="", help="run this one test and print its exchanges")
    parser.add_argument("--json", type=Path, help="also write the suite's raw results here")
    args = parser.parse_args()
    if not shutil.which("node") or not shutil.which("npm"):
        sys.exit("cache_tests.py needs node and npm")
    package = install()
    helper = str(PINNED / "suite.mjs")
    tests = json.loads(subprocess.run(["node", helper, "tests"], cwd=package, check=True, capture_output=True, text=True).stdout)

    with tempfile.TemporaryDirectory(prefix="cache-tests-") as tmp:
        work = Path(tmp)
        server_port, ambassador_port = free_port(), free_port()
        server = start(["node", helper, "server", str(server_port)], work / "server.log", cwd=package)
        ambassador = None
        try:
            wait_until(lambda: answers(server_port, "/"), "the suite's test server", server, work / "server.log")
            profile = work / "profile.yaml"
            profile.write_text(PROFILE.format(port=server_port))
            confdir = work / "mitmproxy-conf"
            confdir.mkdir()
            ambassador = start(
                [str(ROOT / "run.sh"), str(profile), "--listen-port", str(ambassador_port), "--set", f"confdir={confdir}"],
                work / "ambassador.log",
            )
            wait_until(lambda: answers(ambassador_port, "/_ambassador/health"), "the ambassador", ambassador, work / "ambassador.log")
            # cli.mjs reads its arguments as npm would set them; an empty id means every test
            env = {**os.environ, "npm_config_base": f"http://127.0.0.1:{ambassador_port}", "npm_config_id": args.id, "npm_package_config_id": args.id}
            run = subprocess.run(
                ["node", "--no-warnings", "cli.mjs"], cwd=package, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
            )
        finally:
            if ambassador:
                stop(ambassador)
            stop(server)
        if run.returncode != 0 or run.stderr.strip():
            sys.exit(f"the suite's CLI failed ({run.returncode}):\n{run.stderr}")
    if args.id:
        print(run.stdout)
        return 0
    results = json.loads(run.stdout)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    s = score(tests, results)
    print(f"required {s.required[0]}/{s.required[1]}, optimal {s.optimal[0]}/{s.optimal[1]}")
    print("failed required:", " ".join(s.failed_required) or "none")
    print("failed optimal:", " ".join(s.failed_optimal) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
