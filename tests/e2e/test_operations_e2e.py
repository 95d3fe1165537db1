"""Operating the ambassador through the real thing: what the metrics count, health, and
reloads that keep state and pick up rotated secrets."""

import json
import platform
import threading

import mitmproxy.version
import pytest

from harness import Ambassador, FakeUpstream, Received, Reply, echo
from profiles import profile, upstream
from test_metrics_e2e import scrape, value, wait_until


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    with FakeUpstream(echo) as api:
        with Ambassador(tmp_path_factory.mktemp("plain"), profile(upstream("api", api.url, path_prefix="/api"))) as amb:
            yield amb


def test_health_once_the_profile_is_loaded(plain):
    status, payload = plain.get_json("/_ambassador/health")
    assert (status, payload) == (200, {"status": "ok", "profile": str(plain.profile_path)})
    status, _, body = plain.request("POST", "/_ambassador/health", body=b"")
    assert status == 400 and json.loads(body)["reason"] == "bad_request"


def test_every_door_counts_under_its_upstream_once(tmp_path):
    with FakeUpstream(echo) as users, FakeUpstream(echo) as reports:
        doors = profile(
            upstream("users", users.url, path_prefix="/users"),
            upstream("reports", reports.url, path_prefix="/reports", async_={"keep": "1h"}),
            upstream("dead", "http://127.0.0.1:9", path_prefix="/dead"),
            aggregates={"/both/{id}": {"user": "users:/u/{id}", "gone": "dead:/d/{id}"}},
        )
        with Ambassador(tmp_path, doors, env={"AMBASSADOR_STATE_DIR": str(tmp_path / "state")}) as amb:
            assert amb.get("/users/1")[0] == 200  # a client's request
            assert amb.get("/both/7")[0] in (200, 207, 502)  # an aggregate: one part each
            items = [{"method": "GET", "path": f"/users/{n}"} for n in range(2)]
            status, _, _ = amb.request("POST", "/_ambassador/batch", {"Content-Type": "application/json"}, json.dumps(items).encode())
            assert status == 200
            status, headers, _ = amb.get("/reports/q3", {"Prefer": "respond-async"})
            assert status == 202
            wait_until(lambda: amb.get(headers["Location"])[0] == 200)
            samples = scrape(amb)
    assert value(samples, "ambassador_requests_total", upstream="users", status_class="2xx") == 4
    assert value(samples, "ambassador_requests_total", upstream="reports", status_class="2xx") == 1  # the job, not the 202
    assert value(samples, "ambassador_requests_total", upstream="dead", status_class="5xx") == 1
    assert value(samples, "ambassador_refusals_total", upstream="dead", reason="connect_error") == 1
    assert value(samples, "ambassador_request_duration_seconds_count", upstream="users") == 4


def test_refusals_by_reason_and_upstream(tmp_path):
    with FakeUpstream(lambda req: Reply.json({}, 500)) as broken:
        fragile = profile(upstream("fragile", broken.url, path_prefix="/fragile", breaker={"fail_max": 1, "reset_timeout": "1h"}))
        with Ambassador(tmp_path, fragile) as amb:
            assert amb.get("/fragile/x")[0] == 500
            for _ in range(2):
                assert amb.get("/fragile/x")[0] == 503
            assert amb.get("/nowhere")[0] == 404
            assert amb.get("/fragile/x", {"Origin": "https://evil.example"})[0] == 403
            assert amb.request("TRACE", "/fragile/x")[0] == 405
            samples = scrape(amb)
    assert value(samples, "ambassador_refusals_total", upstream="fragile", reason="circuit_open") == 2
    assert value(samples, "ambassador_refusals_total", upstream="", reason="no_route") == 1
    assert value(samples, "ambassador_refusals_total", upstream="", reason="not_allowed") == 1
    assert value(samples, "ambassador_refusals_total", upstream="", reason="method_not_allowed") == 1
    assert value(samples, "ambassador_requests_total", upstream="fragile", status_class="5xx") == 3


def test_requests_in_flight_per_upstream(tmp_path):
    release = threading.Event()

    def held(req: Received) -> Reply:
        release.wait(10)
        return Reply.json({})

    with FakeUpstream(held) as slow:
        with Ambassador(tmp_path, profile(upstream("slow", slow.url, path_prefix="/slow"))) as amb:
            answers = []
            clients = [threading.Thread(target=lambda: answers.append(amb.get("/slow/x")[0])) for _ in range(2)]
            for client in clients:
                client.start()
            try:
                wait_until(lambda: value(scrape(amb), "ambassador_requests_in_flight", upstream="slow") == 2)
            finally:
                release.set()
                for client in clients:
                    client.join(15)
            assert answers == [200, 200]
            assert value(scrape(amb), "ambassador_requests_in_flight", upstream="slow") == 0


def test_build_info(plain):
    [(labels, one)] = scrape(plain)["ambassador_build_info"]
    assert one == 1
    assert labels == {"version": "0.1.0", "mitmproxy": mitmproxy.version.VERSION, "python": platform.python_version()}


def test_reloads_are_counted_and_a_removed_upstream_leaves_the_metrics(tmp_path):
    with FakeUpstream(echo) as api:
        def gone(fail_max) -> dict:
            return upstream("gone", api.url, path_prefix="/gone", breaker={"fail_max": fail_max, "reset_timeout": "1h"})

        kept = upstream("api", api.url, path_prefix="/api")
        with Ambassador(tmp_path, profile(kept, gone(3))) as amb:
            assert amb.get("/gone/x")[0] == 200
            assert amb.get("/api/x")[0] == 200
            samples = scrape(amb)
            assert value(samples, "ambassador_requests_total", upstream="gone", status_class="2xx") == 1
            assert value(samples, "ambassador_breaker_state", upstream="gone") == 0
            assert value(samples, "ambassador_profile_reloads_total", outcome="loaded") == 0

            mark = len(amb.lines)
            profile(kept).write(amb.profile_path)
            amb.wait_for_log(r"profile .* loaded", timeout=10, start=mark)
            mark = len(amb.lines)
            profile(kept, gone("many")).write(amb.profile_path)
            amb.wait_for_log(r"profile refused", timeout=10, start=mark)
            samples = scrape(amb)
    assert not [labels for series in samples.values() for labels, _ in series if labels.get("upstream") == "gone"]
    assert value(samples, "ambassador_requests_total", upstream="api", status_class="2xx") == 1  # kept
    assert value(samples, "ambassador_profile_reloads_total", outcome="loaded") == 1
    assert value(samples, "ambassador_profile_reloads_total", outcome="refused") == 1


def test_breaker_shows_half_open_when_reset_timeout_passed_without_a_request(tmp_path):
    with FakeUpstream(lambda req: Reply.json({}, 500)) as broken:
        fragile = profile(upstream("fragile", broken.url, path_prefix="/fragile", breaker={"fail_max": 1, "reset_timeout": "1s"}))
        with Ambassador(tmp_path, fragile) as amb:
            assert amb.get("/fragile/x")[0] == 500
            assert amb.status()["upstreams"]["fragile"]["breaker"] == "open"
            wait_until(lambda: amb.status()["upstreams"]["fragile"]["breaker"] == "half-open", timeout=10)
            assert value(scrape(amb), "ambassador_breaker_state", upstream="fragile") == 1
            assert len(broken.received) == 1  # no request came to make it move
