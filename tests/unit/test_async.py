"""The async job store as plain Python: results, expiry, interrupted jobs."""

import json
import os
import socket
import subprocess
import sys

import pytest

from addons.jobs import MAX_JOBS, JobStore, _owner_gone

HOST = socket.gethostname()


def store(tmp_path, owner=f"{HOST}:{os.getpid()}:me") -> JobStore:
    return JobStore(tmp_path / "state" / "jobs.sqlite3", owner)


def test_a_job_runs_then_keeps_its_result_until_it_expires(tmp_path):
    s = store(tmp_path)
    s.create("job1", "legacy", keep=60, deadline=1000, max_jobs=MAX_JOBS, now=0)
    job = s.get("job1", now=10)
    assert job.running and job.upstream == "legacy"
    s.finish("job1", 201, [("X-A", "1")], b"body", now=20)
    job = s.get("job1", now=21)
    assert (job.running, job.status, job.headers, job.body) == (False, 201, [("X-A", "1")], b"body")
    assert s.get("job1", now=79.9) is not None
    assert s.get("job1", now=80) is None
    assert s.purge(now=80) == ["legacy"]
    assert s.get("unknown", now=0) is None


def test_a_result_is_written_once(tmp_path):
    s = store(tmp_path)
    s.create("job1", "legacy", keep=60, deadline=1000, max_jobs=MAX_JOBS, now=0)
    s.finish("job1", 200, [], b"first", now=1)
    s.finish("job1", 502, [], b"second", now=2)
    assert s.get("job1", now=3).body == b"first"


def test_results_are_on_disk_for_the_next_process(tmp_path):
    s = store(tmp_path)
    s.create("job1", "legacy", keep=60, deadline=1000, max_jobs=MAX_JOBS, now=0)
    s.finish("job1", 200, [], b"kept", now=1)
    s.close()
    assert store(tmp_path, "other:1:x").get("job1", now=2).body == b"kept"


def test_a_running_job_past_its_deadline_is_interrupted(tmp_path):
    s = store(tmp_path)
    s.create("job1", "legacy", keep=60, deadline=100, max_jobs=MAX_JOBS, now=0)
    assert s.get("job1", now=99).running
    job = s.get("job1", now=101)
    assert job.status == 502 and json.loads(job.body)["reason"] == "job_interrupted"


def test_jobs_of_gone_owners_are_interrupted(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    s = store(tmp_path)
    s.create("mine", "a", 60, 1000, MAX_JOBS, 0)
    s.create("dead", "b", 60, 1000, MAX_JOBS, 0)
    s.create("alive", "c", 60, 1000, MAX_JOBS, 0)
    s.create("remote", "d", 60, 1000, MAX_JOBS, 0)
    with s.lock:
        s.db.execute("UPDATE jobs SET owner = ? WHERE id = 'dead'", (f"{HOST}:{dead_pid}:old",))
        s.db.execute("UPDATE jobs SET owner = ? WHERE id = 'alive'", (f"{HOST}:{os.getppid()}:other",))
        s.db.execute("UPDATE jobs SET owner = ? WHERE id = 'remote'", ("elsewhere:1:x",))
    # A new process on this host with our pid (a restarted container), a new boot id:
    gone = _owner_gone(f"{HOST}:{os.getpid()}:new")
    assert sorted(s.interrupt(gone, now=5)) == ["a", "b"]
    assert not s.get("mine", 6).running and not s.get("dead", 6).running
    assert s.get("alive", 6).running and s.get("remote", 6).running



def test_an_upstream_holds_at_most_max_jobs_running_or_kept(tmp_path):
    s = store(tmp_path)
    assert s.create("run1", "legacy", keep=60, deadline=100, max_jobs=2, now=0) is None
    assert s.create("done", "legacy", keep=30, deadline=100, max_jobs=2, now=0) is None
    s.finish("done", 200, [], b"x", now=10)  # kept until 40
    assert s.create("other", "billing", keep=60, deadline=100, max_jobs=2, now=11) is None  # counted per upstream
    # Full: the refusal says when a slot is sure to free (the kept result expires at 40).
    assert s.create("third", "legacy", keep=60, deadline=100, max_jobs=2, now=15) == 25
    assert s.get("third", now=15) is None  # not recorded
    # An expired result no longer counts, purged or not; a running one does.
    assert s.create("fourth", "legacy", keep=60, deadline=100, max_jobs=2, now=40) is None
    # All running: the first running job's deadline plus its keep.
    assert s.create("fifth", "legacy", keep=60, deadline=100, max_jobs=2, now=41) == 160 - 41


def test_counting_jobs_reads_an_index_not_the_table(tmp_path):
    s = store(tmp_path)
    plan = s.db.execute(
        "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM jobs WHERE upstream = ? AND (expires IS NULL OR expires > ?)", ("a", 0)
    ).fetchall()
    assert any("COVERING INDEX jobs_upstream" in row[-1] for row in plan), plan


def test_purge_deletes_only_expired_results(tmp_path):
    s = store(tmp_path)
    for job_id, keep in (("short", 1), ("long", 60), ("running", 1)):
        s.create(job_id, "legacy", keep=keep, deadline=100, max_jobs=MAX_JOBS, now=0)
    s.finish("short", 200, [], b"x", now=1)
    s.finish("long", 200, [], b"x", now=1)
    assert s.purge(now=2) == ["legacy"]
    assert [row[0] for row in s.db.execute("SELECT id FROM jobs ORDER BY id")] == ["long", "running"]


def test_the_job_limit_is_an_option_of_1000_by_default():
    from mitmproxy import exceptions
    from mitmproxy.test import taddons

    from addons.async_replies import RespondAsync
    from addons.jobs import Jobs
    from addons.profile_manager import ProfileManager
    from addons.upstream_flows import UpstreamFlows

    jobs = Jobs()
    with taddons.context(RespondAsync(jobs, ProfileManager(), UpstreamFlows())) as tctx:
        assert tctx.options.ambassador_async_max_jobs == MAX_JOBS == 1000
        tctx.configure(tctx.master.addons.get("respondasync"), ambassador_async_max_jobs=5)
        assert jobs.max_jobs == 5
        with pytest.raises(exceptions.OptionsError):
            tctx.configure(tctx.master.addons.get("respondasync"), ambassador_async_max_jobs=0)
