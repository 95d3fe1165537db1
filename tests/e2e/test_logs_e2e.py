"""The log: one line per exchange at the default verbosity, warnings for state changes, nothing
secret, and `-q` silences the per-exchange lines."""

import json
import os
import re
import signal
import socket
import subprocess
import time

from harness import RUN_SH, Ambassador, FakeUpstream, Reply, echo, free_port
from profiles import Profile, profile, upstream

SECRET = "tok-7f3a9c-never-log-me"
# [time] upstream method path status cache=... attempts=... duration
EXCHANGE_LINE = re.compile(r"^\[[\d:.]+\] (\S+) ([A-Z]+) (\S+) (\d{3}) cache=(\S+) attempts=(\S+)(?: reason=(\S+))? (\d+)ms$")


def logged_profile(up: FakeUpstream, failing: FakeUpstream, fail_max: int = 1) -> Profile:
    return profile(
        upstream(
            "billing", up.url, path_prefix="/billing", auth={"type": "bearer", "token": SECRET},
            retry={"attempts": 2, "backoff": "1ms"},
        ),
        upstream("fragile", failing.url, path_prefix="/fragile", breaker={"fail_max": fail_max, "reset_timeout": "1h"}),
    )


def exchange_lines(output: str) -> list[tuple]:
    return [m.groups() for line in output.splitlines() if (m := EXCHANGE_LINE.match(line))]


def test_one_line_per_exchange_and_nothing_secret(tmp_path):
    failing = lambda req: Reply.json({"error": "down"}, 500)  # noqa: E731
    with FakeUpstream(echo) as up, FakeUpstream(failing) as down:
        with Ambassador(tmp_path, logged_profile(up, down)) as amb:
            assert amb.get("/billing/invoices?id=7", {"Authorization": "Bearer client-own"})[0] == 200
            assert amb.request("POST", "/billing/pay", body=b"{}")[0] == 200
            assert amb.get("/fragile/x")[0] == 500  # opens the breaker (fail_max 1)
            status, _, body = amb.get("/fragile/x")
            assert status == 503 and json.loads(body)["reason"] == "circuit_open"
            amb.wait_for_log(r"fragile GET /fragile/x 503 .*reason=circuit_open")
            amb.wait_for_log(r"circuit breaker closed -> open")
            assert up.received[0].header("Authorization") == f"Bearer {SECRET}"  # it was injected
            output = amb.output

    lines = exchange_lines(output)
    assert [line[:6] for line in lines] == [
        ("billing", "GET", "/billing/invoices?id=7", "200", "-", "1"),
        ("billing", "POST", "/billing/pay", "200", "-", "1"),
        ("fragile", "GET", "/fragile/x", "500", "-", "-"),
        ("fragile", "GET", "/fragile/x", "503", "-", "-"),
    ]
    assert [line[6] for line in lines] == [None, None, None, "circuit_open"]
    assert all(int(line[7]) < 30_000 for line in lines)
    # Nothing else per exchange: no dumper printout of the flows, no connection chatter.
    assert "client connect" not in output and "client disconnect" not in output
    assert sum("/billing/" in line for line in output.splitlines()) == 2
    assert SECRET not in output


def test_state_changes_are_warnings(tmp_path):
    with FakeUpstream(echo) as up, FakeUpstream(echo) as down:
        with Ambassador(tmp_path, logged_profile(up, down)) as amb:
            start = len(amb.lines)
            logged_profile(up, down, fail_max=2).write(amb.profile_path)
            amb.wait_for_log(r"profile .* loaded", start=start)
            start = len(amb.lines)
            profile(upstream("billing", "nope")).write(amb.profile_path)
            amb.wait_for_log(r"profile refused, keeping the running one", start=start)
            assert amb.get("/billing/x")[0] == 200


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the ambassador exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port} within {timeout}s")


def test_quiet_silences_the_exchange_lines(tmp_path):
    """-q: the proxy announces nothing, so the test waits for the port, not for a log line."""
    with FakeUpstream(echo) as up, FakeUpstream(echo) as down:
        path = logged_profile(up, down).write(tmp_path / "profile.yaml")
        port = free_port()
        log_file = tmp_path / "output.log"
        with open(log_file, "w") as out:
            proc = subprocess.Popen(
                [str(RUN_SH), str(path), "-q", "--listen-port", str(port), "--set", f"confdir={tmp_path / 'conf'}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ),
            )
        try:
            wait_for_port(port, proc)
            amb = Ambassador(tmp_path, path)
            amb.port = port
            for i in range(3):
                assert amb.get(f"/billing/x{i}")[0] == 200
            assert len(up.received) == 3
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        output = log_file.read_text()
        assert exchange_lines(output) == []
        assert "/billing/" not in output
