"""Asynchronous request-reply: jobs run in the background, their results kept on disk.

Results live in SQLite (`jobs.sqlite3` in the state folder: `$AMBASSADOR_STATE_DIR`, by default
`state/` in the repository), so finished results survive a restart. A job whose ambassador
stopped or crashed before the upstream answered is finished as a `502` with reason
`job_interrupted`: at shutdown, or when the store is next opened, or at the latest once the
job has outlived its upstream's timeout. SQLite runs in worker threads (`asyncio.to_thread`).
Plain Python; the mitmproxy addons are `async_replies.JobEndpoint` and `async_replies.RespondAsync`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import bounded
from .aggregate import answer_of
from .errors import AmbassadorError
from .exchange import UpstreamRequest
from .metrics import ASYNC_JOBS
from .service import UpstreamService
from .sqlite_wal import switch_to_wal

log = logging.getLogger("ambassador.jobs")

ROOT = Path(__file__).resolve().parent.parent
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}\Z")  # secrets.token_urlsafe(16)
# A job outlives its upstream timeout only when its ambassador is gone; this margin covers
# token fetches and clock steps before such a job is declared interrupted.
DEADLINE_GRACE = 10.0
PURGE_INTERVAL = 60.0  # at most; more often when an upstream keeps results for less
MAX_JOBS = 1000  # per upstream, running or kept (the option ambassador_async_max_jobs)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    upstream TEXT NOT NULL,
    owner TEXT NOT NULL,        -- host:pid:boot of the ambassador running it
    keep REAL NOT NULL,         -- seconds a finished result is kept
    deadline REAL NOT NULL,     -- wall time after which a running job cannot still be running
    expires REAL,               -- wall time; NULL while running
    status INTEGER,
    headers TEXT,               -- JSON list of [name, value]
    body BLOB
);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires);
CREATE INDEX IF NOT EXISTS jobs_upstream ON jobs (upstream, expires);  -- counting an upstream's jobs
"""


def state_dir() -> Path:
    return Path(os.environ.get("AMBASSADOR_STATE_DIR") or ROOT / "state")


@dataclass(frozen=True)
class Job:
    id: str
    upstream: str
    running: bool
    status: int | None = None
    headers: list[tuple[str, str]] | None = None
    body: bytes | None = None


def jobs_file() -> Path:
    return state_dir() / "jobs.sqlite3"


