"""The exchange with an upstream over HTTP(S): one aiohttp connection pool and TLS context each.

mitmproxy has no per-request upstream timeout and cannot resend a request, so the ambassador
talks to upstreams itself and hands mitmproxy the finished response.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from contextvars import ContextVar
from typing import Callable
from urllib.parse import quote, quote_plus

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .bounded import too_large
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse, end_to_end
from .header_bytes import sending_header_bytes
from .pool import GuardedConnector
from .profile import EgressProxy, Upstream, UpstreamURL
from .reflected import Secrets, redacted

log = logging.getLogger(__name__)

# aiohttp adds these when absent; the ambassador forwards what the client sent, nothing more.
NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# How long to wait for a TLS server to refuse a probe handshake (see refused_handshake).
TLS_PROBE_WAIT = 0.5

# Set by a stage that must know when its request reaches the wire (limit: a paced request
# holds its token's place until then, however long opening a connection takes); called as the
# request is written, and perhaps again (it must not mind).
request_written: ContextVar[Callable[[], None] | None] = ContextVar("ambassador_request_written", default=None)


class SignallingRequest(aiohttp.ClientRequest):
    """aiohttp's request, telling `request_written` when it is written to a connection."""

    async def send(self, conn):
        if (written := request_written.get()) is not None:
            written()
        return await super().send(conn)


