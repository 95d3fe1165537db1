"""The egress proxy's decisions as plain functions: the profile value, the forms its password
takes, and what the ambassador says when the proxy is why an exchange failed."""

import asyncio
import base64
import errno
import ssl

import aiohttp
import pytest
import trustme
from yarl import URL

from addons.pool import GuardedConnector, GuardedResponseHandler
from addons.profile import EgressProxy, InvalidValue, egress_proxy
from addons.transport import proxy_failure, proxy_refusal, proxy_secret_forms, proxy_settings
from egress_proxy import EgressProxy as ProxyServer
from harness import FakeUpstream, echo
from test_tls_e2e import https_upstream

PROXY = EgressProxy("http://proxy.corp.example:3128", "svc", "p@ss:w/rd")


@pytest.mark.parametrize(
    "written, read",
    [
        ("http://proxy.corp.example:3128", EgressProxy("http://proxy.corp.example:3128")),
        ("http://Proxy.Corp.Example:3128/", EgressProxy("http://proxy.corp.example:3128")),
        ("http://proxy.corp.example", EgressProxy("http://proxy.corp.example")),  # port 80
        ("http://svc:p%40ss%3Aw%2Frd@proxy.corp.example:3128", PROXY),  # percent-decoded
        ("http://[::1]:3128", EgressProxy("http://[::1]:3128")),
    ],
)
def test_a_proxy_url_is_read_with_its_credentials_apart(written, read):
    assert egress_proxy(written) == read


@pytest.mark.parametrize(
    "written, problem",
    [
        ("https://svc:hunter2@proxy:3128", "must be an http:// proxy URL"),
        ("socks5://svc:hunter2@proxy:1080", "must be an http:// proxy URL"),
        ("http://svc:hunter2@", "must be an http:// proxy URL"),
        ("http://svc:hunter2@proxy:3128/path", "must not have a path"),
        ("http://svc:hunter2@proxy:3128?x", "must not have a path"),
        ("http://svc:hunter2@proxy:99999", "not a valid proxy URL"),
        ("http://svc:hunter2@proxy:0", "port must be 1-65535"),
        ("http://s%3Avc:hunter2@proxy:3128", "must not contain ':'"),
        ("http://svc:hunter2@proxy :3128", "must be an http:// proxy URL"),
    ],
)
def test_a_bad_proxy_url_is_refused_without_repeating_it(written, problem):
    with pytest.raises(InvalidValue, match=problem) as refused:
        egress_proxy(written)
    assert "hunter2" not in str(refused.value)


def test_the_credentials_never_show_in_a_repr():
    assert "p@ss" not in repr(PROXY) and "svc" not in repr(PROXY)


def test_the_password_in_every_form_it_travels_in_longest_first():
    forms = proxy_secret_forms(PROXY)
    assert set(forms) == {"svc:p@ss:w/rd", base64.b64encode(b"svc:p@ss:w/rd").decode(), "p@ss:w/rd", "p%40ss%3Aw%2Frd"}
    assert list(forms) == sorted(forms, key=len, reverse=True)
    assert proxy_secret_forms(EgressProxy("http://proxy:3128")) == ()
    assert proxy_secret_forms(None) == ()


def test_aiohttp_gets_the_url_and_utf8_basic_credentials():
    url, credentials = proxy_settings(EgressProxy("http://proxy:3128", "svc", "pässword"))
    assert str(url) == "http://proxy:3128"
    assert credentials == {"Proxy-Authorization": "Basic " + base64.b64encode("svc:pässword".encode()).decode()}
    assert proxy_settings(EgressProxy("http://proxy:3128")) == (URL("http://proxy:3128"), {})
    assert proxy_settings(None) == (None, {})


def test_a_407_names_the_proxy_and_what_to_do():
    without = proxy_refusal(EgressProxy("http://proxy:3128"), "billing", 407, "Proxy Authentication Required")
    assert without == (
        "proxy http://proxy:3128 refused the request for upstream billing: 407 Proxy Authentication Required"
        " (it wants credentials: proxy: http://user:password@host:port)"
    )
    assert "did not accept the credentials in `proxy`" in proxy_refusal(PROXY, "billing", 407, None)
    assert "p@ss" not in proxy_refusal(PROXY, "billing", 407, None)
    assert proxy_refusal(PROXY, "billing", 502, "Bad Gateway").endswith("upstream billing: 502 Bad Gateway")


def connector_error(error: OSError) -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("proxy", 3128, False, True, None, None, None)
    return aiohttp.ClientProxyConnectionError(key, error)


def test_an_unreachable_proxy_is_named_with_the_reason():
    refused = connector_error(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    assert proxy_failure(refused, PROXY, "billing") == "cannot connect to proxy http://proxy.corp.example:3128 for upstream billing: Connection refused"
    assert proxy_failure(refused, None, "billing") is None  # no proxy: the transport's usual message


def test_other_failures_are_not_the_proxys():
    assert proxy_failure(aiohttp.ServerDisconnectedError(), PROXY, "billing") is None


def test_connections_through_a_proxy_are_guarded_pooled_connections():
    """aiohttp makes the connection to the proxy, and the TLS tunnel inside a CONNECT, with the
    connector's protocol factory: both get GuardedResponseHandler (addons/pool.py)."""
    ca = trustme.CA()
    context = ssl.create_default_context()
    ca.configure_trust(context)

    async def through(proxy: ProxyServer, url: str, ssl_context) -> list:
        connector = GuardedConnector("test", ssl=ssl_context)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(2):
                async with session.get(f"{url}/x", proxy=proxy.url) as answer:
                    assert answer.status == 200 and await answer.read()  # read whole: released to the pool
            return [protocol for pooled in connector._conns.values() for protocol, _ in pooled]

    with ProxyServer() as proxy, FakeUpstream() as plain, https_upstream(echo, ca) as secure:
        for url, ssl_context in ((plain.url, False), (secure.url, context)):
            pooled = asyncio.run(through(proxy, url, ssl_context))
            assert len(pooled) == 1 and isinstance(pooled[0], GuardedResponseHandler), url
        assert len(proxy.tunnels) == 1 and len(proxy.forwarded) == 2  # kept alive: one tunnel for both
