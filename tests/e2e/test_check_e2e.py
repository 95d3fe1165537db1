"""`./run.sh check PROFILE` and start-up with a broken profile, through the real run.sh."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness import ROOT, RUN_SH, run_sh
from profile_corpus import profile

PROFILES = ROOT / "profiles"
SHIPPED = sorted(PROFILES.glob("*.yaml"))
UNSET_VAR = "AMBASSADOR_CHECK_E2E_UNSET"
STARTUP_LIMIT = 5.0  # a profile that fails validation must stop start-up within 5 s


@pytest.fixture(autouse=True)
def no_such_variable(monkeypatch):
    monkeypatch.delenv(UNSET_VAR, raising=False)


def write(folder: Path, text: str, name: str = "profile.yaml") -> Path:
    file = folder / name
    file.write_text(text)
    return file


# --- check ---------------------------------------------------------------------------


def test_check_prints_ok_for_a_valid_profile(tmp_path):
    result = run_sh("check", str(write(tmp_path, profile("timeout: 2s\nretry: {attempts: 2}\n"))))
    assert (result.returncode, result.stdout) == (0, "ok\n")
    assert "Traceback" not in result.stderr


def test_check_prints_every_problem_with_file_and_key_path(tmp_path):
    file = write(tmp_path, profile("timeout: 5x\nbreaker: {fail_max: 0, reset_timout: 3s}\n", "aggregates:\n  /d: {u: 'users:/u'}\n"))
    result = run_sh("check", str(file))
    assert result.returncode == 2
    assert result.stdout == ""
    # (run.sh may first say that it refreshes the virtual environment)
    assert result.stderr.splitlines()[-4:] == [
        f"{file}: upstreams.billing.timeout: must be a duration like 250ms, 5s, 2m, 1h or a number of seconds, got '5x'",
        f"{file}: upstreams.billing.breaker.reset_timout: unknown key (did you mean 'reset_timeout'?)",
        f"{file}: upstreams.billing.breaker.fail_max: must be an integer >= 1, got 0",
        f"{file}: aggregates./d.u: names unknown upstream 'users'",
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("file", SHIPPED, ids=lambda f: f.name)
def test_every_shipped_profile_passes_check_by_name_and_by_path(file):
    for given in (file.stem, str(file)):
        result = run_sh("check", given, env={"DEMO_PORT": "8081"})
        assert (result.returncode, result.stdout) == (0, "ok\n"), (given, result.stderr)


def test_a_name_is_looked_up_under_profiles(tmp_path):
    result = run_sh("check", "no-such-profile-xyz")
    assert result.returncode == 2
    assert result.stderr.endswith(f"{PROFILES / 'no-such-profile-xyz.yaml'}: cannot read the profile: No such file or directory\n")


def test_a_path_is_taken_relative_to_the_working_directory(tmp_path):
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", profile(), "default.yaml")
    write(tmp_path / "conf", "upstreams: {}\n", "broken.yaml")
    for given, verdict in [("conf/default.yaml", "ok\n"), ("./conf/default.yaml", "ok\n"), ("conf/broken.yaml", "")]:
        result = subprocess.run([str(RUN_SH), "check", given], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.stdout == verdict, (given, result.stderr)
    assert result.returncode == 2
    assert f"{tmp_path / 'conf' / 'broken.yaml'}: upstreams: must map one or more" in result.stderr


def test_check_needs_exactly_one_profile():
    result = run_sh("check")
    assert result.returncode != 0
    assert "usage: ./run.sh check PROFILE" in result.stderr


# --- start-up with a broken profile ---------------------------------------------------


def start(tmp_path: Path, *argv: str) -> tuple[int, str, float]:
    """Run ./run.sh until it exits by itself; (exit status, output, seconds)."""
    env = {k: v for k, v in os.environ.items() if k != UNSET_VAR}
    confdir = tmp_path / "mitmproxy-conf"
    started = time.monotonic()
    result = subprocess.run(
        [str(RUN_SH), *argv, "--listen-port", "0", "--set", f"confdir={confdir}"],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


BROKEN = {
    "yaml-syntax": ("upstreams:\n  billing: {url: http://127.0.0.1:9\n", "", "not valid YAML: line 3, column 1"),
    "unknown-key": (profile("retri: {attempts: 2}\n"), "upstreams.billing.retri", "unknown key (did you mean 'retry'?)"),
    "bad-duration": (profile("breaker: {reset_timeout: 30 seconds}\n"), "upstreams.billing.breaker.reset_timeout", "must be a duration like 250ms"),
    "missing-variable": (profile(f'auth: {{type: bearer, token: "${{{UNSET_VAR}}}"}}\n'), "upstreams.billing.auth.token", f"environment variable {UNSET_VAR} is not set"),
    "missing-secret-file": (profile('auth: {type: basic, username: u, password: "${file:secrets/pw}"}\n'), "upstreams.billing.auth.password", "cannot read "),
    "missing-ca-file": (profile("tls: {ca: certs/partner-ca.pem}\n"), "upstreams.billing.tls.ca", "file not found: "),
    "duplicate-key": (profile("timeout: 1s\ntimeout: 2s\n"), "upstreams.billing.timeout", "duplicate key (line 6; first at line 5)"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_profile_stops_start_up_with_status_2_and_says_where(tmp_path, kind):
    text, key_path, problem = BROKEN[kind]
    file = write(tmp_path, text)
    status, output, seconds = start(tmp_path, str(file))
    assert status == 2, output
    assert seconds < STARTUP_LIMIT, output
    where = f"{file}: {key_path}: " if key_path else f"{file}: "
    assert any(line.startswith(f"ambassador: {where}{problem}") or line.startswith(f"{where}{problem}") for line in output.splitlines()), output
    assert "Traceback" not in output


def test_mitmweb_refuses_a_broken_profile_the_same_way(tmp_path):
    file = write(tmp_path, profile("timeout: soon\n"))
    status, output, seconds = start(tmp_path, "web", str(file), "--set", "web_open_browser=false", "--set", "web_port=0")
    assert status == 2, output
    assert seconds < STARTUP_LIMIT, output
    assert f"{file}: upstreams.billing.timeout: must be a duration like 250ms" in output
    assert "Traceback" not in output


def test_a_broken_profile_by_name_is_refused_at_start_up(tmp_path):
    status, output, _ = start(tmp_path, "no-such-profile-xyz")
    assert status == 2
    assert f"{PROFILES / 'no-such-profile-xyz.yaml'}: cannot read the profile: No such file or directory" in output
    assert "Traceback" not in output
