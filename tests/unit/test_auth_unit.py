"""The auth stage's plain-Python parts: query rewriting and what it notes for the flow."""

import asyncio

import pytest
from multidict import CIMultiDict

from addons.auth import auth_stage, with_query_parameter
from addons.exchange import UpstreamRequest, UpstreamResponse
from addons.profile import BasicAuth, BearerAuth, HeaderAuth, QueryAuth, Upstream, upstream_url, Match


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/x", "/x?k=v"),
        ("/x?", "/x?k=v"),
        ("/x?a=1", "/x?a=1&k=v"),
        ("/x?k=old", "/x?k=v"),
        ("/x?k", "/x?k=v"),
        ("/x?a=%20&k=1&b=2&k=3", "/x?a=%20&b=2&k=v"),
        ("/x?%6B=enc&k%3D=other", "/x?k%3D=other&k=v"),  # names compared decoded
        ("/x?kk=1&a+b=2", "/x?kk=1&a+b=2&k=v"),
    ],
)
def test_with_query_parameter(path, expected):
    assert with_query_parameter(path, "k", "k=v") == expected


def run_stage(policy, path="/p?a=1", headers=()):
    upstream = Upstream(name="partner", url=upstream_url("http://127.0.0.1:9"), match=Match(path_prefix="/p"), auth=policy)
    stage = auth_stage(upstream, deadline_of=lambda request: request.started + 5)
    request = UpstreamRequest("GET", path, CIMultiDict(headers))
    sent = []

    async def transport(r):
        sent.append((r.path, CIMultiDict(r.headers)))
        return UpstreamResponse(200, "OK", CIMultiDict())

    asyncio.run(stage(request, transport))
    return request.notes, sent[0]


@pytest.mark.parametrize(
    "policy, header, shown, kind",
    [
        (BearerAuth("t0k"), "Authorization", "Bearer [redacted]", "bearer"),
        (BasicAuth("u", "p"), "Authorization", "Basic [redacted]", "basic"),
        (HeaderAuth("X-Api-Key", "k3y"), "X-Api-Key", "[redacted]", "header"),
    ],
)
def test_header_credentials_note_only_redacted_values(policy, header, shown, kind):
    notes, (path, headers) = run_stage(policy, headers=[(header.lower(), "client-value")])
    assert notes == {"auth": kind, "shown_headers": {header: shown}}
    assert headers.getall(header) != ["client-value"] and len(headers.getall(header)) == 1


def test_query_credential_notes_the_kind_and_no_secret():
    notes, (path, _) = run_stage(QueryAuth("key", "s3cr3t"))
    assert path == "/p?a=1&key=s3cr3t"
    assert notes == {"auth": "query"}


@pytest.mark.parametrize(
    "policy, header, injected, client",
    [
        (HeaderAuth("X-Api-Key", "k3y"), "X-Api-Key", "k3y", ["X_Api_Key", "x_api_key", "X-API_KEY", "x-api-key"]),
        (HeaderAuth("X_Api_Key", "k3y"), "X_Api_Key", "k3y", ["X-Api-Key", "x_API_key"]),
        (BearerAuth("t0k"), "Authorization", "Bearer t0k", ["authorization", "AUTHORIZATION"]),
    ],
)
def test_client_headers_that_read_as_the_credential_header_are_dropped(policy, header, injected, client):
    _, (_, headers) = run_stage(policy, headers=[*((name, "client-value") for name in client), ("X_Other_Key", "kept"), ("Accept", "*/*")])
    assert [(k, v) for k, v in headers.items() if k.lower().replace("_", "-") == header.lower().replace("_", "-")] == [(header, injected)]
    assert headers["X_Other_Key"] == "kept" and headers["Accept"] == "*/*"


def echoing_stage(policy):
    """The stage in front of an upstream that echoes the request it got, in a header and the body."""
    upstream = Upstream(name="partner", url=upstream_url("http://127.0.0.1:9"), match=Match(path_prefix="/p"), auth=policy)
    stage = auth_stage(upstream, deadline_of=lambda request: request.started + 5)
    sent = []

    async def echo(r):
        sent.append(r)
        seen = " ".join([r.path, *r.headers.values()])
        return UpstreamResponse(200, "OK", CIMultiDict({"X-Seen": seen}), seen.encode())

    answer = asyncio.run(stage(UpstreamRequest("GET", "/p", CIMultiDict()), echo))
    return answer, sent[0]


@pytest.mark.parametrize(
    "policy, on_the_wire, also_secret",
    [
        (BearerAuth("t0k-en"), "t0k-en", None),
        (BasicAuth("u", "pa ss"), "dTpwYSBzcw==", "pa ss"),  # base64 of u:pa ss, and the password
        (HeaderAuth("X-Api-Key", "k3y"), "k3y", None),
        (QueryAuth("key", "s3/cr3t"), "s3%2Fcr3t", "s3/cr3t"),
    ],
)
def test_every_static_credential_echoed_back_is_redacted(policy, on_the_wire, also_secret):
    answer, sent = echoing_stage(policy)
    assert on_the_wire in " ".join([sent.path, *sent.headers.values()])  # it was sent
    for text in (answer.headers["X-Seen"], answer.body.decode()):
        assert "[redacted]" in text
        assert on_the_wire not in text
        assert also_secret is None or also_secret not in text
    assert answer.headers["X-Seen"] == answer.body.decode()
