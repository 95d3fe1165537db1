"""mitmdump addon: answer every request from memory, never contacting an upstream.

The reference for the ambassador's cache hits (`mitmdump -s bench/answer_from_memory.py
--set bench_response_from=URL`): the least work a mitmproxy addon can do to answer a request,
so the ratio shows what the cache's lookup costs on top of mitmproxy itself.

It answers with the response URL gave when it started, every header included: the
ambassador's cache hits carry the upstream's headers too, and mitmproxy's cost of writing a
response grows with its header count. Comparing against a shorter answer would charge the
cache for headers it must keep.
"""

from __future__ import annotations

import asyncio
import urllib.request

from mitmproxy import ctx, http


# Fields of the fetch's connection, not of the response to replay (urllib asks for "close").
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding"}


def fetch(url: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(url, timeout=30) as answer:
        fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP]
        return answer.status, fields, answer.read()


class AnswerFromMemory:
    def __init__(self) -> None:
        self.answer: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None

    def load(self, loader) -> None:
        loader.add_option("bench_response_from", str, "", "URL whose response, fetched once at start, answers every request.")

    async def running(self) -> None:
        self.answer = await asyncio.to_thread(fetch, ctx.options.bench_response_from)

    def request(self, flow: http.HTTPFlow) -> None:
        status, fields, body = self.answer
        flow.response = http.Response.make(status, body, fields)


addons = [AnswerFromMemory()]
