"""Static credentials through the real ambassador: bearer, header, query and
basic, with values from ${VAR} and ${file:...}; a credential the client sent in the same place
is replaced. What the upstream got is read from the upstream: its echo reaches the client with
the secret redacted."""

import base64
import json

import pytest

from harness import Ambassador, FakeUpstream, echo, run_sh
from profiles import profile, upstream

TOKEN, KEY, QUERY_KEY, PASSWORD = "tok-9f8e7d", "key-1a2b3c", "q k&=/+é", "pw:with spaces"


@pytest.fixture(scope="module")
def server():
    with FakeUpstream(echo) as up:
        yield up


@pytest.fixture(scope="module")
def amb(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    (folder / "secrets").mkdir()
    (folder / "secrets" / "pw").write_text(PASSWORD + "\n")
    credentials = profile(
        upstream("bearer", f"{server.url}/b", path_prefix="/bearer", auth={"type": "bearer", "token": "${PARTNER_TOKEN}"}),
        upstream(
            "header", f"{server.url}/h", path_prefix="/header",
            auth={"type": "header", "name": "X-Api-Key", "value": "${PARTNER_KEY}"},
        ),
        upstream(
            "query", f"{server.url}/q", path_prefix="/query",
            auth={"type": "query", "name": "api_key", "value": "${QUERY_KEY}"},
        ),
        upstream(
            "basic", f"{server.url}/basic", path_prefix="/basic",
            auth={"type": "basic", "username": "svc", "password": "${file:secrets/pw}"},
        ),
        upstream("plain", f"{server.url}/plain", path_prefix="/plain"),
    )
    env = {"PARTNER_TOKEN": TOKEN, "PARTNER_KEY": KEY, "QUERY_KEY": QUERY_KEY}
    with Ambassador(folder, credentials, env=env) as a:
        yield a


def received(body: bytes) -> dict:
    answer = json.loads(body)
    answer["headers"] = [(k.lower(), v) for k, v in answer["headers"]]
    return answer


def values(answer: dict, name: str) -> list[str]:
    return [v for k, v in answer["headers"] if k == name.lower()]


def test_bearer_from_an_environment_variable_replaces_the_clients(amb, server):
    status, _, body = amb.request("GET", "/bearer/x", [("Authorization", "Bearer mine"), ("authorization", "Basic Zm9vOmJhcg==")])
    assert status == 200
    assert server.received[-1].header_all("Authorization") == [f"Bearer {TOKEN}"]
    assert values(received(body), "Authorization") == ["Bearer [redacted]"]  # the echo, as the client gets it


def test_named_header_replaces_the_clients_and_keeps_the_others(amb, server):
    amb.request("GET", "/header/x", [("x-api-key", "mine"), ("Authorization", "Bearer client"), ("X-Other", "1")])
    got = server.received[-1]
    assert got.header_all("X-Api-Key") == [KEY]
    assert got.header_all("Authorization") == ["Bearer client"]  # not the place this upstream uses
    assert got.header_all("X-Other") == ["1"]


def test_query_parameter_is_encoded_and_replaces_the_clients(amb, server):
    status, _, body = amb.get("/query/search?q=a%20b&api_key=mine&x=1&api%5Fkey=again&empty=")
    assert status == 200
    assert server.received[-1].path == "/q/search?q=a%20b&x=1&empty=&api_key=q%20k%26%3D%2F%2B%C3%A9"
    assert received(body)["path"] == "/q/search?q=a%20b&x=1&empty=&api_key=[redacted]"


def test_query_parameter_on_a_path_without_query(amb, server):
    amb.get("/query")
    assert server.received[-1].path == "/q?api_key=q%20k%26%3D%2F%2B%C3%A9"


def test_basic_from_a_file(amb, server):
    status, _, body = amb.get("/basic/x", {"Authorization": "Basic bWU6bWluZQ=="})
    assert values(received(body), "Authorization") == ["Basic [redacted]"]
    (header,) = server.received[-1].header_all("Authorization")
    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]).decode() == f"svc:{PASSWORD}"


def test_an_upstream_without_auth_forwards_the_clients_credential(amb):
    _, _, body = amb.get("/plain/x", {"Authorization": "Bearer client"})
    assert values(received(body), "Authorization") == ["Bearer client"]


def test_status_names_the_kind_only(amb):
    upstreams = amb.status()["upstreams"]
    assert {name: upstreams[name].get("auth") for name in upstreams} == {
        "bearer": {"type": "bearer"}, "header": {"type": "header"}, "query": {"type": "query"},
        "basic": {"type": "basic"}, "plain": None,
    }


@pytest.mark.parametrize(
    "auth, key, problem",
    [
        ({"type": "header", "name": "Host", "value": "x"}, "auth.name", "Host cannot carry a credential"),
        ({"type": "header", "name": "X Key", "value": "x"}, "auth.name", "must be an HTTP header name"),
        ({"type": "bearer", "token": "a\r\nX-Evil: 1"}, "auth.token", "must not contain line breaks"),
        ({"type": "basic", "username": "a:b", "password": "x"}, "auth.username", "must not contain ':'"),
    ],
)
def test_credentials_http_cannot_carry_stop_startup(tmp_path, auth, key, problem):
    bad = profile(upstream("partner", "http://127.0.0.1:9", path_prefix="/p", auth=auth)).write(tmp_path / "bad.yaml")
    amb = Ambassador(tmp_path, bad)
    with pytest.raises(AssertionError, match="ambassador exited"):
        amb.start()
    assert amb.proc.wait(10) == 2
    assert f"upstreams.partner.{key}" in amb.output and problem in amb.output
    assert "Traceback" not in amb.output
    checked = run_sh("check", str(bad))  # `check` refuses it too, for the same reason
    assert checked.returncode == 2 and f"upstreams.partner.{key}: {problem}" in checked.stderr
