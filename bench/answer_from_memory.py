"""mitmdump addon: answer every request from memory, never contacting an upstream.

The reference for the ambassador's cache hits (`mitmdump -s bench/answer_from_memory.py
--set bench_answer=FILE`): the least work a mitmproxy addon can do to answer a request, so the
ratio shows what the cache's lookup costs on top of mitmproxy itself.

FILE holds the answer bench/run.py got from the upstream before starting the proxies (JSON:
status, header fields, body in base64), every header included: the ambassador's cache hits
carry the upstream's headers too, and mitmproxy's cost of writing an answer grows with its
header count. Comparing against a shorter answer would charge the cache for headers it must
keep.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from mitmproxy import ctx, http


class AnswerFromMemory:
    def __init__(self) -> None:
        self.answer: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None

    def load(self, loader) -> None:
        loader.add_option("bench_answer", str, "", "JSON file with the answer to give every request.")

    def configure(self, updated) -> None:
        if "bench_answer" in updated and ctx.options.bench_answer:
            saved = json.loads(Path(ctx.options.bench_answer).read_text())
            fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in saved["headers"]]
            self.answer = saved["status"], fields, base64.b64decode(saved["body"])

    def request(self, flow: http.HTTPFlow) -> None:
        status, fields, body = self.answer
        flow.response = http.Response.make(status, body, fields)


addons = [AnswerFromMemory()]
