"""Asynchronous replies: `Prefer: respond-async` answered with 202 and a job, the job polled
at `/_ambassador/jobs/{id}`.

The mitmproxy addons around the plain-Python `jobs` module. Their places in `make_addons()`:
`JobEndpoint` before `AdminEndpoints` (it answers paths the admin endpoints would refuse),
`RespondAsync` between `Router` and `Forwarder` (it takes over routed flows that ask for an
asynchronous answer).
"""

from __future__ import annotations

import re

from mitmproxy import ctx, exceptions, http

from .answers import json_response, refuse
from .errors import AmbassadorError
from .forward import answered, attached, detach, only_path, to_upstream_request
from .jobs import MAX_JOBS, Jobs
from .profile import ADMIN_PREFIX
from .profile_manager import ProfileManager
from .upstream_flows import UpstreamFlows

JOBS_PREFIX = f"{ADMIN_PREFIX}/jobs/"
RETRY_AFTER_SECONDS = "1"  # polling interval suggested for running jobs


class JobEndpoint:
    """`GET /_ambassador/jobs/{id}`: 202 while running, then the upstream's answer; 404 when unknown."""

    admin_only = True  # acts on `/_ambassador/...` requests only (see AmbassadorAddons)

    def __init__(self, jobs: Jobs):
        self.jobs = jobs

    async def request(self, flow: http.HTTPFlow) -> None:
        path = only_path(flow)
        if answered(flow) or not path.startswith(JOBS_PREFIX):
            return
        job_id = path[len(JOBS_PREFIX):]
        if flow.request.method != "GET":
            refuse(flow, AmbassadorError("bad_request", f"{JOBS_PREFIX}{{id}} answers GET only"))
            return
        job = await self.jobs.lookup(job_id)
        if job is None:
            refuse(flow, AmbassadorError("not_found", f"no job {job_id} (unknown, or its result expired)"))
        elif job.running:
            flow.response = json_response(
                202,
                {"id": job.id, "status": "running", "upstream": job.upstream},
                {"Retry-After": RETRY_AFTER_SECONDS, "Location": f"{JOBS_PREFIX}{job.id}", "X-Ambassador-Upstream": job.upstream},
            )
        else:
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in job.headers]
            flow.response = http.Response.make(job.status, job.body, headers)
        flow.metadata["ambassador"] = {"job": job_id}


PREFER_ASYNC_RE = re.compile(r"(?:^|,)\s*respond-async\s*(?:[;,]|$)", re.IGNORECASE)


class RespondAsync:
    """`Prefer: respond-async` on an upstream with `async`: 202 and a job, the exchange in the background."""

    def __init__(self, jobs: Jobs, manager: ProfileManager, flows: UpstreamFlows):
        self.jobs = jobs
        self.manager = manager
        self.flows = flows

    def load(self, loader) -> None:
        loader.add_option(
            "ambassador_async_max_jobs",
            int,
            MAX_JOBS,
            "Async jobs per upstream running or kept at once; beyond it a new one gets 429 with Retry-After.",
        )

    def configure(self, updated) -> None:
        if "ambassador_async_max_jobs" in updated:
            if ctx.options.ambassador_async_max_jobs < 1:
                raise exceptions.OptionsError("ambassador_async_max_jobs must be at least 1")
            self.jobs.max_jobs = ctx.options.ambassador_async_max_jobs

    async def request(self, flow: http.HTTPFlow) -> None:
        if answered(flow) or not (found := attached(flow)):
            return
        service, route = found
        if service.upstream.async_ is None or not any(
            PREFER_ASYNC_RE.search(value) for value in flow.request.headers.get_all("Prefer")
        ):
            return
        name = service.upstream.name
        detach(flow)  # answered here, whatever happens
        try:
            request = to_upstream_request(flow, route)
            self.flows.watch(flow, request, self.manager.gateway.services)
            request.headers.popall("Prefer", None)  # the preference was for us; the upstream is synchronous
            job_id = await self.jobs.submit(service, request)
        except AmbassadorError as e:
            e.upstream = name
            refuse(flow, e)
            return
        location = f"{JOBS_PREFIX}{job_id}"
        flow.response = json_response(
            202,
            {"id": job_id, "status": "running", "upstream": name, "location": location},
            {"Location": location, "Preference-Applied": "respond-async", "X-Ambassador-Upstream": name},
        )
        flow.metadata["ambassador"]["job"] = job_id

    def done(self) -> None:
        self.jobs.shutdown()
