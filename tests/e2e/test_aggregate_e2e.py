"""Response aggregation through the real ambassador, against JSON services with delays."""

import json
import time

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply
from profiles import profile, upstream

DELAY = 0.8  # each slow part; the three of them one after the other would take 2.4 s


def users(req: Received) -> Reply:
    if req.path.startswith("/api/users/missing"):
        return Reply.json({"error": "no such user"}, 404)
    return Reply(200, [("Content-Type", "application/json; charset=utf-8")], json.dumps({"path": req.path}).encode(), delay=DELAY)


def orders(req: Received) -> Reply:
    if "user=down" in req.path:
        return Reply.json({"error": "busy"}, 503)
    if "user=slow" in req.path:
        return Reply.json([], delay=5)
    return Reply.json([{"order": 1, "path": req.path}], delay=DELAY)


def notes(req: Received) -> Reply:
    return Reply(200, [("Content-Type", "text/plain")], b"likes tea", delay=DELAY)


class Flaky:
    """Fails the first request for each path with 503, then echoes what it received."""

    def __init__(self):
        self.seen: set[str] = set()

    def __call__(self, req: Received) -> Reply:
        if req.path not in self.seen:
            self.seen.add(req.path)
            return Reply.json({"error": "warming up"}, 503)
        return Reply.json({"authorization": req.header("Authorization")})


@pytest.fixture(scope="module")
def upstreams():
    with FakeUpstream(users) as u, FakeUpstream(orders) as o, FakeUpstream(notes) as n, FakeUpstream(Flaky()) as p:
        yield {"users": u, "orders": o, "notes": n, "partner": p}


@pytest.fixture(scope="module")
def amb(upstreams, tmp_path_factory):
    aggregating = profile(
        upstream("users", f"{upstreams['users'].url}/api", path_prefix="/users"),
        upstream("orders", upstreams["orders"].url, path_prefix="/orders", timeout="2s"),
        upstream("notes", upstreams["notes"].url, path_prefix="/notes"),
        upstream(
            "partner", upstreams["partner"].url, path_prefix="/partner", auth={"type": "bearer", "token": "partner-s3cret"},
            retry={"attempts": 3, "backoff": "10ms"},
        ),
        aggregates={
            "/profile/{user_id}": {"partner": "partner:/p/{user_id}", "user": "users:/users/{user_id}"},
            "/dashboard/{user_id}": {
                "user": "users:/users/{user_id}",
                "orders": "orders:/orders?user={user_id}&limit=5",
                "notes": "notes:/notes/{user_id}",
            },
            "/pair/{a}/and/{b}": {"first": "users:/users/{a}", "second": "users:/users/{b}"},
            "/orders-of/{user_id}": {"orders": "orders:/orders?user={user_id}&page={query.page}&sort={query.sort-by}"},
        },
    )
    with Ambassador(tmp_path_factory.mktemp("aggregate"), aggregating) as a:
        yield a


def contacts(upstreams) -> int:
    return sum(len(u.received) for u in upstreams.values())


def test_parts_are_requested_concurrently_and_embedded(amb):
    started = time.monotonic()
    status, headers, body = amb.get("/dashboard/42")
    elapsed = time.monotonic() - started
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "user": {"path": "/api/users/42"},  # JSON embedded as JSON, through the part's base path
        "orders": [{"order": 1, "path": "/orders?user=42&limit=5"}],
        "notes": "likes tea",  # any other body as a string
    }
    # Close to the slowest part (0.8 s), not the sum (2.4 s); generous for a busy machine.
    assert DELAY <= elapsed < 3 * DELAY - 0.2, elapsed


def test_a_failed_part_is_left_out_and_reported(amb):
    status, _, body = amb.get("/dashboard/down")
    payload = json.loads(body)
    assert status == 200
    assert set(payload) == {"user", "notes", "_errors"}
    assert payload["_errors"]["orders"]["status"] == 503
    assert payload["_errors"]["orders"]["reason"] == "upstream_status"
    assert payload["_errors"]["orders"]["body"] == {"error": "busy"}


def test_a_part_that_times_out_is_reported_with_the_ambassadors_reason(amb):
    started = time.monotonic()
    status, _, body = amb.get("/dashboard/slow")
    payload = json.loads(body)
    assert status == 200
    assert payload["_errors"]["orders"]["status"] == 504
    assert payload["_errors"]["orders"]["reason"] == "timeout"
    assert time.monotonic() - started < 4.5  # the orders upstream's 2 s timeout, not its 5 s answer


def test_every_part_failed_gives_502(amb):
    status, _, body = amb.get("/pair/missing1/and/missing2")
    payload = json.loads(body)
    assert status == 502
    assert set(payload) == {"_errors"}
    assert payload["_errors"]["first"]["status"] == 404 and payload["_errors"]["second"]["status"] == 404


def test_captures_are_url_encoded_into_their_segment(amb, upstreams):
    status, _, body = amb.get("/pair/a%2Fb%3Fadmin=1%26x/and/%23frag%20sp")
    payload = json.loads(body)
    assert status == 200
    assert payload["first"]["path"] == "/api/users/a%2Fb%3Fadmin%3D1%26x"
    assert payload["second"]["path"] == "/api/users/%23frag%20sp"
    status, _, body = amb.get("/dashboard/7%26limit%3D1000")
    assert json.loads(body)["orders"][0]["path"] == "/orders?user=7%26limit%3D1000&limit=5"