class Transport:
    """Sends requests to one URL of an upstream (its `url` or a failover URL), with the
    upstream's TLS settings. Create and use it inside the running event loop."""

    def __init__(self, upstream: Upstream, url: UpstreamURL):
        self.upstream = upstream
        self.url = url
        self.origin = url.origin
        if not upstream.tls.verify and url == upstream.url:  # said once per upstream
            log.warning("upstream %s: TLS certificate verification is switched off (tls.verify: false)", upstream.name)
        self.ssl = upstream.tls.context() if url.scheme == "https" else False
        self.proxy, credentials = proxy_settings(upstream.proxy)
        # A CONNECT carries the proxy's credentials for a tunnel (https); an absolute-form
        # request carries them itself (http).
        self.connect_headers = credentials if self.ssl else None
        self.request_credentials = None if self.ssl else credentials
        self.proxy_secrets = Secrets(proxy_secret_forms(upstream.proxy)) if credentials else None
        self._session: aiohttp.ClientSession | None = None
        # The largest answer body read (mitmproxy's body_size_limit, which bounds both directions).
        self.max_body: int | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=GuardedConnector(self.upstream.name, ssl=self.ssl, limit=512, keepalive_timeout=30),
                request_class=SignallingRequest,
                auto_decompress=False,
                skip_auto_headers=NO_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def send(self, request: UpstreamRequest, timeout: float) -> UpstreamResponse:
        """Raises TimeoutError after `timeout` seconds, AmbassadorError for connection failures."""
        name = self.upstream.name
        url = URL(self.origin + request.path, encoded=True)
        headers = request.headers
        if self.request_credentials:
            headers = headers.copy()
            headers.update(self.request_credentials)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout(timeout):
                with sending_header_bytes():
                    async with self.session().request(
                        request.method,
                        url,
                        headers=headers,
                        data=request.body or None,
                        allow_redirects=False,
                        proxy=self.proxy,
                        proxy_headers=self.connect_headers,
                    ) as answer:
                        if answer.status == 101:  # leaving the block closes the connection: aiohttp counts it upgraded
                            raise self.unasked_switch()
                        if answer.status == 407 and self.proxy:  # the proxy's, never the upstream's (it is hop-by-hop)
                            raise AmbassadorError("connect_error", proxy_refusal(self.upstream.proxy, name, 407, answer.reason), name)
                        # Cancelled here (a hedge lost, the client left), aiohttp closes the
                        # connection rather than pool it with part of an answer still on it
                        # (tests/e2e/test_hedge_e2e.py holds it to that).
                        body = await self.read_body(answer, request)
        except TimeoutError:
            raise  # an OSError too, but the caller's to report: it knows the timeout in force
        except (aiohttp.ClientError, OSError) as e:
            if (problem := proxy_failure(e, self.upstream.proxy, name)) is not None:
                raise AmbassadorError("connect_error", problem, name) from None
            problem = tls_failure(e)
            if problem is None and self.ssl and not isinstance(e, aiohttp.ClientConnectorError):
                problem = await self.refused_handshake(deadline)
            if problem:
                raise AmbassadorError("connect_error", f"TLS handshake with upstream {name} failed: {problem}", name) from None
            if isinstance(e, aiohttp.ClientConnectorError):
                raise AmbassadorError("connect_error", f"cannot connect to upstream {name}: {e.os_error.strerror or e}", name) from None
            # Not str(e): a ClientResponseError's names the URL, whose query can hold a credential.
            detail = e.message if isinstance(e, aiohttp.ClientResponseError) else e
            raise AmbassadorError("connect_error", f"upstream {name} broke off the exchange: {type(e).__name__}: {detail}", name) from None
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.raw_headers)
        headers = end_to_end(headers)
        if _has_body(request.method, answer.status):
            headers["Content-Length"] = str(len(body))
        response = UpstreamResponse(answer.status, answer.reason or "", headers, body)
        if self.proxy_secrets is not None:  # a proxy that forwarded Proxy-Authorization, echoed back
            return redacted(response, self.proxy_secrets, name)
        return response

    def unasked_switch(self) -> AmbassadorError:
        """A 101 answer: the ambassador never asks to switch protocols (Upgrade ends at this hop).

        `upstream_error`, not `connect_error`: the exchange went through and the upstream
        answered; sending the request again (as retries do for connect_error) gets the same answer.
        """
        name = self.upstream.name
        return AmbassadorError("upstream_error", f"upstream {name} answered 101 Switching Protocols to a request that did not ask to switch", name)

    async def read_body(self, answer: aiohttp.ClientResponse, request: UpstreamRequest) -> bytes:
        """The answer's body, refused beyond `max_body` or the request's own bound: bodies are
        held in memory whole."""
        limit, length = self.max_body, answer.content_length
        if request.max_body is not None and (limit is None or request.max_body < limit):
            limit = request.max_body
        if limit is None or not _has_body(request.method, answer.status) or (length is not None and length <= limit):
            return await answer.read()
        if length is None:  # chunked or ended by closing: count as it comes
            chunks, size = [], 0
            async for chunk in answer.content.iter_any():
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        name = self.upstream.name
        if limit == request.max_body:
            raise too_large(name, "a body", limit)
        raise AmbassadorError("upstream_error", f"upstream {name} answered with a body over {limit} bytes (body_size_limit)", name)

    async def refused_handshake(self, deadline: float) -> str | None:
        """After a TLS exchange broke off: does the upstream refuse our handshake?

        A TLS 1.3 server checks the client certificate after the handshake is complete on our
        side, so its refusal (an alert) can arrive after the request was written and be lost
        when the connection is reset. A fresh handshake, then waiting for the server's first
        record, shows the alert reliably. Only failures pay for this.
        """
        try:
            async with asyncio.timeout(min(TLS_PROBE_WAIT, deadline - asyncio.get_running_loop().time())):
                reader, writer = await self.open_tls()
                try:
                    first = await reader.read(1)
                finally:
                    writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:  # ssl.SSLError and TimeoutError included
            return tls_failure(e)
        if first == b"" and not self.upstream.tls.client_cert:
            # Some servers refuse a missing client certificate by closing, with no alert.
            return "the upstream closed the connection right after the handshake (does it require a client certificate? see tls.client_cert)"
        return None

    async def open_tls(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TLS connection to the upstream, through its proxy's CONNECT tunnel if it has one."""
        url = self.url
        if self.proxy is None:
            return await asyncio.open_connection(url.host, url.port, ssl=self.ssl)
        reader, writer = await asyncio.open_connection(self.proxy.host, self.proxy.port)
        authority = f"[{url.host}]:{url.port}" if ":" in url.host else f"{url.host}:{url.port}"
        fields = "".join(f"{name}: {value}\r\n" for name, value in (self.connect_headers or {}).items())
        writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{fields}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if head.split(b" ", 2)[1:2] != [b"200"]:
            writer.close()
            raise ConnectionRefusedError("the proxy refused the tunnel")
        await writer.start_tls(self.ssl, server_hostname=url.host)
        return reader, writer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def proxy_settings(proxy: EgressProxy | None) -> tuple[URL | None, dict[str, str]]:
    """The proxy URL as aiohttp takes it (`proxy=`), and the Proxy-Authorization its
    credentials make (none without): aiohttp sends `proxy_headers` with a CONNECT only."""
    if proxy is None:
        return None, {}
    if not (proxy.username or proxy.password):
        return URL(proxy.url), {}
    return URL(proxy.url), {"Proxy-Authorization": aiohttp.encode_basic_auth(proxy.username, proxy.password)}


def proxy_secret_forms(proxy: EgressProxy | None) -> tuple[str, ...]:
    """The proxy's password in each form it may take in text (see reflected.Secrets), longest first."""
    if proxy is None or not proxy.password:
        return ()
    pair = f"{proxy.username}:{proxy.password}"
    forms = {pair, base64.b64encode(pair.encode()).decode(), proxy.password, quote(proxy.password, safe=""), quote_plus(proxy.password)}
    return tuple(sorted(forms, key=len, reverse=True))


def proxy_failure(error: BaseException, proxy: EgressProxy | None, name: str) -> str | None:
    """What went wrong with the upstream's proxy, if that is why `error` happened; else None.

    Names the proxy by its URL without credentials. A TLS failure inside the tunnel is the
    upstream's (tls_failure), not the proxy's.
    """
    if proxy is None:
        return None
    if isinstance(error, aiohttp.ClientHttpProxyError):
        return proxy_refusal(proxy, name, error.status, error.message)
    if isinstance(error, aiohttp.ClientConnectorError) and tls_failure(error) is None:
        # Through a proxy, the ambassador's only own connection is to the proxy.
        return f"cannot connect to proxy {proxy.url} for upstream {name}: {error.os_error.strerror or error.os_error}"
    return None


def proxy_refusal(proxy: EgressProxy, name: str, status: int, reason: str | None) -> str:
    problem = f"proxy {proxy.url} refused the request for upstream {name}: {status} {reason or ''}".rstrip()
    if status == 407:
        hint = "it did not accept the credentials in `proxy`" if proxy.username else "it wants credentials: proxy: http://user:password@host:port"
        problem += f" ({hint})"
    return problem


def _has_body(method: str, status: int) -> bool:
    """False where Content-Length describes a body that is not sent (HEAD, 1xx, 204, 304)."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)


# What the TLS alerts a server sends mean for whoever reads the error.
TLS_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the upstream requires a client certificate (tls.client_cert)",
    "TLSV1_ALERT_UNKNOWN_CA": "the upstream does not trust the issuer of our client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the upstream refused our client certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the upstream refused our client certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the upstream refused the handshake (a client certificate or cipher it wants?)",
}


def tls_failure(error: BaseException) -> str | None:
    """Why TLS failed, when `error` is a TLS failure or was caused by one; else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        # aiohttp's TLS errors are ssl.SSLError subclasses themselves, but the details are in
        # the error they wrap.
        inner = getattr(error, "certificate_error", None) or getattr(error, "os_error", None) or error
        if isinstance(inner, ssl.SSLCertVerificationError):
            return f"certificate verify failed ({getattr(inner, 'verify_message', None) or inner})"
        if isinstance(inner, ssl.SSLError):
            reason = getattr(inner, "reason", None)
            return TLS_ALERTS.get(reason) or reason or str(inner)
        error = error.__cause__ or error.__context__
    return None
