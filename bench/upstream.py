"""A small aiohttp upstream for the benchmark, run in its own process.

    python bench/upstream.py --port 8999 --file www/file [--delay 0.2]

With `--delay 0.2` it is the slow upstream (a fixed 200 ms before each answer, without
blocking: many requests wait at once). With no delay it stands in for nginx when nginx
cannot be installed. It serves the same paths as the nginx configuration in run.py:
`/file`, `/cacheable/file` (public, max-age=3600) and `/private/file` (no-store; 401
without `Authorization: Bearer bench-token`).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

TOKEN = "bench-token"
CACHEABLE = "public, max-age=3600"


def make_app(body: bytes, delay: float) -> web.Application:
    from aiohttp import web  # here, so that run.py can share the constants above without aiohttp

    async def answer(request: web.Request, headers: dict[str, str] | None = None) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=body, content_type="text/plain", headers=headers)

    async def plain(request: web.Request) -> web.Response:
        return await answer(request)

    async def cacheable(request: web.Request) -> web.Response:
        return await answer(request, {"Cache-Control": CACHEABLE})

    async def private(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="missing or wrong bearer token\n")
        return await answer(request, {"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/file", plain)
    app.router.add_get("/cacheable/file", cacheable)
    app.router.add_get("/private/file", private)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True, help="the body of every answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    from aiohttp import web

    web.run_app(make_app(args.file.read_bytes(), args.delay), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
