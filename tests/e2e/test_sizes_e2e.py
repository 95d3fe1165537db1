"""Size bounds through the real ambassador: bodies over 16 MB, gzip bombs, batch and job limits.

Each test sends more than the bound on purpose and checks the answer and the ambassador's peak
memory (VmHWM): a bomb inflated whole would add about 300 MB.
"""

import http.client
import json
import sqlite3
import threading
import time
import zlib

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply
from profiles import Profile, profile, upstream

MB = 1024**2
BOUND = 16 * MB
GROWTH_KIB = 100 * 1024  # what a request may add to the ambassador's peak memory
SOAP_NS = "urn:legacy"


def gzip_bomb(size: int = 300 * MB) -> bytes:
    """`size` bytes of spaces (valid JSON and XML padding) as gzip, a few hundred KB."""
    out = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = b" " * MB
    return b"".join(out.compress(piece) for _ in range(size // MB)) + out.flush()


BOMB = gzip_bomb()
OVER = b'"' + b"x" * (BOUND + 10) + b'"'  # a JSON string just over the bound
SOAP_OK = (
    f'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    f'<s:Body><m:PingResponse xmlns:m="{SOAP_NS}"><m:ok>yes</m:ok></m:PingResponse></s:Body></s:Envelope>'
).encode()


RELEASE = threading.Event()  # answers under a /held/ path wait for it


def answer(req: Received) -> Reply:
    path = req.path.split("?")[0]
    if "/held/" in path:
        RELEASE.wait(10)
    if path.endswith("/bomb"):
        return Reply(200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], BOMB)
    if path.endswith("/over"):
        return Reply(200, [("Content-Type", "application/json"), ("Cache-Control", "max-age=60")], OVER)
    if path.endswith("/part"):  # 400 KB: three of them are over a 1 MB batch answer
        return Reply.json("y" * 400_000)
    if path.startswith("/soap-over"):
        return Reply(200, [("Content-Type", "text/xml")], SOAP_OK.replace(b"<s:Body>", b"<s:Body>" + b" " * BOUND))
    if path.startswith("/soap-bomb"):
        return Reply(200, [("Content-Type", "text/xml"), ("Content-Encoding", "gzip")], BOMB)
    if path.startswith("/soap"):
        return Reply(200, [("Content-Type", "text/xml")], SOAP_OK)
    return Reply.json({"ok": True, "path": req.path})


@pytest.fixture(scope="module")
def server():
    with FakeUpstream(answer) as up:
        yield up


def sized_profile(up: FakeUpstream) -> Profile:
    return profile(
        upstream("api", f"{up.url}/api", path_prefix="/api"),
        upstream("cached", f"{up.url}/cached", path_prefix="/cached", cache={}),
        upstream("soap", f"{up.url}/soap", path_prefix="/soap", soap={"namespace": SOAP_NS}),
        upstream("soapover", f"{up.url}/soap-over", path_prefix="/soapover", soap={"namespace": SOAP_NS}),
        upstream("soapbomb", f"{up.url}/soap-bomb", path_prefix="/soapbomb", soap={"namespace": SOAP_NS}),
        upstream("jobs", f"{up.url}/jobs", path_prefix="/jobs", async_={"keep": "1h"}),
        upstream("brief", f"{up.url}/brief", path_prefix="/brief", async_={"keep": "1s"}),
        aggregates={"/both/{id}": {"bomb": "api:/{id}/bomb", "fine": "api:/{id}/fine", "over": "api:/{id}/over"}},
    )


@pytest.fixture(scope="module")
def amb(server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sizes")
    with Ambassador(tmp, sized_profile(server), env={"AMBASSADOR_STATE_DIR": str(tmp / "state")}) as a:
        yield a


def batch(amb, items) -> tuple[int, bytes]:
    status, _, raw = amb.request("POST", "/_ambassador/batch", {"Content-Type": "application/json"}, json.dumps(items).encode())
    return status, raw


def test_a_gzip_bomb_fails_its_aggregate_part_and_the_others_are_answered(amb):
    before = amb.peak_rss_kib()
    status, _, raw = amb.get("/both/7")
    assert status == 200, raw
    document = json.loads(raw)
    assert document["fine"] == {"ok": True, "path": "/api/7/fine"}
    assert set(document["_errors"]) == {"bomb", "over"}
    for part in ("bomb", "over"):
        failure = document["_errors"][part]
        assert (failure["status"], failure["reason"]) == (502, "too_large"), failure
        assert str(BOUND) in failure["error"]
    assert amb.peak_rss_kib() - before < GROWTH_KIB


def test_a_gzip_bomb_fails_its_batch_item_and_the_answer_is_compact(amb):
    before = amb.peak_rss_kib()
    status, raw = batch(amb, [{"path": "/api/bomb"}, {"path": "/api/fine"}, {"path": "/api/over"}])
    assert status == 200, raw
    answers = json.loads(raw)
    assert raw == json.dumps(answers, separators=(",", ":")).encode()  # no indentation, no spaces
    for slot in (answers[0], answers[2]):
        assert slot["status"] == 502
        assert slot["body"]["reason"] == "too_large" and slot["body"]["upstream"] == "api"
    assert answers[1]["status"] == 200 and answers[1]["body"]["ok"] is True
    assert amb.peak_rss_kib() - before < GROWTH_KIB


def test_a_batch_of_more_than_100_items_is_refused_unsent(amb, server):
    sent = len(server.received)
    status, raw = batch(amb, [{"path": "/api/fine"}] * 101)
    assert status == 400
    error = json.loads(raw)
    assert error["reason"] == "bad_request" and "at most 100" in error["error"]
    assert len(server.received) == sent
    status, raw = batch(amb, [{"path": "/api/fine"}] * 100)
    assert status == 200 and len(json.loads(raw)) == 100


def test_a_batch_answer_is_bounded_in_total_by_body_size_limit(server, tmp_path):
    with Ambassador(tmp_path, sized_profile(server), "--set", "body_size_limit=1m") as amb:
        status, raw = batch(amb, [{"path": f"/api/{n}/part"} for n in range(3)])
    assert status == 200
    answers = json.loads(raw)
    # Two 400 KB bodies fit in 1 MB, the third does not: whichever was answered last fails.
    assert sorted(a["status"] for a in answers) == [200, 200, 502]
    refused = next(a for a in answers if a["status"] == 502)["body"]
    assert refused["reason"] == "too_large" and "1048576" in refused["error"]


@pytest.mark.parametrize("prefix", ["/soapover", "/soapbomb"])
def test_a_soap_answer_over_the_bound_is_too_large_and_not_parsed(amb, prefix):
    before = amb.peak_rss_kib()
    status, headers, raw = amb.request("POST", f"{prefix}/Ping", {"Content-Type": "application/json"}, b"{}")
    error = json.loads(raw)
    assert (status, error["reason"]) == (502, "too_large"), error
    assert headers["X-Ambassador-Upstream"] == prefix[1:]
    assert amb.peak_rss_kib() - before < GROWTH_KIB
    status, _, raw = amb.request("POST", "/soap/Ping", {"Content-Type": "application/json"}, b"{}")
    assert (status, json.loads(raw)) == (200, {"ok": "yes"})  # the stage itself still works


def test_a_cacheable_answer_over_the_bound_is_answered_but_not_stored(amb, server):
    sent = len(server.received)
    for _ in range(2):
        status, headers, raw = amb.get("/cached/over")
        assert status == 200 and raw == OVER  # under body_size_limit (64 MB): the client gets it
        assert headers["X-Cache"] == "MISS"
    assert len(server.received) == sent + 2


def submit(amb, path: str) -> tuple[int, dict, dict]:
    status, headers, raw = amb.get(path, {"Prefer": "respond-async"})
    return status, headers, json.loads(raw)


def wait_for_result(amb, location: str) -> tuple[int, bytes]:
    deadline = time.monotonic() + 20
    while (answer := amb.get(location))[0] == 202:
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)
    return answer[0], answer[2]


def test_1000_jobs_per_upstream_then_429_with_retry_after(amb):
    conn = http.client.HTTPConnection("127.0.0.1", amb.port, timeout=10)  # one connection: quicker
    for n in range(1000):
        conn.request("GET", f"/jobs/{n}", headers={"Prefer": "respond-async"})
        response = conn.getresponse()
        assert response.status == 202, (n, response.read())
        response.read()
    conn.close()
    status, headers, body = submit(amb, "/jobs/one-more")
    assert (status, body["reason"], body["upstream"]) == (429, "rate_limited", "jobs")
    assert "ambassador_async_max_jobs" in body["error"]
    assert 3000 < int(headers["Retry-After"]) <= 3600  # the oldest result is kept for an hour
    assert submit(amb, "/brief/x")[0] == 202  # counted per upstream


def test_expired_jobs_are_deleted_and_free_their_place(server, tmp_path):
    state = tmp_path / "state"
    with Ambassador(tmp_path, sized_profile(server), "--set", "ambassador_async_max_jobs=2", env={"AMBASSADOR_STATE_DIR": str(state)}) as amb:
        locations = []
        for path in ("/brief/held/a", "/brief/held/over"):
            status, headers, _ = submit(amb, path)
            assert status == 202
            locations.append(headers["Location"])
        status, headers, body = submit(amb, "/brief/c")  # both still running: they count too
        assert (status, body["reason"]) == (429, "rate_limited")
        # A slot is sure to free once a running job's deadline (timeout 30 s + 10 s) and keep (1 s) passed.
        assert 1 <= int(headers["Retry-After"]) <= 41
        RELEASE.set()
        assert wait_for_result(amb, locations[0])[0] == 200
        status, raw = wait_for_result(amb, locations[1])
        assert (status, json.loads(raw)["reason"]) == (502, "too_large")  # a result is kept up to the bound
        # Kept for 1 s, then deleted from the file by the ambassador, without any request.
        deadline = time.monotonic() + 10
        while _rows(state) > 0:
            assert time.monotonic() < deadline, "expired results were not deleted"
            time.sleep(0.1)
        assert submit(amb, "/brief/c")[0] == 202


def _rows(state) -> int:
    with sqlite3.connect(state / "jobs.sqlite3") as db:
        return db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