def interrupted(upstream: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps(
        {
            "error": f"the ambassador stopped before upstream {upstream} answered; the request may or may not have reached it",
            "reason": "job_interrupted",
            "upstream": upstream,
        }
    ).encode()
    return 502, [("Content-Type", "application/json"), ("X-Ambassador-Upstream", upstream)], body


class JobStore:
    """The SQLite table of jobs. Blocking: call through `asyncio.to_thread`."""

    def __init__(self, path: Path, owner: str):
        self.owner = owner
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self.lock = threading.Lock()
        with self.lock:
            switch_to_wal(self.db)
            self.db.executescript(SCHEMA)

    def create(self, job_id: str, upstream: str, keep: float, deadline: float, max_jobs: int, now: float) -> float | None:
        """Record a new running job, unless `upstream` has `max_jobs` running or kept already:
        then the seconds until one of them is sure to be gone (the job is not recorded).

        The count reads the (upstream, expires) index only, at most `max_jobs` entries of it;
        only a refusal reads those jobs' rows. One transaction, so that ambassadors sharing
        the file cannot overshoot the limit together."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                (count,) = self.db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE upstream = ? AND (expires IS NULL OR expires > ?)", (upstream, now)
                ).fetchone()
                if count >= max_jobs:
                    (first_gone,) = self.db.execute(
                        "SELECT MIN(COALESCE(expires, deadline + keep)) FROM jobs WHERE upstream = ? AND (expires IS NULL OR expires > ?)",
                        (upstream, now),
                    ).fetchone()
                    return first_gone - now
                self.db.execute(
                    "INSERT INTO jobs (id, upstream, owner, keep, deadline) VALUES (?, ?, ?, ?, ?)",
                    (job_id, upstream, self.owner, keep, deadline),
                )
                return None
            finally:
                self.db.execute("COMMIT")

    def finish(self, job_id: str, status: int, headers: list[tuple[str, str]], body: bytes, now: float) -> None:
        with self.lock:
            self.db.execute(
                "UPDATE jobs SET status = ?, headers = ?, body = ?, expires = ? + keep WHERE id = ? AND expires IS NULL",
                (status, json.dumps(headers), body, now, job_id),
            )

    def get(self, job_id: str, now: float) -> Job | None:
        """The job, unless unknown or expired; a running job past its deadline is finished as interrupted."""
        with self.lock:
            row = self.db.execute(
                "SELECT upstream, deadline, expires, status, headers, body FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None:
            return None
        upstream, deadline, expires, status, headers, body = row
        if expires is None and now > deadline:
            self.finish(job_id, *interrupted(upstream), now)
            return self.get(job_id, now)
        if expires is None:
            return Job(job_id, upstream, running=True)
        if expires <= now:
            return None
        return Job(job_id, upstream, False, status, [tuple(h) for h in json.loads(headers)], body)

    def interrupt(self, owners_gone: Callable[[str], bool], now: float) -> list[str]:
        """Finish the running jobs of ambassadors that are gone; their upstream names."""
        with self.lock:
            rows = self.db.execute("SELECT id, upstream, owner FROM jobs WHERE expires IS NULL").fetchall()
        lost = [(job_id, upstream) for job_id, upstream, owner in rows if owners_gone(owner)]
        for job_id, upstream in lost:
            self.finish(job_id, *interrupted(upstream), now)
        return [upstream for _, upstream in lost]

    def purge(self, now: float) -> list[str]:
        """Delete expired results; their upstream names."""
        with self.lock:
            return [row[0] for row in self.db.execute("DELETE FROM jobs WHERE expires <= ? RETURNING upstream", (now,))]

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _owner_gone(me: str) -> Callable[[str], bool]:
    """Whether the ambassador named by an owner string (host:pid:boot) no longer runs."""
    host, pid, boot = me.split(":")

    def gone(owner: str) -> bool:
        other_host, other_pid, other_boot = owner.split(":")
        if other_boot == boot:
            return True  # this very ambassador's: only asked when none of them can still be running
        if other_host != host:
            return False  # cannot tell; the job's deadline settles it
        if other_pid == pid:
            return True  # a previous process with our pid (containers reuse pids)
        try:
            os.kill(int(other_pid), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    return gone


class Jobs:
    """Submits jobs to upstream services and keeps their results in the `JobStore`."""

    def __init__(self) -> None:
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.store: JobStore | None = None
        self.opening = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()
        self.max_jobs = MAX_JOBS
        self.purge_every = PURGE_INTERVAL
        self.purger: asyncio.Task | None = None

    async def open(self) -> JobStore:
        """The store, opened on first use so that profiles without async create no files."""
        async with self.opening:
            if self.store is None:
                path = jobs_file()
                store = await asyncio.to_thread(JobStore, path, self.owner)
                # A new owner: jobs left running by ambassadors that are gone ended with them.
                for upstream in await asyncio.to_thread(store.interrupt, _owner_gone(self.owner), time.time()):
                    ASYNC_JOBS.labels(upstream, "failed").inc()
                self.store = store
                self.purger = asyncio.get_running_loop().create_task(self._purge_expired(store))
                log.info("async job results are kept in %s", path)
        return self.store

    async def submit(self, service: UpstreamService, request: UpstreamRequest) -> str:
        """Record a job and start it; returns its id at once. Raises AmbassadorError
        (rate_limited) when the upstream has `max_jobs` jobs running or kept."""
        store = await self.open()
        upstream = service.upstream
        job_id = secrets.token_urlsafe(16)
        now = time.time()
        deadline = now + (service.deadline_of(request) - time.monotonic()) + DEADLINE_GRACE
        keep = upstream.async_.keep
        self.purge_every = max(1.0, min(self.purge_every, keep))
        wait = await asyncio.to_thread(store.create, job_id, upstream.name, keep, deadline, self.max_jobs, now)
        if wait is not None:
            raise AmbassadorError(
                "rate_limited",
                f"upstream {upstream.name} has {self.max_jobs} async jobs running or kept (ambassador_async_max_jobs);"
                " retry once one has expired",
                upstream.name,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        ASYNC_JOBS.labels(upstream.name, "accepted").inc()
        request = dataclasses.replace(request, max_body=bounded.MAX_BODY)  # its answer is kept whole
        task = asyncio.get_running_loop().create_task(self._run(store, job_id, service, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job_id

    async def _purge_expired(self, store: JobStore) -> None:
        """Delete expired results now and then, in a thread: the file's free pages are reused,
        so it grows no further than the jobs kept at once."""
        while True:
            try:
                for expired in await asyncio.to_thread(store.purge, time.time()):
                    ASYNC_JOBS.labels(expired, "expired").inc()
            except sqlite3.Error as e:  # e.g. another process holding the file too long: next time
                log.warning("could not delete expired async job results: %s", e)
            await asyncio.sleep(self.purge_every)

    async def _run(self, store: JobStore, job_id: str, service: UpstreamService, request: UpstreamRequest) -> None:
        name = service.upstream.name
        try:
            answer = await service.handle(request)
            event = "done"
        except AmbassadorError as e:
            e.upstream = e.upstream or name
            answer = answer_of(e)
            event = "failed"
        except Exception as e:  # a bug must not leave the job "running" until its deadline
            log.exception("async job %s... for upstream %s failed", job_id[:6], name)
            answer = answer_of(AmbassadorError("upstream_error", f"the job failed inside the ambassador ({type(e).__name__})", name))
            event = "failed"
        if self.store is not store:
            return  # shut down meanwhile; the job was reported as interrupted
        if len(answer.body) > bounded.MAX_BODY:  # made by a stage (SOAP's JSON), not read from the wire
            answer = answer_of(bounded.too_large(name, "a body"))
            event = "failed"
        headers = [(k, v) for k, v in answer.headers.items()] + [("X-Ambassador-Upstream", name)]
        await asyncio.to_thread(store.finish, job_id, answer.status, headers, answer.body, time.time())
        ASYNC_JOBS.labels(name, event).inc()
        # An id reads the result: logs show only enough of it to tell jobs apart.
        log.info("async job %s... for upstream %s finished: %s", job_id[:6], name, answer.status)

    async def lookup(self, job_id: str) -> Job | None:
        if not JOB_ID_RE.match(job_id):
            return None
        if self.store is None and not await asyncio.to_thread(jobs_file().exists):
            return None  # no job was ever kept here: no file to create for a question
        store = await self.open()
        return await asyncio.to_thread(store.get, job_id, time.time())

    def shutdown(self) -> None:
        """The ambassador stops: jobs still running here will never finish; say so now."""
        for task in self.tasks:
            task.cancel()
        if self.purger is not None:
            self.purger.cancel()
            self.purger = None
        if self.store is None:
            return
        for upstream in self.store.interrupt(lambda owner: owner == self.owner, time.time()):
            ASYNC_JOBS.labels(upstream, "failed").inc()
        self.store.close()
        self.store = None