def test_parts_take_the_clients_query_parameters_percent_encoded(amb, upstreams):
    status, _, body = amb.get("/orders-of/7?sort-by=date&page=2&page=3&other=x")
    assert status == 200, body
    assert json.loads(body)["orders"][0]["path"] == "/orders?user=7&page=2&sort=date"  # other=x is not passed on
    status, _, body = amb.get("/orders-of/7?page=1%26limit%3D1000&sort-by=a+b")
    assert json.loads(body)["orders"][0]["path"] == "/orders?user=7&page=1%26limit%3D1000&sort=a%20b"
    status, _, body = amb.get("/orders-of/7?page=&sort-by=")
    assert json.loads(body)["orders"][0]["path"] == "/orders?user=7&page=&sort="


def test_a_missing_query_parameter_is_a_400_without_upstream_contact(amb, upstreams):
    before = contacts(upstreams)
    status, _, body = amb.get("/orders-of/7?page=2")
    assert status == 400, body
    assert json.loads(body) == {
        "error": "this aggregate needs the query parameter sort-by (?sort-by=...)", "reason": "bad_request", "upstream": None
    }
    assert contacts(upstreams) == before


@pytest.mark.parametrize("path", ["/dashboard/..", "/dashboard/%2e%2e", "/dashboard/%252e%252E", "/pair/./and/x", "/pair/x/and/..%2F..%2Fadmin"])
def test_captures_cannot_climb_out_of_their_segment(amb, upstreams, path):
    before = contacts(upstreams)
    status, _, body = amb.get(path)
    assert status == 400, body
    assert json.loads(body)["reason"] == "bad_request"
    assert contacts(upstreams) == before


def test_aggregates_answer_get_only(amb, upstreams):
    before = contacts(upstreams)
    status, _, body = amb.request("POST", "/dashboard/1", {}, b"{}")
    assert status == 400 and json.loads(body)["reason"] == "bad_request"
    assert contacts(upstreams) == before


def test_paths_that_are_not_aggregates_are_routed_as_usual(amb):
    status, _, body = amb.get("/dashboard/1/extra")
    assert status == 404 and json.loads(body)["reason"] == "no_route"
    status, headers, _ = amb.get("/users/3")
    assert status == 200 and headers["X-Ambassador-Upstream"] == "users"


def test_the_clients_timeout_header_applies_to_every_part(amb):
    started = time.monotonic()
    status, _, body = amb.get("/dashboard/9", {"X-Ambassador-Timeout": "200ms"})
    payload = json.loads(body)
    assert status == 502
    assert {e["reason"] for e in payload["_errors"].values()} == {"timeout"}
    assert time.monotonic() - started < 2 * DELAY


def test_parts_go_through_their_upstreams_policies(amb, upstreams):
    # The partner part is retried (its first answer is a 503) and carries the partner's credential,
    # replacing the one the client sent, exactly as a direct request to /partner would.
    status, _, body = amb.get("/profile/5", {"Authorization": "Bearer client-token"})
    payload = json.loads(body)
    assert status == 200, payload
    tries = [r for r in upstreams["partner"].received if r.path == "/p/5"]
    assert [r.header_all("Authorization") for r in tries] == [["Bearer partner-s3cret"]] * 2
    assert payload["partner"] == {"authorization": "Bearer [redacted]"}  # the echoed secret never reaches the client
    assert payload["user"] == {"path": "/api/users/5"}


def test_aggregates_follow_profile_edits(tmp_path, upstreams):
    users = upstream("users", f"{upstreams['users'].url}/api", path_prefix="/users")
    with Ambassador(tmp_path, profile(users, aggregates={"/one/{id}": {"user": "users:/users/{id}"}})) as amb:
        assert amb.get("/one/missing")[0] == 502
        mark = len(amb.lines)
        edited = profile(users, aggregates={"/two/{id}": {"user": "users:/users/{id}", "again": "users:/users/x{id}"}})
        edited.write(amb.profile_path)
        amb.wait_for_log(r"profile .* loaded", timeout=10, start=mark)
        assert amb.get("/one/missing")[0] == 404  # no longer an aggregate, and no route
        status, _, body = amb.get("/two/missing")
        assert status == 200 and json.loads(body)["again"] == {"path": "/api/users/xmissing"}


def test_replay_never_contacts_upstreams_for_aggregates_or_batches(tmp_path, upstreams):
    recording = tmp_path / "empty.flows"
    recording.write_bytes(b"")
    replayed = profile(
        upstream("users", f"{upstreams['users'].url}/api", path_prefix="/users"),
        aggregates={"/one/{id}": {"user": "users:/users/{id}"}},
    )
    before = contacts(upstreams)
    with Ambassador(tmp_path, replayed, command=("replay", str(recording))) as amb:
        # Each part and item is answered from the recording, or fails alone as not recorded.
        status, _, body = amb.get("/one/1")
        assert status == 502 and json.loads(body)["_errors"]["user"]["reason"] == "not_recorded"
        status, _, body = amb.request("POST", "/_ambassador/batch", {}, json.dumps([{"path": "/users/1"}]).encode())
        [item] = json.loads(body)
        assert status == 200 and item["status"] == 502 and item["body"]["reason"] == "not_recorded"
    assert contacts(upstreams) == before
