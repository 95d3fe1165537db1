"""The circuit breaker through the real ambassador, against failing, hanging and resetting
upstreams."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import Ambassador, FakeUpstream, Reply, Switch
from profiles import profile, upstream

RESET = 1.5  # reset_timeout of the profile, seconds


@pytest.fixture(scope="module")
def upstreams():
    names = ("failing", "hanging", "resetting", "trials", "retrial", "cached", "impatient")
    switches = {name: Switch() for name in names}
    servers = [FakeUpstream(switches[name]) for name in names]
    for server in servers:
        server.__enter__()
    yield {name: (switches[name], server) for name, server in zip(names, servers)}
    for server in servers:
        server.__exit__()


@pytest.fixture(scope="module")
def amb(upstreams, tmp_path_factory):
    def guarded(name: str, server: FakeUpstream) -> dict:
        sections = {"cache": {"ttl": "1s", "stale_if_error": "10m"}} if name == "cached" else {}
        return upstream(
            name, server.url, path_prefix=f"/{name}", timeout="500ms" if name in ("hanging", "impatient") else "5s",
            breaker={"fail_max": 2 if name == "impatient" else 3, "reset_timeout": RESET, "half_open_max": 2}, **sections,
        )

    breakers = profile(*(guarded(name, server) for name, (_, server) in upstreams.items()))
    with Ambassador(tmp_path_factory.mktemp("breaker"), breakers) as a:
        yield a


def trip(amb, name, switch, expected_status):
    for _ in range(3):
        status, _, _ = amb.get(f"/{name}/x")
        assert status == expected_status
    assert switch.count == 3


def assert_refused(amb, name):
    status, headers, body = amb.get(f"/{name}/x")
    assert status == 503
    assert json.loads(body) == {
        "error": f"the circuit breaker of upstream {name} is open; try again in {headers['Retry-After']}s",
        "reason": "circuit_open",
        "upstream": name,
    }
    assert headers["X-Ambassador-Upstream"] == name
    return int(headers["Retry-After"])


def test_failures_open_it_and_then_nothing_reaches_the_upstream(amb, upstreams):
    switch, _ = upstreams["failing"]
    switch.reply = Reply(500, body=b"down")
    trip(amb, "failing", switch, 500)
    for _ in range(20):
        assert 1 <= assert_refused(amb, "failing") <= 2
    assert switch.count == 3
    assert amb.status()["upstreams"]["failing"]["breaker"] == "open"
    opened = [line for line in amb.lines if "upstream failing: circuit breaker" in line]
    assert len(opened) == 1 and "closed -> open" in opened[0]


def test_timeouts_of_a_hanging_upstream_open_it(amb, upstreams):
    switch, _ = upstreams["hanging"]
    switch.reply = Reply(200, delay=3)
    trip(amb, "hanging", switch, 504)
    assert_refused(amb, "hanging")
    assert switch.count == 3


def test_connection_resets_open_it(amb, upstreams):
    switch, _ = upstreams["resetting"]
    switch.reply = Reply(close=True)
    for _ in range(6):
        status, _, body = amb.get("/resetting/x")
        if status == 503:
            break
        assert status == 502 and json.loads(body)["reason"] == "connect_error"
    assert_refused(amb, "resetting")
    assert amb.status()["upstreams"]["resetting"]["breaker"] == "open"


def concurrently(amb, path, n):
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: amb.get(path), range(n)))


def test_after_reset_timeout_exactly_half_open_max_trials_go_through_and_a_success_closes_it(amb, upstreams):
    switch, _ = upstreams["trials"]
    switch.reply = Reply(500)
    trip(amb, "trials", switch, 500)
    time.sleep(assert_refused(amb, "trials"))  # Retry-After: seconds until half-open
    switch.reply = Reply(200, body=b"back", delay=1.5)  # slow trials: the others arrive meanwhile
    answers = concurrently(amb, "/trials/x", 12)
    statuses = sorted(status for status, _, _ in answers)
    assert switch.count == 3 + 2
    assert statuses == [200, 200] + [503] * 10
    assert all(json.loads(body)["reason"] == "circuit_open" for status, _, body in answers if status == 503)
    assert amb.status()["upstreams"]["trials"]["breaker"] == "closed"
    assert [status for status, _, _ in concurrently(amb, "/trials/x", 6)] == [200] * 6
    changes = [line.split("circuit breaker ")[1] for line in amb.lines if "upstream trials: circuit breaker" in line]
    assert changes == ["closed -> open", "open -> half-open", "half-open -> closed"]


def test_a_failed_trial_opens_it_again(amb, upstreams):
    switch, _ = upstreams["retrial"]
    switch.reply = Reply(503)
    trip(amb, "retrial", switch, 503)
    time.sleep(assert_refused(amb, "retrial"))
    status, _, _ = amb.get("/retrial/x")  # the trial, failing
    assert status == 503 and switch.count == 4
    assert amb.status()["upstreams"]["retrial"]["breaker"] == "open"
    assert 1 <= assert_refused(amb, "retrial") <= 2  # a new open window from the failed trial
    assert switch.count == 4


def test_while_open_a_stale_cached_copy_is_served_where_the_cache_allows(amb, upstreams):
    switch, _ = upstreams["cached"]
    switch.reply = Reply(200, body=b"kept")
    status, headers, _ = amb.get("/cached/kept")
    assert (status, headers["X-Cache"]) == (200, "MISS")
    switch.reply = Reply(500)
    for n in range(3):  # uncached paths trip it
        assert amb.get(f"/cached/other{n}")[0] == 500
    assert switch.count == 4
    time.sleep(1.1)  # the stored copy's ttl (1s) runs out
    status, headers, body = amb.get("/cached/kept")
    assert (status, headers["X-Cache"], body) == (200, "STALE", b"kept")
    status, headers, body = amb.get("/cached/other0")
    assert status == 503 and json.loads(body)["reason"] == "circuit_open"
    assert switch.count == 4


def test_timeouts_a_client_asked_for_do_not_open_it_real_ones_still_do(amb, upstreams):
    switch, _ = upstreams["impatient"]
    switch.reply = Reply(200, body=b"slow", delay=1)
    for _ in range(6):  # fail_max is 2
        status, _, body = amb.get("/impatient/x", {"X-Ambassador-Timeout": "1ms"})
        assert status == 504 and json.loads(body)["reason"] == "timeout"
    assert amb.status()["upstreams"]["impatient"]["breaker"] == "closed"
    for _ in range(2):  # the upstream's own 500ms
        assert amb.get("/impatient/x")[0] == 504
    assert amb.status()["upstreams"]["impatient"]["breaker"] == "open"
    assert_refused(amb, "impatient")
