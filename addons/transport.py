"""The exchange with an upstream over HTTP(S): one aiohttp connection pool and TLS context each.

mitmproxy has no per-request upstream timeout and cannot resend a request, so the ambassador
talks to upstreams itself and hands mitmproxy the finished response.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse, end_to_end
from .profile import TLSPolicy, Upstream

log = logging.getLogger(__name__)

# aiohttp adds these when absent; the ambassador forwards what the client sent, nothing more.
NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def ssl_context(tls: TLSPolicy, upstream_name: str) -> ssl.SSLContext:
    if not tls.verify:
        log.warning("upstream %s: TLS certificate verification is switched off (tls.verify: false)", upstream_name)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context()
        if tls.ca:
            context.load_verify_locations(cafile=str(tls.ca))
    if tls.client_cert:
        context.load_cert_chain(str(tls.client_cert), str(tls.client_key) if tls.client_key else None)
    return context


class Transport:
    """Sends requests to one upstream. Create and use it inside the running event loop."""

    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self.origin = upstream.url.origin
        self.ssl = ssl_context(upstream.tls, upstream.name) if upstream.url.scheme == "https" else False
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=512, keepalive_timeout=30),
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
        try:
            async with asyncio.timeout(timeout):
                async with self.session().request(
                    request.method,
                    url,
                    headers=request.headers,
                    data=request.body or None,
                    allow_redirects=False,
                ) as answer:
                    body = await answer.read()
        except TimeoutError:
            raise  # an OSError too, but the caller's to report: it knows the timeout in force
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError) as e:
            raise AmbassadorError("connect_error", f"TLS handshake with upstream {name} failed: {_tls_reason(e)}", name) from None
        except aiohttp.ClientConnectorError as e:
            raise AmbassadorError("connect_error", f"cannot connect to upstream {name}: {e.os_error.strerror or e}", name) from None
        except (aiohttp.ClientError, OSError) as e:
            raise AmbassadorError("connect_error", f"upstream {name} broke off the exchange: {type(e).__name__}: {e}", name) from None
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.raw_headers)
        headers = end_to_end(headers)
        if _has_body(request.method, answer.status):
            headers["Content-Length"] = str(len(body))
        return UpstreamResponse(answer.status, answer.reason or "", headers, body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _has_body(method: str, status: int) -> bool:
    """False where Content-Length describes a body that is not sent (HEAD, 1xx, 204, 304)."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)


def _tls_reason(error: Exception) -> str:
    inner = getattr(error, "certificate_error", None) or getattr(error, "os_error", None) or error
    return getattr(inner, "reason", None) or getattr(inner, "verify_message", None) or str(inner)
