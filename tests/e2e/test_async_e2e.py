"""Asynchronous request-reply through the real ambassador, restarts included."""

import json
import os
import signal
import sqlite3
import threading
import time

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply
from profiles import Profile, profile, upstream

PREFER = {"Prefer": "respond-async"}


class SlowService:
    """A synchronous legacy service: `/report/{seconds}` answers after that long."""

    def __init__(self):
        self.started = threading.Event()

    def __call__(self, req: Received) -> Reply:
        self.started.set()
        seconds = float(req.path.rsplit("/", 1)[1].split("?")[0]) if req.path.startswith("/legacy/report/") else 0
        payload = {"path": req.path, "prefer": req.header("Prefer"), "body": req.body.decode()}
        return Reply.json(payload, 201, [("X-Legacy", "done")]) if seconds == 0 else Reply(
            201, [("Content-Type", "application/json"), ("X-Legacy", "done")], json.dumps(payload).encode(), delay=seconds
        )


@pytest.fixture(scope="module")
def service():
    slow = SlowService()
    with FakeUpstream(slow) as up:
        slow.upstream = up
        yield slow


def async_profile(up: FakeUpstream) -> Profile:
    return profile(
        upstream("legacy", f"{up.url}/legacy", path_prefix="/legacy", timeout="20s", async_={"keep": "1h"}),
        upstream("brief", f"{up.url}/brief", path_prefix="/brief", async_={"keep": "1s"}),
        upstream("plain", f"{up.url}/plain", path_prefix="/plain"),
        upstream("dead", "http://127.0.0.1:1", path_prefix="/dead", async_={}),
    )


def ambassador(tmp_path, up) -> Ambassador:
    return Ambassador(tmp_path, async_profile(up), env={"AMBASSADOR_STATE_DIR": str(tmp_path / "state")})


@pytest.fixture(scope="module")
def amb(service, tmp_path_factory):
    with ambassador(tmp_path_factory.mktemp("async"), service.upstream) as a:
        yield a


def submit(amb, path: str, body: bytes | None = None) -> str:
    started = time.monotonic()
    status, headers, raw = amb.request("POST" if body is not None else "GET", path, PREFER, body)
    assert status == 202, raw
    assert time.monotonic() - started < 2.0  # at once, not after the upstream's answer (3 s or more)
    location = headers["Location"]
    assert location.startswith("/_ambassador/jobs/")
    assert headers["Preference-Applied"] == "respond-async"
    assert json.loads(raw)["status"] == "running"
    return location


def wait_for_result(amb, location: str, timeout: float = 20) -> tuple[int, object, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        status, headers, body = amb.get(location)
        if status != 202:
            return status, headers, body
        assert headers["Retry-After"] == "1"
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)


def test_respond_async_gives_202_at_once_then_the_upstreams_answer(amb):
    location = submit(amb, "/legacy/report/3?x=1", b'{"q": 1}')
    status, headers, raw = amb.get(location)
    assert status == 202 and headers["Retry-After"] == "1"
    assert json.loads(raw) == {"id": location.rsplit("/", 1)[1], "status": "running", "upstream": "legacy"}
    status, headers, raw = wait_for_result(amb, location)
    assert status == 201
    assert headers["X-Legacy"] == "done"
    assert headers["X-Ambassador-Upstream"] == "legacy"
    answer = json.loads(raw)
    assert answer == {"path": "/legacy/report/3?x=1", "prefer": None, "body": '{"q": 1}'}
    # The result can be fetched again until it expires.
    assert amb.get(location)[0] == 201


def test_without_the_preference_or_without_async_requests_stay_synchronous(amb):
    status, headers, raw = amb.get("/legacy/report/0")
    assert status == 201 and "Location" not in headers
    status, headers, raw = amb.get("/plain/x", PREFER)
    assert status == 201 and json.loads(raw)["prefer"] == "respond-async"


def test_unknown_and_malformed_job_ids_are_404(amb):
    for path in ("/_ambassador/jobs/AAAAAAAAAAAAAAAAAAAAAA", "/_ambassador/jobs/..%2F..%2Fetc", "/_ambassador/jobs/", "/_ambassador/jobs/x'--"):
        status, _, raw = amb.get(path)
        assert status == 404, path
        assert json.loads(raw)["reason"] == "not_found"
    status, _, raw = amb.request("DELETE", "/_ambassador/jobs/AAAAAAAAAAAAAAAAAAAAAA")
    assert status == 400


def test_an_upstream_failure_is_the_jobs_result(amb):
    status, headers, raw = wait_for_result(amb, submit(amb, "/dead/x"))
    assert status == 502
    assert json.loads(raw)["reason"] == "connect_error"
    assert headers["X-Ambassador-Upstream"] == "dead"


def test_results_expire_after_keep(amb):
    location = submit(amb, "/brief/x")
    assert wait_for_result(amb, location)[0] == 201
    time.sleep(1.2)
    assert amb.get(location)[0] == 404


def test_finished_results_survive_a_restart_and_running_jobs_are_reported_failed(tmp_path, service):
    with ambassador(tmp_path, service.upstream) as amb:
        finished = submit(amb, "/legacy/report/0")
        assert wait_for_result(amb, finished)[0] == 201
        service.started.clear()
        running = submit(amb, "/legacy/report/30")
        assert service.started.wait(10)  # the upstream has the request
    # A clean stop already said so on disk (a crash is caught at the next start: see below).
    with sqlite3.connect(tmp_path / "state" / "jobs.sqlite3") as db:
        (status,) = db.execute("SELECT status FROM jobs WHERE id = ?", (running.rsplit("/", 1)[1],)).fetchone()
    assert status == 502
    with ambassador(tmp_path, service.upstream) as amb:
        status, headers, raw = amb.get(finished)
        assert status == 201 and json.loads(raw)["path"] == "/legacy/report/0"
        status, headers, raw = amb.get(running)
        assert status == 502
        payload = json.loads(raw)
        assert payload["reason"] == "job_interrupted" and payload["upstream"] == "legacy"
        assert "stopped before upstream legacy answered" in payload["error"]


def test_a_crash_while_running_is_reported_as_failed_after_the_restart(tmp_path, service):
    service.started.clear()
    amb = ambassador(tmp_path, service.upstream).start()
    try:
        running = submit(amb, "/legacy/report/30")
        assert service.started.wait(10)
    finally:
        os.killpg(amb.proc.pid, signal.SIGKILL)  # no shutdown hooks: a crash
        amb.proc.wait()
    with sqlite3.connect(tmp_path / "state" / "jobs.sqlite3") as db:
        (status,) = db.execute("SELECT status FROM jobs WHERE id = ?", (running.rsplit("/", 1)[1],)).fetchone()
    assert status is None  # still "running" on disk: the next start must notice
    with ambassador(tmp_path, service.upstream) as amb:
        status, _, raw = amb.get(running)
        assert status == 502 and json.loads(raw)["reason"] == "job_interrupted"


def test_asking_for_a_job_creates_no_state_where_none_was_kept(tmp_path):
    with FakeUpstream() as up:
        plain = profile(upstream("plain", up.url, path_prefix="/plain"))
        with Ambassador(tmp_path, plain, env={"AMBASSADOR_STATE_DIR": str(tmp_path / "state")}) as amb:
            status, _, raw = amb.get("/_ambassador/jobs/AAAAAAAAAAAAAAAAAAAAAA")
            assert (status, json.loads(raw)["reason"]) == (404, "not_found")
    assert not (tmp_path / "state").exists()
