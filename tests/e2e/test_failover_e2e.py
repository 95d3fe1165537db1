"""Failover URLs and fallback answers through the real ambassador, against dead, failing and
hanging upstreams."""

import json
import time

from harness import Ambassador, FakeUpstream, RawUpstream, Reply, Switch, free_port
from profiles import Profile, profile, upstream
from redis_server import RedisServer

FALLBACK = '{"items": []}'


def billing(url: str, failover: list[str], state: str | None = None, **sections) -> Profile:
    return profile(upstream("billing", url, path_prefix="/billing", timeout="5s", failover=failover, **sections), state=state)


def dead_url(path: str = "") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"  # nothing listens there


def test_a_dead_url_fails_over_and_its_own_breaker_opens(tmp_path):
    dead = dead_url("/v1")
    breaker = {"fail_max": 2, "reset_timeout": "60s"}
    with FakeUpstream() as b, Ambassador(tmp_path, billing(dead, [f"{b.url}/v2"], breaker=breaker)) as amb:
        for n in range(3):
            status, headers, body = amb.get(f"/billing/orders/{n}?q=1")
            assert status == 200
            assert headers["X-Ambassador-Upstream-Url"] == f"{b.url}/v2"
            assert json.loads(body)["path"] == f"/v2/orders/{n}?q=1"  # b's base path in place of url's
        status = amb.status()["upstreams"]["billing"]
        assert status["breaker"] == "open"  # url's: two connection failures
        assert status["failover"] == {
            "failovers": 3,
            "urls": [{"url": dead, "breaker": "open"}, {"url": f"{b.url}/v2", "breaker": "closed"}],
        }
        _, _, metrics = amb.get("/_ambassador/metrics")
        assert b'ambassador_failovers_total{upstream="billing"} 3.0' in metrics
        assert f'ambassador_failover_breaker_state{{upstream="billing",url="{b.url}/v2"}} 0.0'.encode() in metrics
        assert b'ambassador_breaker_state{upstream="billing"} 2.0' in metrics


def test_a_failure_status_fails_over_in_order_and_the_answer_names_the_url(tmp_path):
    failing, also_failing = Switch(), Switch()
    failing.reply = Reply(503, body=b"down")
    also_failing.reply = Reply(500, body=b"broken")
    with FakeUpstream(failing) as a, FakeUpstream(also_failing) as b, FakeUpstream() as c:
        with Ambassador(tmp_path, billing(a.url, [b.url, c.url])) as amb:
            status, headers, _ = amb.get("/billing/x")
            assert status == 200
            assert headers["X-Ambassador-Upstream-Url"] == c.url
            assert (failing.count, also_failing.count, len(c.received)) == (1, 1, 1)
            amb.wait_for_log(r"billing GET /billing/x 200")


def test_every_url_failing_gives_the_last_failure(tmp_path):
    failing = Switch()
    failing.reply = Reply(502, body=b"bad gateway of b")
    with FakeUpstream(failing) as b, Ambassador(tmp_path, billing(dead_url(), [b.url])) as amb:
        status, headers, body = amb.get("/billing/x")
        assert (status, body) == (502, b"bad gateway of b")
        assert headers["X-Ambassador-Upstream-Url"] == b.url


def test_a_retry_after_a_timeout_goes_to_the_next_url_first(tmp_path):
    hanging = Switch()
    hanging.reply = Reply(200, body=b"too late", delay=3)
    retry = {"attempts": 2, "backoff": "10ms", "try_timeout": "300ms"}
    with FakeUpstream(hanging) as a, FakeUpstream() as b, Ambassador(tmp_path, billing(a.url, [b.url], retry=retry)) as amb:
        status, headers, _ = amb.get("/billing/x")
        assert status == 200
        assert headers["X-Ambassador-Upstream-Url"] == b.url
        assert headers["X-Ambassador-Attempts"] == "2"
        assert hanging.count == 1  # the second try did not go back to the URL that timed out


def fallback_profile(url: str, **sections) -> Profile:
    fallback = {"status": 200, "headers": {"Content-Type": "application/json", "X-Served-By": "fallback"}, "body": FALLBACK}
    return profile(
        upstream(
            "billing", url, path_prefix="/billing", timeout="5s", breaker={"fail_max": 1, "reset_timeout": "60s"},
            fallback=fallback, **sections,
        ),
        aggregates={"/dashboard": {"invoices": "billing:/invoices", "me": "billing:/me"}},
    )


