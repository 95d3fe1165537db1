"""mitmproxy's own tools load the suite as a script, as a mitmproxy user would run them: from
any working directory, without PYTHONPATH, beside the user's own addon scripts."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from harness import ROOT, FakeUpstream, StockTool, echo, free_port, listening_addresses, run_sh
from profiles import Profile, profile, upstream

STARTUP_LIMIT = 5.0


def app_profile(url: str) -> Profile:
    return profile(upstream("app", f"{url}/base", path_prefix="/app", retry={"attempts": 2, "backoff": "1ms"}))


def wait_until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.05)
    return result


@pytest.mark.parametrize("tool", ["mitmdump", "mitmweb"])
def test_the_suite_runs_under_the_stock_tool(tmp_path, tool):
    extra = ("--set", f"web_port={free_port()}", "--set", "web_open_browser=false") if tool == "mitmweb" else ()
    with FakeUpstream(echo) as up, StockTool(tmp_path, app_profile(up.url), *extra, tool=tool) as amb:
        status, headers, body = amb.get("/app/x?y=1")
        assert status == 200 and headers["X-Ambassador-Upstream"] == "app"
        assert json.loads(body)["path"] == "/base/x?y=1"
        assert amb.status()["profile"] == str(amb.profile_path)
        # mitmproxy opens its listener before loading scripts; the suite moves it to loopback.
        wait_until(lambda: listening_addresses(amb.port) == ["0100007F"], what="loopback-only listener")
        # A dead upstream still reaches the suite's hooks (lazy connection strategy): its error, not a hang-up.
        status, _, body = amb.get("/_ambassador/nothing")
        assert status == 404 and json.loads(body)["reason"] == "no_route"


def test_the_default_profile_is_the_shipped_one(tmp_path):
    with StockTool(tmp_path, None) as amb:
        assert amb.status()["profile"] == str(ROOT / "profiles" / "default.yaml")


def test_listen_host_given_by_the_user_is_kept(tmp_path):
    with FakeUpstream(echo) as up:
        amb = StockTool(tmp_path, app_profile(up.url), "--listen-host", "127.0.0.2")
        amb.proc = subprocess.Popen(amb.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=amb.env, cwd=amb.cwd, start_new_session=True)
        try:
            wait_until(lambda: listening_addresses(amb.port), timeout=30, what="listener")
            assert listening_addresses(amb.port) == ["0200007F"]  # 127.0.0.2, as given
        finally:
            amb.stop()


def test_a_broken_profile_stops_the_stock_tool_with_its_message(tmp_path):
    broken = profile(upstream("billing", "http://127.0.0.1:1", path_prefix="/b", breaker={"fail_max": 0}))
    broken = broken.write(tmp_path / "broken.yaml")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "mitmdump"), "-s", str(ROOT / "addons" / "ambassador.py"),
         "--listen-port", str(free_port()), "--set", f"confdir={tmp_path}", "--set", f"ambassador_profile={broken}"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env,
    )
    assert result.returncode == 2, result
    assert time.monotonic() - started < STARTUP_LIMIT * 2  # generous: the machine may be busy
    assert f"{broken}: upstreams.billing.breaker.fail_max:" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


BEFORE = """
def request(flow):
    flow.request.headers["X-Seen-Before"] = "yes"
"""

AFTER = """
def response(flow):
    if flow.response is not None:
        flow.response.headers["X-Seen-After"] = flow.response.headers.get("X-Ambassador-Upstream", "none")
"""


def test_user_scripts_before_and_after_the_suite_compose(tmp_path):
    """A script loaded before the suite changes what reaches the upstream; one loaded after it
    sees and changes the answer that reaches the client."""
    before, after = tmp_path / "before.py", tmp_path / "after.py"
    before.write_text(BEFORE)
    after.write_text(AFTER)
    with FakeUpstream(echo) as up:
        amb = StockTool(tmp_path, app_profile(up.url), "-s", str(after))
        amb.argv[1:1] = ["-s", str(before)]  # before addons/ambassador.py
        with amb:
            status, headers, body = amb.get("/app/x")
            assert status == 200
            assert dict(json.loads(body)["headers"])["X-Seen-Before"] == "yes"
            assert headers["X-Seen-After"] == "app"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="the console UI needs a terminal: tmux")
def test_the_console_ui_runs_the_suite(tmp_path):
    with FakeUpstream(echo) as up:
        amb = StockTool(tmp_path, app_profile(up.url), tool="mitmproxy")
        session = f"ambassador-{amb.port}"
        command = " ".join(f"'{arg}'" for arg in amb.argv)
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", "env", "-u", "PYTHONPATH", "sh", "-c", command], check=True)
        try:
            wait_until(amb.answers, timeout=30, what="answer from the console UI's listener")
            status, headers, _ = amb.get("/app/x")
            assert status == 200 and headers["X-Ambassador-Upstream"] == "app"
            screen = wait_until(
                lambda: (s := subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout)
                and "/app/x" in s and s,
                what="the flow in the console's list",
            )
            assert "GET" in screen
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_run_sh_help_prints_usage():
    result = run_sh("help")
    assert result.returncode == 0
    assert "./run.sh [PROFILE] [MITM OPTIONS...]" in result.stdout and "./run.sh check PROFILE" in result.stdout


def test_a_port_in_use_stops_run_sh_at_once_naming_it(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_sh("--listen-port", str(port), "--set", f"confdir={tmp_path}", timeout=30)
        assert result.returncode != 0
        assert f"port {port}" in result.stderr and "already in use" in result.stderr
        # and the demo service's port, leaving nothing running
        result = run_sh("--listen-port", str(free_port()), "--set", f"confdir={tmp_path}", env={"DEMO_PORT": str(port)}, timeout=30)
        assert result.returncode != 0
        assert f"port {port} (the demo service" in result.stderr


def test_pip_installs_one_package_and_the_command(tmp_path):
    """`pip install .` claims one top-level name, mitm_ambassador, and a mitm-ambassador command."""
    target = tmp_path / "site"
    # From a copy: setuptools builds in the source folder, and a build/ left there by an earlier
    # build would hide a package missing from pyproject.toml.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "state", "__pycache__", "node_modules"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    names = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    assert names == {"mitm_ambassador", "bin"}, names
    assert (target / "bin" / "mitm-ambassador").exists()
    assert (target / "mitm_ambassador" / "ambassador.py").exists()
    check = subprocess.run(
        [sys.executable, "-c", "import sys; from mitm_ambassador.cli import main; sys.exit(main(['check', sys.argv[1]]))",
         str(ROOT / "profiles" / "default.yaml")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path, timeout=60,
    )
    assert check.returncode == 0 and check.stdout.strip() == "ok", check
