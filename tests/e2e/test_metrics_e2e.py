"""`GET /_ambassador/metrics` through the real ambassador, parsed with prometheus-client's parser."""

import json
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from harness import Ambassador, FakeUpstream, Reply, echo
from oauth_fakes import IdentityProvider
from profiles import profile, upstream

SPEC_FAMILIES = {
    "ambassador_requests",  # requests by status class
    "ambassador_request_duration_seconds",  # latency histogram
    "ambassador_cache_results",
    "ambassador_breaker_state",
    "ambassador_breaker_transitions",
    "ambassador_retries",
    "ambassador_token_fetches",
    "ambassador_async_jobs",
}


def scrape(amb: Ambassador) -> dict[str, list]:
    """{sample name: [(labels, value), ...]} from the ambassador's metrics endpoint."""
    status, headers, body = amb.get("/_ambassador/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body.decode()):
        samples.setdefault(family.name, [])  # a family without samples yet is still declared
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    matches = [v for l, v in samples.get(name, []) if all(l.get(k) == want for k, want in labels.items())]
    assert len(matches) <= 1, (name, labels, matches)
    return matches[0] if matches else None


@pytest.fixture(scope="module")
def upstreams():
    always_500 = lambda req: Reply.json({"error": "down"}, 500)  # noqa: E731
    always_503 = lambda req: Reply.json({"error": "busy"}, 503)  # noqa: E731
    with FakeUpstream(echo) as billing, FakeUpstream(always_503) as flaky, FakeUpstream(always_500) as fragile:
        yield {"billing": billing, "flaky": flaky, "fragile": fragile}


@pytest.fixture
def amb(upstreams, tmp_path):
    billing = upstreams["billing"].url
    metered = profile(
        upstream("billing", billing, path_prefix="/billing"),
        upstream("flaky", upstreams["flaky"].url, path_prefix="/flaky", retry={"attempts": 3, "backoff": "1ms", "statuses": [503]}),
        upstream("fragile", upstreams["fragile"].url, path_prefix="/fragile", breaker={"fail_max": 2, "reset_timeout": "1h"}),
        upstream("dead", "http://127.0.0.1:9", path_prefix="/dead", timeout="5s"),
        upstream("catalog", billing, path_prefix="/catalog", cache={"ttl": "1h"}),
    )
    with Ambassador(tmp_path, metered) as a:
        yield a


def test_every_spec_metric_is_exposed(amb):
    samples = scrape(amb)
    assert SPEC_FAMILIES <= set(samples)


def test_requests_and_latency_per_upstream_by_status_class(amb):
    for i in range(3):
        assert amb.get(f"/billing/invoices/{i}")[0] == 200
    assert amb.get("/dead/x")[0] == 502
    assert amb.get("/nowhere")[0] == 404  # no upstream: not an upstream's request

    samples = scrape(amb)
    assert value(samples, "ambassador_requests_total", upstream="billing", status_class="2xx") == 3
    assert value(samples, "ambassador_requests_total", upstream="billing", status_class="5xx") is None
    assert value(samples, "ambassador_requests_total", upstream="dead", status_class="5xx") == 1
    assert value(samples, "ambassador_request_duration_seconds_count", upstream="billing") == 3
    assert value(samples, "ambassador_request_duration_seconds_sum", upstream="billing") > 0
    assert value(samples, "ambassador_request_duration_seconds_bucket", upstream="billing", le="+Inf") == 3
    assert value(samples, "ambassador_request_duration_seconds_bucket", upstream="billing", le="0.005") <= 3


def test_retries_and_breaker_are_counted(amb, upstreams):
    status, headers, _ = amb.get("/flaky/x")
    assert status == 503 and headers["X-Ambassador-Attempts"] == "3"
    for _ in range(2):
        assert amb.get("/fragile/x")[0] == 500
    status, _, body = amb.get("/fragile/x")
    assert status == 503 and json.loads(body)["reason"] == "circuit_open"

    samples = scrape(amb)
    assert value(samples, "ambassador_retries_total", upstream="flaky") == 2
    assert value(samples, "ambassador_requests_total", upstream="flaky", status_class="5xx") == 1
    assert value(samples, "ambassador_breaker_state", upstream="fragile") == 2  # open
    assert value(samples, "ambassador_breaker_transitions_total", upstream="fragile", state="open") == 1
    assert value(samples, "ambassador_requests_total", upstream="fragile", status_class="5xx") == 3


def test_cache_results_are_counted(amb):
    assert amb.get("/catalog/items")[1]["X-Cache"] == "MISS"
    for _ in range(2):
        assert amb.get("/catalog/items")[1]["X-Cache"] == "HIT"
    assert amb.request("POST", "/catalog/items", body=b"{}")[1]["X-Cache"] == "BYPASS"

    samples = scrape(amb)
    assert value(samples, "ambassador_cache_results_total", upstream="catalog", result="miss") == 1
    assert value(samples, "ambassador_cache_results_total", upstream="catalog", result="hit") == 2
    assert value(samples, "ambassador_cache_results_total", upstream="catalog", result="bypass") == 1
    assert value(samples, "ambassador_cache_results_total", upstream="catalog", result="stale") == 0
    assert value(samples, "ambassador_requests_total", upstream="catalog", status_class="2xx") == 4


def test_labels_are_bounded_to_upstream_names(amb):
    for path in ("/billing/a?x=1", "/billing/b/c", "/dead/zzz", "/nowhere/else"):
        amb.get(path)
    samples = scrape(amb)
    seen = {labels["upstream"] for series in samples.values() for labels, _ in series if "upstream" in labels}
    # "": the refusals of requests that no upstream was chosen for (/nowhere/else)
    assert seen and seen <= {"billing", "flaky", "fragile", "dead", "catalog", ""}
    assert not any("path" in labels for series in samples.values() for labels, _ in series)


def test_openmetrics_for_scrapers_that_ask(amb):
    amb.get("/billing/x")
    status, headers, body = amb.get("/_ambassador/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(body.decode())}
    requests = [s for s in families["ambassador_requests"].samples if s.name == "ambassador_requests_total"]
    assert any(s.labels == {"upstream": "billing", "status_class": "2xx"} and s.value >= 1 for s in requests)


def test_metrics_answers_get_only(amb):
    status, _, body = amb.request("POST", "/_ambassador/metrics", body=b"")
    assert status == 400
    assert json.loads(body) == {
        "error": "/_ambassador/metrics answers GET only", "reason": "bad_request", "upstream": None
    }


def test_token_fetches_and_async_jobs_are_counted(tmp_path, upstreams):
    good, down = IdentityProvider("app", "s3cret"), IdentityProvider("app", "s3cret")
    down.down = True
    with FakeUpstream(good.token_endpoint) as idp, FakeUpstream(good.resource) as api, \
            FakeUpstream(down.token_endpoint) as broken_idp:
        oauth = {"type": "oauth2_client_credentials", "client_id": "app", "client_secret": "s3cret"}
        counted = profile(
            upstream("partner", api.url, path_prefix="/partner", auth={**oauth, "token_url": f"{idp.url}/token"}),
            # the timeout bounds the token fetch's own retries
            upstream("locked", api.url, path_prefix="/locked", timeout="2s", auth={**oauth, "token_url": f"{broken_idp.url}/token"}),
            upstream("reports", upstreams["billing"].url, path_prefix="/reports", async_={"keep": "1h"}),
        )
        with Ambassador(tmp_path, counted, env={"AMBASSADOR_STATE_DIR": str(tmp_path / "state")}) as amb:
            for _ in range(2):
                assert amb.get("/partner/x")[0] == 200  # one token, fetched once
            status, _, body = amb.get("/locked/x")
            assert status == 502 and json.loads(body)["reason"] == "auth_failed"
            status, headers, _ = amb.get("/reports/q3", {"Prefer": "respond-async"})
            assert status == 202
            job = headers["Location"]
            wait_until(lambda: amb.get(job)[0] == 200)

            samples = scrape(amb)
    assert value(samples, "ambassador_token_fetches_total", upstream="partner", outcome="ok") == 1
    assert value(samples, "ambassador_token_fetches_total", upstream="partner", outcome="failed") is None
    assert value(samples, "ambassador_token_fetches_total", upstream="locked", outcome="failed") >= 1
    assert value(samples, "ambassador_async_jobs_total", upstream="reports", event="accepted") == 1
    assert value(samples, "ambassador_async_jobs_total", upstream="reports", event="done") == 1


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
