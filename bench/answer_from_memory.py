"""mitmdump addon: answer every request from memory, never contacting an upstream.

The reference for the ambassador's cache hits (`mitmdump -s bench/answer_from_memory.py
--set bench_body=FILE`): the least work a mitmproxy addon can do to answer a request, so the
ratio shows what the cache's lookup costs on top of mitmproxy itself.
"""

from __future__ import annotations

from pathlib import Path

from mitmproxy import ctx, http


class AnswerFromMemory:
    def __init__(self) -> None:
        self.body = b""

    def load(self, loader) -> None:
        loader.add_option("bench_body", str, "", "File whose contents answer every request.")

    def configure(self, updated) -> None:
        if "bench_body" in updated and ctx.options.bench_body:
            self.body = Path(ctx.options.bench_body).read_bytes()

    def request(self, flow: http.HTTPFlow) -> None:
        flow.response = http.Response.make(200, self.body, {"Content-Type": "text/plain", "Cache-Control": "public, max-age=3600"})


addons = [AnswerFromMemory()]