def test_fallback_when_every_url_failed_and_when_the_breakers_are_open(tmp_path):
    failing = Switch()
    failing.reply = Reply(503, body=b"down")
    with FakeUpstream(failing) as b:
        with Ambassador(tmp_path, fallback_profile(dead_url(), failover=[b.url])) as amb:
            for expected_contacts in (1, 1):  # then both breakers are open: no contact at all
                status, headers, body = amb.get("/billing/x")
                assert (status, body) == (200, FALLBACK.encode())
                assert headers["X-Ambassador-Fallback"] == "1"
                assert headers["X-Served-By"] == "fallback"
                assert headers["Content-Type"] == "application/json"
                assert headers["X-Ambassador-Upstream"] == "billing"
                assert failing.count == expected_contacts
            upstream = amb.status()["upstreams"]["billing"]
            assert [u["breaker"] for u in upstream["failover"]["urls"]] == ["open", "open"]
            assert upstream["fallback"] == {"answers": 2}
            _, _, metrics = amb.get("/_ambassador/metrics")
            assert b'ambassador_fallbacks_total{upstream="billing"} 2.0' in metrics
            amb.wait_for_log(r"billing GET /billing/x 200")


def test_a_stale_cached_copy_comes_before_the_fallback(tmp_path):
    switch = Switch()
    switch.reply = Reply(200, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=0, stale-if-error=600")], b"stored")
    with FakeUpstream(switch) as up, Ambassador(tmp_path, fallback_profile(up.url, cache={"ttl": "0s"})) as amb:
        assert amb.get("/billing/stored")[2] == b"stored"
        switch.reply = Reply(500, body=b"broken")
        status, headers, body = amb.get("/billing/stored")
        assert (status, body, headers["X-Cache"]) == (200, b"stored", "STALE")
        assert "X-Ambassador-Fallback" not in headers
        status, headers, body = amb.get("/billing/never-stored")  # nothing stale: the fallback
        assert (status, body, headers["X-Ambassador-Fallback"]) == (200, FALLBACK.encode(), "1")
        status, headers, body = amb.get("/billing/never-stored")  # and it was not cached
        assert headers["X-Ambassador-Fallback"] == "1"
        assert headers.get("X-Cache") != "HIT"


def test_aggregate_parts_and_batch_items_get_the_fallback_too(tmp_path):
    with Ambassador(tmp_path, fallback_profile(dead_url())) as amb:
        status, _, body = amb.get("/dashboard")
        assert status == 200
        assert json.loads(body) == {"invoices": {"items": []}, "me": {"items": []}}
        items = json.dumps([{"path": "/billing/a"}, {"method": "DELETE", "path": "/billing/b"}]).encode()
        status, _, body = amb.request("POST", "/_ambassador/batch", {"Content-Type": "application/json"}, items)
        assert status == 200
        for answer in json.loads(body):
            assert (answer["status"], answer["body"]) == (200, {"items": []})
            assert answer["headers"]["X-Ambassador-Fallback"] == "1"


def test_errors_that_are_not_the_upstreams_fault_get_no_fallback(tmp_path):
    with FakeUpstream() as up, Ambassador(tmp_path, fallback_profile(up.url)) as amb:
        status, headers, body = amb.get("/billing/x", {"X-Ambassador-Timeout": "not a duration"})
        assert status == 400 and json.loads(body)["reason"] == "bad_request"
        assert "X-Ambassador-Fallback" not in headers
        assert len(up.received) == 0


def test_each_url_has_its_own_shared_breaker_state(tmp_path):
    hangs_up = RawUpstream(lambda conn: None)  # reads the request and closes: connect_error
    try:
        with RedisServer(tmp_path) as redis, FakeUpstream() as b:
            shared = billing(hangs_up.url, [b.url], state=redis.url, breaker={"fail_max": 1, "reset_timeout": "60s"})
            (tmp_path / "one").mkdir()
            (tmp_path / "two").mkdir()
            with Ambassador(tmp_path / "one", shared) as one, Ambassador(tmp_path / "two", shared) as two:
                assert one.get("/billing/x")[0] == 200  # url failed: its shared breaker opens
                contacts = hangs_up.accepted
                assert contacts >= 1
                tripped = time.monotonic()
                # Instance two, idle, learns the shared state within a second or so.
                while (urls := two.status()["upstreams"]["billing"]["failover"]["urls"])[0]["breaker"] != "open":
                    assert time.monotonic() - tripped < 3, "instance two does not see url's breaker open"
                    time.sleep(0.05)
                assert urls == [{"url": hangs_up.url, "breaker": "open"}, {"url": b.url, "breaker": "closed"}]
                assert two.get("/billing/x")[0] == 200
                assert hangs_up.accepted == contacts  # instance two skipped url without trying it
                assert len(b.received) == 2
    finally:
        hangs_up.close()
