"""Replay: the upstreams answered from a recording (`./run.sh replay FILE`), never the network.

A recording is a mitmproxy flow file made by `./run.sh record` (mitmproxy's `save_stream_file`).
Each client flow the ambassador routed names its upstream and the URL it requested there
(`flow.metadata["ambassador"]`); replay indexes the answers by upstream name, method, path and
query at the upstream, and body. So a recording serves a request whichever door it comes in
by (a path route or a proxy request to a `match.host`), one upstream's recording never answers
for another, and the upstream's origin is not compared: a recording made against a partner's
staging host answers a profile that points elsewhere.

Replay answers inside the upstream's service, before its stages: aggregate parts, batch items
and async jobs are answered from the recording too, and no stage (a token fetch included)
reaches the network. What the recorded answer says of the recording's own exchange (`X-Cache`,
`X-Ambassador-Attempts`) is left out: the answer reports what happened in replay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http, io
from multidict import CIMultiDict

from .defaults import refuse_start
from .exchange import UpstreamRequest, UpstreamResponse

log = logging.getLogger("ambassador")

# Set by the ambassador about the recording's own exchange, not part of the upstream's answer.
REPORTING_HEADERS = ("X-Cache", "X-Ambassador-Attempts", "X-Ambassador-Upstream")

Key = tuple[str, str, str, bytes]


def upstream_path(url: str) -> str:
    """The path and query of a URL at the upstream."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


@dataclass(frozen=True)
class Recording:
    """Recorded upstream answers by (upstream name, method, path and query, body)."""

    answers: dict[Key, UpstreamResponse]

    @classmethod
    def of(cls, flows: Iterable) -> Recording:
        answers: dict[Key, UpstreamResponse] = {}
        for flow in flows:
            notes = getattr(flow, "metadata", {}).get("ambassador", {})
            if not isinstance(flow, http.HTTPFlow) or flow.response is None or "upstream_url" not in notes:
                continue  # not an exchange the ambassador routed (an admin request, a refusal)
            key = (notes["upstream"], flow.request.method, upstream_path(notes["upstream_url"]), flow.request.raw_content or b"")
            answers.setdefault(key, recorded_answer(flow.response))  # the first of repeated requests
        return cls(answers)

    def answer(self, upstream: str, request: UpstreamRequest) -> UpstreamResponse | None:
        return self.answers.get((upstream, request.method, request.path, request.body))


def recorded_answer(response: http.Response) -> UpstreamResponse:
    headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.fields)
    for name in REPORTING_HEADERS:
        headers.popall(name, None)
    return UpstreamResponse(response.status_code, response.reason, headers, response.raw_content or b"")


def read_recording(path: str) -> Recording:
    try:
        with open(path, "rb") as f:
            return Recording.of(io.FlowReader(f).stream())
    except (OSError, exceptions.FlowReadException) as e:
        raise exceptions.OptionsError(f"cannot read the recording {path}: {e}") from None


class Replay:
    """Option `ambassador_replay`: a recording to answer from instead of the upstreams."""

    def __init__(self, manager):
        self.manager = manager

    def load(self, loader) -> None:
        loader.add_option(
            "ambassador_replay",
            str,
            "",
            "Answer from this recording (a flow file from ./run.sh record) instead of contacting upstreams.",
        )

    def configure(self, updated) -> None:
        if "ambassador_replay" not in updated:
            return  # a new profile's gateway takes the recording over from the one it replaces
        path = ctx.options.ambassador_replay
        try:
            recording = read_recording(path) if path else None
        except exceptions.OptionsError as e:
            if self.manager.watcher is None:  # still starting
                refuse_start(str(e))
                return
            raise
        if recording is not None:
            log.info("replaying %d recorded answers from %s", len(recording.answers), path)
        if self.manager.gateway is not None:
            self.manager.gateway.set_replay(recording)
