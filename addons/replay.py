"""Replay: the upstreams answered from a recording (`./run.sh replay FILE`), never the network.

A recording is a mitmproxy flow file made by `./run.sh record` (mitmproxy's `save_stream_file`),
which holds every exchange the ambassador made with an upstream as a flow of its own
(`upstream_flows.py`). Replay answers each exchange from the last recorded answer of the same
upstream (by name) to the same method, path and query at the upstream (without the credential
the auth stage adds) and body. So a recording serves a request whichever door it comes in by
(a path route, a proxy request to a `match.host`, an aggregate part, a batch item, an async
job), one upstream's recording never answers for another, and the upstream's origin is not
compared: a recording made against a partner's staging host answers a profile that points
elsewhere.

Replay answers in place of the network, so every stage still runs and the answer reports what
happened in replay (`X-Cache`, `X-Ambassador-Attempts`), except the auth stage: no credential
is needed offline, and a token endpoint is network too. Recordings made before exchanges were
recorded as flows of their own hold none, and answer nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from mitmproxy import ctx, exceptions, http, io
from multidict import CIMultiDict

from .defaults import refuse_start
from .exchange import UpstreamRequest, UpstreamResponse

log = logging.getLogger("ambassador")

Key = tuple[str, str, str, bytes]


@dataclass(frozen=True)
class Recording:
    """Recorded upstream answers by (upstream name, method, path and query, body)."""

    answers: dict[Key, UpstreamResponse]

    @classmethod
    def of(cls, flows: Iterable) -> Recording:
        answers: dict[Key, UpstreamResponse] = {}
        for flow in flows:
            notes = getattr(flow, "metadata", {}).get("ambassador", {})
            if not isinstance(flow, http.HTTPFlow) or notes.get("exchange") != "try" or flow.response is None:
                continue  # a client's flow, a token fetch, a try that got no answer
            key = (notes["upstream"], flow.request.method, notes["upstream_path"], flow.request.raw_content or b"")
            answers[key] = recorded_answer(flow.response)  # the last try's: the answer that was used
        return cls(answers)

    def answer(self, upstream: str, request: UpstreamRequest) -> UpstreamResponse | None:
        return self.answers.get((upstream, request.method, request.path, request.body))


def recorded_answer(response: http.Response) -> UpstreamResponse:
    headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.fields)
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
