"""The bundled demo legacy service: a slow, sometimes failing JSON API on loopback.

    python demo/legacy_service.py --port 8081

GET /customers/{id}        a customer (50-300 ms; about one answer in ten is a 503)
GET /customers/{id}/orders the customer's orders (slow: 0.5-1.5 s)
GET /health                always 200, at once
"""

from __future__ import annotations

import argparse
import asyncio
import random

from aiohttp import web

NAMES = ["Ada Lovelace", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth"]


def make_app(failure_rate: float = 0.1, rng: random.Random | None = None) -> web.Application:
    rng = rng or random.Random()

    async def flaky(request: web.Request, low: float, high: float) -> web.Response | None:
        await asyncio.sleep(rng.uniform(low, high))
        if rng.random() < failure_rate:
            return web.json_response({"error": "legacy backend busy, try again"}, status=503)
        return None

    def customer_id(request: web.Request) -> int:
        try:
            return int(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound(text='{"error": "no such customer"}', content_type="application/json") from None

    async def customer(request: web.Request) -> web.Response:
        cid = customer_id(request)
        if failure := await flaky(request, 0.05, 0.3):
            return failure
        return web.json_response(
            {"id": cid, "name": NAMES[cid % len(NAMES)], "tier": "gold" if cid % 3 == 0 else "standard"},
            headers={"Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT"},
        )

    async def orders(request: web.Request) -> web.Response:
        cid = customer_id(request)
        if failure := await flaky(request, 0.5, 1.5):
            return failure
        return web.json_response([{"order": cid * 100 + n, "customer": cid, "total": 10.5 * n} for n in range(1, 4)])

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/customers/{id}", customer)
    app.router.add_get("/customers/{id}/orders", orders)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--failure-rate", type=float, default=0.1)
    args = parser.parse_args()
    web.run_app(make_app(args.failure_rate), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
