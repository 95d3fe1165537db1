"""The mitmproxy addons that compose upstream requests: aggregates, batch, async jobs.

Thin hooks around the plain-Python `aggregate`, `batch` and `jobs` modules. Their places in
`make_addons()`: `Aggregates`, `Batch` and `JobEndpoint` before `AdminEndpoints` (they answer
paths the Router would refuse), `RespondAsync` between `Router` and `Forwarder` (it takes over
routed flows that ask for an asynchronous answer).
"""

from __future__ import annotations

import re

from mitmproxy import ctx, exceptions, http

from .aggregate import AggregateTable, fan_out, query_values
from .answers import refuse, json_response
from .defaults import body_size_limit
from .forward import addressed_to_ambassador, attached, detach, to_upstream_request
from .profile_manager import ProfileManager
from .batch import BatchItem, parse_batch, run_batch
from .errors import AmbassadorError
from .gateway import Gateway
from .jobs import MAX_JOBS, Jobs
from .profile import ADMIN_PREFIX
from .routing import Route
from .upstream_flows import UpstreamFlows

BATCH_PATH = f"{ADMIN_PREFIX}/batch"
JOBS_PREFIX = f"{ADMIN_PREFIX}/jobs/"
RETRY_AFTER_SECONDS = "1"  # polling interval suggested for running jobs


def _handled(flow: http.HTTPFlow) -> bool:
    return bool(flow.response or flow.error or not flow.live)


def _only_path(flow: http.HTTPFlow) -> str:
    return flow.request.path.split("?", 1)[0]


class Aggregates:
    """`GET` on an aggregate path of the profile: its parts, requested concurrently, as one JSON."""

    def __init__(self, manager: ProfileManager, flows: UpstreamFlows):
        self.manager = manager
        self.flows = flows
        self.compiled: tuple[Gateway | None, AggregateTable | None] = (None, None)

    def table(self, gateway: Gateway) -> AggregateTable:
        """Compiled once per loaded profile."""
        if self.compiled[0] is not gateway:
            self.compiled = (gateway, AggregateTable(gateway.profile))
        return self.compiled[1]

    async def request(self, flow: http.HTTPFlow) -> None:
        gateway = self.manager.gateway
        if _handled(flow) or not gateway.profile.aggregates:
            return
        request = flow.request
        if not addressed_to_ambassador(flow, gateway.profile.allowed_hosts):
            return  # a proxy request (the Router answers it), not one for the ambassador itself
        found = self.table(gateway).match(_only_path(flow))
        if found is None:
            return
        aggregate, captures = found
        try:
            if request.method != "GET":
                raise AmbassadorError("bad_request", f"aggregate {aggregate.template} answers GET only")
            first = gateway.profile.upstreams[next(iter(aggregate.parts.values())).upstream]
            template = to_upstream_request(flow, Route(first, request.path))  # the client's headers and timeout
            self.flows.watch(flow, template, gateway.services)  # the parts are copies of it
            query = query_values(request.path.partition("?")[2])
            status, document, parts = await fan_out(gateway.services, aggregate, captures, template, query)
        except AmbassadorError as e:
            e.upstream = None  # the aggregate's own problem, not one upstream's
            refuse(flow, e)
            return
        flow.response = json_response(status, document)
        flow.metadata["ambassador"] = {
            "aggregate": aggregate.template,
            "parts": {
                part.name: {
                    "upstream": part.upstream,
                    "status": part.response.status if part.response else part.error.status,
                    **{k: v for k, v in part.notes.items() if k != "shown_headers"},
                }
                for part in parts
            },
        }


class Batch:
    """`POST /_ambassador/batch`: a JSON list of requests, answered in order."""

    admin_only = True  # acts on `/_ambassador/...` requests only (see AmbassadorAddons)

    def __init__(self, manager: ProfileManager, flows: UpstreamFlows):
        self.manager = manager
        self.flows = flows

    async def request(self, flow: http.HTTPFlow) -> None:
        if _handled(flow) or _only_path(flow) != BATCH_PATH:
            return
        gateway = self.manager.gateway
        try:
            if flow.request.method != "POST":
                raise AmbassadorError("bad_request", f"{BATCH_PATH} answers POST only")
            items = parse_batch(flow.request.raw_content or b"", gateway.routes)
        except AmbassadorError as e:
            refuse(flow, e)
            return
        for item in items:
            if isinstance(item, BatchItem):
                self.flows.watch(flow, item.request, gateway.services)
        flow.response = json_response(200, await run_batch(items, gateway.services, body_size_limit()))
        # Per item: its upstream, or null for an item answered with an error before routing.
        flow.metadata.setdefault("ambassador", {})["batch"] = [
            item.route.upstream.name if isinstance(item, BatchItem) else item.upstream for item in items
        ]


class JobEndpoint:
    """`GET /_ambassador/jobs/{id}`: 202 while running, then the upstream's answer; 404 when unknown."""

    admin_only = True  # acts on `/_ambassador/...` requests only (see AmbassadorAddons)

    def __init__(self, jobs: Jobs):
        self.jobs = jobs

    async def request(self, flow: http.HTTPFlow) -> None:
        path = _only_path(flow)
        if _handled(flow) or not path.startswith(JOBS_PREFIX):
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
        if _handled(flow) or not (found := attached(flow)):
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
