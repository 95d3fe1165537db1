"""A real forwarding HTTP proxy on 127.0.0.1 playing a corporate egress proxy.

Absolute-form requests (`GET http://host:port/path HTTP/1.1`) are forwarded in origin form,
each on a kept-alive connection per target, Proxy-Authorization and Proxy-Connection removed
(unless `forward_authorization`, a misbehaving proxy); `CONNECT host:port` opens a tunnel
whose bytes it relays blindly. With `credentials` ("user:password") anything without them
gets 407. Answers are framed by Content-Length (what FakeUpstream sends). Host names in
`PARTNER_DOMAIN` (`*.partner.test`) resolve to 127.0.0.1 here only, as partner hosts behind
a corporate proxy do: the ambassador cannot reach them but through the proxy.

    with EgressProxy(credentials="svc:pw") as proxy:
        ... proxy.forwarded, proxy.tunnels, proxy.authorizations
"""

from __future__ import annotations

import asyncio
import base64
import threading
from urllib.parse import urlsplit

PARTNER_DOMAIN = ".partner.test"
REFUSAL = b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'


class EgressProxy:
    def __init__(self, credentials: str | None = None, forward_authorization: bool = False):
        self.expected = "Basic " + base64.b64encode(credentials.encode()).decode() if credentials else None
        self.forward_authorization = forward_authorization
        self.forwarded: list[str] = []  # the absolute-form targets of forwarded requests
        self.tunnels: list[str] = []  # the host:port of each CONNECT tunnel opened
        self.authorizations: list[str | None] = []  # the Proxy-Authorization of each request or CONNECT
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> "EgressProxy":
        self.thread.start()
        self.started.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self.serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.started.set()
        self.loop.run_forever()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        targets: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        try:
            while head := await read_head(reader):
                method, target, _ = head[0].split(" ", 2)
                fields = [line.split(":", 1) for line in head[1:]]
                authorization = next((v.strip() for k, v in fields if k.lower() == "proxy-authorization"), None)
                self.authorizations.append(authorization)
                body = await reader.readexactly(content_length(fields))
                if self.expected and authorization != self.expected:
                    self.refused += 1
                    writer.write(REFUSAL)
                    await writer.drain()
                    continue
                if method == "CONNECT":
                    self.tunnels.append(target)
                    await self.tunnel(target, reader, writer)
                    return
                self.forwarded.append(target)
                url = urlsplit(target)
                if url.netloc not in targets:
                    targets[url.netloc] = await asyncio.open_connection(resolved(url.hostname), url.port or 80)
                up_reader, up_writer = targets[url.netloc]
                dropped = {"proxy-connection"} | (set() if self.forward_authorization else {"proxy-authorization"})
                kept = [f"{k}:{v}" for k, v in fields if k.lower() not in dropped]
                path = url.path + (f"?{url.query}" if url.query else "")
                up_writer.write(f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + "\r\n".join(kept).encode("latin-1") + b"\r\n\r\n" + body)
                answer = await read_head(up_reader)
                length = 0 if method == "HEAD" or answer[0].split(" ")[1] in ("204", "304") else content_length([a.split(":", 1) for a in answer[1:]])
                writer.write("\r\n".join(answer).encode("latin-1") + b"\r\n\r\n" + await up_reader.readexactly(length))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for _, up_writer in targets.values():
                up_writer.close()
            writer.close()

    async def tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(resolved(host), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def resolved(host: str) -> str:
    return "127.0.0.1" if host.endswith(PARTNER_DOMAIN) else host


async def read_head(reader: asyncio.StreamReader) -> list[str] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    return head[:-4].decode("latin-1").split("\r\n")


def content_length(fields: list[list[str]]) -> int:
    return next((int(v) for k, v in fields if k.lower() == "content-length"), 0)
