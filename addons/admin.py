"""`/_ambassador/...`: the ambassador's own read-only endpoints."""

from __future__ import annotations

from mitmproxy import http

from .answers import refuse, json_response
from .errors import AmbassadorError
from .operations import METRICS_PATH, metrics_response
from .profile import ADMIN_PREFIX
from .profile_manager import ProfileManager
from .routing import is_admin_path


class AdminEndpoints:
    """`/_ambassador/...` belongs to the ambassador on every listener: the read-only endpoints
    answered from one table (path -> answer), anything else under the prefix is a 404. Batch
    and jobs, which talk to upstreams, are addons of their own before this one (batch.py,
    async_replies.py).

    Health is answered only once a profile is loaded: before that every request, this one
    included, gets `503 not_ready` at its header block (AmbassadorAddons.requestheaders)."""

    admin_only = True  # acts on `/_ambassador/...` requests only (see AmbassadorAddons)

    def __init__(self, manager: ProfileManager):
        self.manager = manager
        self.endpoints = {  # all answer GET (and HEAD)
            f"{ADMIN_PREFIX}/status": lambda flow: json_response(200, self.manager.gateway.status()),
            f"{ADMIN_PREFIX}/health": lambda flow: json_response(200, {"status": "ok", "profile": str(self.manager.gateway.profile.path)}),
            METRICS_PATH: metrics_response,
        }

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or not is_admin_path(flow.request.path):
            return
        path = flow.request.path.split("?", 1)[0]
        answer = self.endpoints.get(path)
        if answer is None:
            refuse(flow, AmbassadorError("no_route", f"no admin endpoint {path}"))
        elif flow.request.method not in ("GET", "HEAD"):
            refuse(flow, AmbassadorError("bad_request", f"{path} answers GET only"))
        else:
            flow.response = answer(flow)
