"""The admin commands, from mitmweb's command bar (its REST API, as the UI calls it) and from a
mitmdump script."""

import json

import pytest

from harness import Ambassador, FakeUpstream, Reply, echo
from profiles import Profile, profile, upstream
from webui import WebAmbassador


def cacheable(req) -> Reply:
    return Reply.json({"path": req.path}, headers=[("Cache-Control", "max-age=3600")])


@pytest.fixture(scope="module")
def upstreams():
    with FakeUpstream(echo) as billing, FakeUpstream(cacheable) as catalog, FakeUpstream(cacheable) as prices:
        yield {"billing": billing, "catalog": catalog, "prices": prices}


def commands_profile(upstreams) -> Profile:
    return profile(
        upstream("billing", upstreams["billing"].url, path_prefix="/billing", breaker={"fail_max": 5, "reset_timeout": "1h"}),
        upstream("catalog", upstreams["catalog"].url, path_prefix="/catalog", cache={}),
        upstream("prices", upstreams["prices"].url, path_prefix="/prices", cache={}),
    )


@pytest.fixture(scope="module")
def web(upstreams, tmp_path_factory):
    with WebAmbassador(tmp_path_factory.mktemp("commands"), commands_profile(upstreams)) as amb:
        yield amb


def test_breaker_open_and_close(web, upstreams):
    billing = upstreams["billing"]
    assert web.get("/billing/a")[0] == 200
    before = len(billing.received)

    start = len(web.lines)
    assert web.command("ambassador.breaker.open", "billing") == {"value": None}
    assert web.status()["upstreams"]["billing"]["breaker"] == "open"
    status, headers, body = web.get("/billing/a")
    assert status == 503 and json.loads(body)["reason"] == "circuit_open"
    assert int(headers["Retry-After"]) > 3000  # reset_timeout 1h
    assert len(billing.received) == before  # no upstream contact while open
    web.wait_for_log(r"breaker of billing opened by command", start=start)

    assert web.command("ambassador.breaker.close", "billing") == {"value": None}
    assert web.status()["upstreams"]["billing"]["breaker"] == "closed"
    assert web.get("/billing/a")[0] == 200
    assert len(billing.received) == before + 1
    web.wait_for_log(r"breaker of billing closed by command", start=start)


def test_cache_clear_one_upstream_or_all(web, upstreams):
    for path in ("/catalog/items", "/prices/today"):
        assert web.get(path)[1]["X-Cache"] == "MISS"
        assert web.get(path)[1]["X-Cache"] == "HIT"

    assert web.command("ambassador.cache.clear", "catalog") == {"value": None}
    assert web.get("/catalog/items")[1]["X-Cache"] == "MISS"
    assert web.get("/prices/today")[1]["X-Cache"] == "HIT"  # only the named upstream's cache

    assert web.command("ambassador.cache.clear") == {"value": None}
    assert web.get("/catalog/items")[1]["X-Cache"] == "MISS"
    assert web.get("/prices/today")[1]["X-Cache"] == "MISS"
    web.wait_for_log(r"cache of prices cleared by command")


@pytest.mark.parametrize(
    "command, arguments, error",
    [
        ("ambassador.breaker.open", ["nope"], "no upstream 'nope'; the profile has: billing, catalog, prices"),
        ("ambassador.breaker.close", ["catalog"], "upstream 'catalog' has no breaker (no `breaker:` section in its profile)"),
        ("ambassador.cache.clear", ["billing"], "upstream 'billing' has no cache (no `cache:` section in its profile)"),
    ],
)
def test_commands_say_what_is_wrong(web, command, arguments, error):
    assert web.command(command, *arguments) == {"error": error}


def test_commands_are_listed_for_the_command_bar(web):
    status, commands = web.web_request("GET", "/commands")
    assert status == 200
    for name in ("ambassador.reload", "ambassador.profile", "ambassador.breaker.open", "ambassador.breaker.close", "ambassador.cache.clear"):
        assert name in commands, name
    assert commands["ambassador.breaker.open"]["help"].startswith("Open an upstream's circuit breaker")


SCRIPT = '''
"""Opens the billing breaker when asked at /ops/maintenance (a mitmdump script using the commands)."""
from mitmproxy import ctx, http


class Maintenance:
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.path == "/ops/maintenance":
            ctx.master.commands.execute("ambassador.breaker.open billing")
            flow.response = http.Response.make(204)


addons = [Maintenance()]
'''


def test_commands_from_a_mitmdump_script(tmp_path, upstreams):
    script = tmp_path / "maintenance.py"
    script.write_text(SCRIPT)
    with Ambassador(tmp_path, commands_profile(upstreams), "-s", str(script)) as amb:
        assert amb.get("/billing/a")[0] == 200
        assert amb.get("/ops/maintenance")[0] == 204
        status, _, body = amb.get("/billing/a")
        assert status == 503 and json.loads(body)["reason"] == "circuit_open"
