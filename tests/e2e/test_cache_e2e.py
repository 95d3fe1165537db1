"""The HTTP cache through the real ambassador.

One scripted origin on 127.0.0.1 answers each test's own paths with the header fields in
question; the tests count what reached it. Staleness comes from `Age` / `Date` / `Expires`
values in the past, not from waiting.
"""

import concurrent.futures
import email.utils
import json
import threading
import time

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply
from profiles import profile, upstream


class Origin:
    """Answers each path with its own script: `fn(request, n)` where n counts that path's requests (1, 2...)."""

    def __init__(self):
        self.scripts = {}
        self.counts = {}
        self.arrived = threading.Condition()
        self.upstream = FakeUpstream(self.handle)
        # http.server adds its own Date; a script's Date takes its place instead of doubling it.
        self.date = threading.local()
        handler = self.upstream.server.RequestHandlerClass
        default_date = handler.date_time_string
        handler.date_time_string = lambda h, timestamp=None: getattr(self.date, "value", None) or default_date(h, timestamp)

    def handle(self, req: Received) -> Reply:
        path = req.path.split("?")[0]
        with self.arrived:
            self.counts[path] = self.counts.get(path, 0) + 1
            n = self.counts[path]
            self.arrived.notify_all()
        script = self.scripts.get(path)
        reply = script(req, n) if script else Reply(404, [], b"no script")
        self.date.value = next((v for k, v in reply.headers if k.lower() == "date"), None)
        reply.headers = [(k, v) for k, v in reply.headers if k.lower() != "date"]
        return reply

    def script(self, path, fn):
        self.scripts[path] = fn
        return path

    def count(self, path) -> int:
        with self.arrived:
            return self.counts.get(path, 0)

    def wait_count(self, path, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.arrived:
            while self.counts.get(path, 0) < n:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{path}: {self.counts.get(path, 0)} requests, expected {n}"
                self.arrived.wait(remaining)

    def received(self, path):
        return [r for r in self.upstream.received if r.path.split("?")[0] == path]


def http_date(offset=0.0):
    return email.utils.formatdate(time.time() + offset, usegmt=True)


def fixed(*headers, body=b"payload", status=200):
    """A script answering every request the same way (the header list is evaluated per request)."""

    def answer(req, n):
        hs = [(k, v() if callable(v) else v) for k, v in headers]
        return Reply(status, hs, body + str(n).encode())

    return answer


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    with o.upstream:
        yield o


@pytest.fixture(scope="module")
def amb(origin, tmp_path_factory):
    url = origin.upstream.url
    caching = profile(
        upstream("rfc", f"{url}/rfc", path_prefix="/rfc", cache={"max_bytes": "4MB"}),
        upstream("legacy", f"{url}/legacy", path_prefix="/legacy", cache={"ttl": "60s", "stale_if_error": "10m"}),
        upstream(
            "guarded", f"{url}/guarded", path_prefix="/guarded", cache={"stale_if_error": "10m"},
            breaker={"fail_max": 1, "reset_timeout": "1h"},
        ),
        upstream("plain", f"{url}/plain", path_prefix="/plain"),
        upstream("hurried", f"{url}/hurried", path_prefix="/hurried", timeout="500ms", cache={"stale_if_error": "10m"}),
    )
    with Ambassador(tmp_path_factory.mktemp("cache"), caching) as a:
        yield a


def get(amb, path, headers=None, method="GET"):
    status, h, body = amb.request(method, path, headers or {})
    return status, h, body


# --- RFC 9111 section 3: storing ----------------------------------------------------------------


def test_fresh_response_is_reused_with_age_and_the_origin_date(amb, origin):
    date = http_date(-5)
    path = origin.script("/rfc/fresh", fixed(("Cache-Control", "max-age=60"), ("Date", date)))
    s1, h1, b1 = get(amb, "/rfc/fresh")
    s2, h2, b2 = get(amb, "/rfc/fresh")
    assert (s1, s2) == (200, 200)
    assert (h1["X-Cache"], h2["X-Cache"]) == ("MISS", "HIT")
    assert b1 == b2 == b"payload1"
    assert origin.count(path) == 1
    assert h2["Date"] == date  # not rewritten
    assert 5 <= int(h2["Age"]) <= 30  # apparent age from Date (RFC 9111 4.2.3)
    assert h2["X-Ambassador-Upstream"] == "rfc"


def test_age_from_the_upstream_counts(amb, origin):
    origin.script("/rfc/aged", fixed(("Cache-Control", "max-age=600"), ("Age", "100")))
    get(amb, "/rfc/aged")
    _, h, _ = get(amb, "/rfc/aged")
    assert h["X-Cache"] == "HIT"
    assert 100 <= int(h["Age"]) < 130


def test_response_older_than_its_max_age_is_not_reused(amb, origin):
    path = origin.script("/rfc/too-old", fixed(("Cache-Control", "max-age=60"), ("Age", "100")))
    assert get(amb, "/rfc/too-old")[1]["X-Cache"] == "MISS"
    assert get(amb, "/rfc/too-old")[1]["X-Cache"] == "MISS"
    assert origin.count(path) == 2


@pytest.mark.parametrize(
    "name, headers, reused",
    [
        ("no-store", [("Cache-Control", "max-age=60, no-store")], False),
        ("private", [("Cache-Control", "private, max-age=60")], False),
        ("private-field", [("Cache-Control", 'private="X-User", max-age=60')], False),
        ("s-maxage-wins", [("Cache-Control", "max-age=0, s-maxage=60")], True),
        ("s-maxage-zero", [("Cache-Control", "max-age=60, s-maxage=0")], False),
        ("quoted", [("Cache-Control", 'max-age="60"')], True),
        ("upper-case", [("Cache-Control", "MAX-AGE=60")], True),
        ("negative", [("Cache-Control", "max-age=-1")], False),
        ("fraction", [("Cache-Control", "max-age=6.5")], False),
        ("huge", [("Cache-Control", "max-age=99999999999999999999")], True),
        ("duplicate-conflict", [("Cache-Control", "max-age=60"), ("Cache-Control", "max-age=0")], False),
        ("duplicate-same", [("Cache-Control", "max-age=60, max-age=60")], True),
        ("unknown-directive", [("Cache-Control", 'max-age=60, x-foo="a, b", community=UCI')], True),
        ("expires-future", [("Expires", lambda: http_date(60))], True),
        ("expires-past", [("Expires", lambda: http_date(-60))], False),
        ("expires-invalid", [("Expires", "0")], False),
        ("expires-rfc850", [("Expires", "Sunday, 06-Nov-94 08:49:37 GMT")], False),
        ("max-age-beats-expires", [("Cache-Control", "max-age=60"), ("Expires", lambda: http_date(-60))], True),
        # The lifetime is Expires - Date (60s); the age counts from Date (10s).
        ("expires-minus-date", [("Date", lambda: http_date(-10)), ("Expires", lambda: http_date(50))], True),
        # An origin clock an hour ahead: Expires - Date is still 60s, and the copy is fresh.
        ("expires-clock-ahead", [("Date", lambda: http_date(3600)), ("Expires", lambda: http_date(3660))], True),
        ("date-older-than-lifetime", [("Date", lambda: http_date(-120)), ("Expires", lambda: http_date(-60))], False),
        ("must-understand", [("Cache-Control", "max-age=60, must-understand, no-store")], True),
        ("no-freshness", [], False),
        ("status-404-with-max-age", [("Cache-Control", "max-age=60")], True),
        ("heuristic-last-modified", [("Last-Modified", lambda: http_date(-86400 * 10))], True),
    ],
)
def test_storing_and_freshness(amb, origin, name, headers, reused):
    status = 404 if name.startswith("status-404") else 200
    path = origin.script(f"/rfc/store-{name}", fixed(*headers, status=status))
    get(amb, f"/rfc/store-{name}")
    s, h, _ = get(amb, f"/rfc/store-{name}")
    assert s == status
    assert h["X-Cache"] == ("HIT" if reused else "MISS")
    assert origin.count(path) == (1 if reused else 2)


def test_status_without_heuristic_freshness_needs_explicit_freshness(amb, origin):
    path = origin.script("/rfc/redirect", fixed(("Location", "/elsewhere"), status=302))
    get(amb, "/rfc/redirect")
    assert get(amb, "/rfc/redirect")[1]["X-Cache"] == "MISS"
    path2 = origin.script("/rfc/redirect-fresh", fixed(("Location", "/elsewhere"), ("Cache-Control", "max-age=60"), status=302))
    get(amb, "/rfc/redirect-fresh")
    assert get(amb, "/rfc/redirect-fresh")[1]["X-Cache"] == "HIT"
    assert (origin.count(path), origin.count(path2)) == (2, 1)


def test_connection_listed_and_hop_by_hop_fields_are_not_stored(amb, origin):
    origin.script(
        "/rfc/hop",
        fixed(("Cache-Control", "max-age=60"), ("Connection", "X-Hop"), ("X-Hop", "secret"), ("Keep-Alive", "timeout=5"), ("X-Kept", "yes")),
    )
    get(amb, "/rfc/hop")
    _, h, _ = get(amb, "/rfc/hop")
    assert h["X-Cache"] == "HIT"
    assert h["X-Kept"] == "yes"
    assert h["X-Hop"] is None and h["Keep-Alive"] is None


# --- 3.5 and 4.1: credentials and Vary ------------------------------------------------------------


def test_requests_with_credentials_are_not_served_from_or_stored_in_the_shared_cache(amb, origin):
    path = origin.script("/rfc/creds", fixed(("Cache-Control", "max-age=60")))
    assert get(amb, "/rfc/creds", {"Authorization": "Bearer a"})[1]["X-Cache"] == "BYPASS"
    assert get(amb, "/rfc/creds")[1]["X-Cache"] == "MISS"  # the credentialed answer was not stored
    assert get(amb, "/rfc/creds")[1]["X-Cache"] == "HIT"
    assert get(amb, "/rfc/creds", {"Cookie": "session=1"})[1]["X-Cache"] == "BYPASS"  # not served to it either
    assert origin.count(path) == 3


@pytest.mark.parametrize("directive", ["public, max-age=60", "s-maxage=60"])
def test_public_or_s_maxage_allows_credentials(amb, origin, directive):
    name = directive.split(",")[0].split("=")[0]
    path = origin.script(f"/rfc/creds-{name}", fixed(("Cache-Control", directive)))
    get(amb, f"/rfc/creds-{name}", {"Authorization": "Bearer a"})
    _, h, _ = get(amb, f"/rfc/creds-{name}", {"Authorization": "Bearer b"})
    assert h["X-Cache"] == "HIT"
    assert origin.count(path) == 1


def test_set_cookie_answers_are_stored_only_when_the_origin_says_they_are_for_everyone(amb, origin):
    """RFC 9111 lets a cache store them; handing one client's new cookie to the next is what a
    user of a shared cache would not expect, so only `public` / `s-maxage` answers are stored."""
    session = origin.script("/rfc/cookie", fixed(("Cache-Control", "max-age=60"), ("Set-Cookie", "session=abc")))
    assert [get(amb, "/rfc/cookie")[1]["X-Cache"] for _ in range(2)] == ["MISS", "MISS"]
    legacy = origin.script("/legacy/cookie", fixed(("Set-Cookie", "session=abc")))  # the profile's ttl neither
    assert [get(amb, "/legacy/cookie")[1]["X-Cache"] for _ in range(2)] == ["MISS", "MISS"]
    shared = origin.script("/rfc/cookie-public", fixed(("Cache-Control", "public, max-age=60"), ("Set-Cookie", "lang=en")))
    get(amb, "/rfc/cookie-public")
    _, h, _ = get(amb, "/rfc/cookie-public")
    assert (h["X-Cache"], h["Set-Cookie"]) == ("HIT", "lang=en")
    assert (origin.count(session), origin.count(legacy), origin.count(shared)) == (2, 2, 1)


def test_vary_keeps_several_variants(amb, origin):
    def negotiate(req, n):
        lang = req.header("Accept-Language") or "none"
        return Reply(200, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")], f"{lang}-{n}".encode())

    path = origin.script("/rfc/vary", negotiate)
    assert get(amb, "/rfc/vary", {"Accept-Language": "en"})[2] == b"en-1"
    assert get(amb, "/rfc/vary", {"Accept-Language": "de"})[2] == b"de-2"
    assert get(amb, "/rfc/vary")[2] == b"none-3"
    s, h, b = get(amb, "/rfc/vary", {"Accept-Language": "en"})
    assert (h["X-Cache"], b) == ("HIT", b"en-1")
    s, h, b = get(amb, "/rfc/vary", {"Accept-Language": "de"})
    assert (h["X-Cache"], b) == ("HIT", b"de-2")
    s, h, b = get(amb, "/rfc/vary")
    assert (h["X-Cache"], b) == ("HIT", b"none-3")
    assert origin.count(path) == 3


def test_vary_star_never_matches(amb, origin):
    path = origin.script("/rfc/vary-star", fixed(("Cache-Control", "max-age=60"), ("Vary", "*")))
    get(amb, "/rfc/vary-star")
    assert get(amb, "/rfc/vary-star")[1]["X-Cache"] == "MISS"
    assert origin.count(path) == 2


# --- 4.3: validation ----------------------------------------------------------------------------


def versioned(req, n):
    """ETag "v1"; a matching If-None-Match gets 304 with a header that changed."""
    if req.header("If-None-Match") == '"v1"':
        return Reply(304, [("ETag", '"v1"'), ("Cache-Control", "max-age=0"), ("X-Revision", str(n)), ("Content-Length", "999")])
    return Reply(200, [("ETag", '"v1"'), ("Cache-Control", "max-age=0"), ("X-Revision", str(n))], b"body-v1")


def test_stale_response_is_revalidated_and_the_304_fields_merged(amb, origin):
    path = origin.script("/rfc/etag", versioned)
    assert get(amb, "/rfc/etag")[1]["X-Cache"] == "MISS"
    s, h, b = get(amb, "/rfc/etag")
    assert (s, b, h["X-Cache"], h["X-Revision"]) == (200, b"body-v1", "HIT", "2")
    assert h["Content-Length"] == "7"  # a 304 does not update Content-Length
    received = origin.received(path)
    assert received[1].header("If-None-Match") == '"v1"'
    assert received[0].header("If-None-Match") is None


def test_revalidation_with_last_modified(amb, origin):
    modified = http_date(-3600)

    def dated(req, n):
        if req.header("If-Modified-Since") == modified:
            return Reply(304, [("Cache-Control", "no-cache")])
        return Reply(200, [("Last-Modified", modified), ("Cache-Control", "no-cache")], b"dated")

    path = origin.script("/rfc/lm", dated)
    get(amb, "/rfc/lm")
    s, h, b = get(amb, "/rfc/lm")
    assert (s, b, h["X-Cache"]) == (200, b"dated", "HIT")
    assert [r.header("If-Modified-Since") for r in origin.received(path)] == [None, modified]


def test_revalidation_answered_with_a_new_representation_replaces_it(amb, origin):
    def changing(req, n):
        return Reply(200, [("ETag", f'"v{n}"'), ("Cache-Control", "max-age=0")], f"version {n}".encode())

    origin.script("/rfc/changing", changing)
    get(amb, "/rfc/changing")
    assert get(amb, "/rfc/changing")[2] == b"version 2"
    received = origin.received("/rfc/changing")
    assert received[1].header("If-None-Match") == '"v1"'
    get(amb, "/rfc/changing")
    assert origin.received("/rfc/changing")[2].header("If-None-Match") == '"v2"'


def test_must_revalidate_is_never_served_stale(amb, origin):
    path = origin.script("/guarded/mr", fixed(("Cache-Control", "max-age=0, must-revalidate")))
    get(amb, "/guarded/mr")
    s, h, _ = get(amb, "/guarded/mr", {"Cache-Control": "max-stale"})
    assert h["X-Cache"] == "MISS"
    assert origin.count(path) == 2


def test_clients_own_conditional_requests_are_answered_from_the_cache(amb, origin):
    modified = http_date(-3600)
    path = origin.script("/rfc/cond", fixed(("Cache-Control", "max-age=60"), ("ETag", 'W/"abc"'), ("Last-Modified", modified)))
    get(amb, "/rfc/cond")
    s, h, b = get(amb, "/rfc/cond", {"If-None-Match": '"x", W/"abc"'})
    assert (s, b, h["X-Cache"], h["ETag"]) == (304, b"", "HIT", 'W/"abc"')
    assert h["Age"] is not None and h["Cache-Control"] == "max-age=60"
    s, _, b = get(amb, "/rfc/cond", {"If-None-Match": '"other"'})
    assert (s, b) == (200, b"payload1")
    assert get(amb, "/rfc/cond", {"If-Modified-Since": http_date(-60)})[0] == 304
    assert get(amb, "/rfc/cond", {"If-Modified-Since": http_date(-7200)})[0] == 200
    assert origin.count(path) == 1


# --- 4.4: invalidation --------------------------------------------------------------------------


def test_unsafe_method_invalidates_its_uri_and_same_origin_locations(amb, origin):
    for p in ("/rfc/inv", "/rfc/inv-loc", "/rfc/inv-cl"):
        origin.script(p, lambda req, n: Reply(200, [("Cache-Control", "max-age=60")], b"x") if req.method == "GET" else Reply(
            201, [("Location", "/rfc/inv-loc"), ("Content-Location", f"{origin.upstream.url}/rfc/inv-cl")], b"done"))
        get(amb, p)
        assert get(amb, p)[1]["X-Cache"] == "HIT"
    s, h, _ = amb.request("POST", "/rfc/inv", {}, b"{}")
    assert (s, h["X-Cache"]) == (201, "BYPASS")
    for p in ("/rfc/inv", "/rfc/inv-loc", "/rfc/inv-cl"):
        assert get(amb, p)[1]["X-Cache"] == "MISS", p


def test_failed_unsafe_method_does_not_invalidate(amb, origin):
    origin.script("/rfc/inv-fail", lambda req, n: Reply(200, [("Cache-Control", "max-age=60")], b"x") if req.method == "GET" else Reply(500, [], b"no"))
    get(amb, "/rfc/inv-fail")
    assert amb.request("DELETE", "/rfc/inv-fail")[0] == 500
    assert get(amb, "/rfc/inv-fail")[1]["X-Cache"] == "HIT"


# --- HEAD --------------------------------------------------------------------------------------


def test_head_is_answered_from_a_stored_get(amb, origin):
    path = origin.script("/rfc/head", fixed(("Cache-Control", "max-age=60")))
    s, h, b = get(amb, "/rfc/head", method="HEAD")
    assert (s, b, h["X-Cache"]) == (200, b"", "MISS")
    get(amb, "/rfc/head")
    s, h, b = get(amb, "/rfc/head", method="HEAD")
    assert (s, b, h["X-Cache"], h["Content-Length"]) == (200, b"", "HIT", "8")
    assert [r.method for r in origin.received(path)] == ["HEAD", "GET"]


# --- 5.2.1: request directives -------------------------------------------------------------------


def test_request_directives(amb, origin):
    path = origin.script("/rfc/req", fixed(("Cache-Control", "max-age=100"), ("Age", "50")))
    get(amb, "/rfc/req")
    assert get(amb, "/rfc/req", {"Cache-Control": "max-age=80"})[1]["X-Cache"] == "HIT"
    assert get(amb, "/rfc/req", {"Cache-Control": "max-age=10"})[1]["X-Cache"] == "MISS"  # stores a new copy (age 50 again)
    assert get(amb, "/rfc/req", {"Cache-Control": "min-fresh=10"})[1]["X-Cache"] == "HIT"
    assert get(amb, "/rfc/req", {"Cache-Control": "min-fresh=90"})[1]["X-Cache"] == "MISS"
    assert get(amb, "/rfc/req", {"Cache-Control": "no-cache"})[1]["X-Cache"] == "MISS"
    assert get(amb, "/rfc/req", {"Cache-Control": "no-store"})[1]["X-Cache"] == "BYPASS"  # to the origin, not stored
    assert get(amb, "/rfc/req", {"Cache-Control": "whatever=1, only-if-cached"})[1]["X-Cache"] == "HIT"
    assert origin.count(path) == 5


def test_request_pragma_no_cache_counts_only_without_cache_control(amb, origin):
    path = origin.script("/rfc/pragma", fixed(("Cache-Control", "max-age=60")))
    get(amb, "/rfc/pragma")
    assert get(amb, "/rfc/pragma", {"Pragma": "no-cache"})[1]["X-Cache"] == "MISS"
    assert get(amb, "/rfc/pragma", {"Pragma": "no-cache", "Cache-Control": "max-stale"})[1]["X-Cache"] == "HIT"
    assert get(amb, "/rfc/pragma", {"Pragma": "x-other"})[1]["X-Cache"] == "HIT"
    assert origin.count(path) == 2


def test_request_no_store_is_not_stored(amb, origin):
    path = origin.script("/rfc/req-nostore", fixed(("Cache-Control", "max-age=100")))
    assert get(amb, "/rfc/req-nostore", {"Cache-Control": "no-store"})[1]["X-Cache"] == "BYPASS"
    assert get(amb, "/rfc/req-nostore")[1]["X-Cache"] == "MISS"
    assert origin.count(path) == 2


def test_only_if_cached_miss_is_504(amb, origin):
    path = origin.script("/rfc/oic", fixed(("Cache-Control", "max-age=100")))
    s, h, b = get(amb, "/rfc/oic", {"Cache-Control": "only-if-cached"})
    assert s == 504
    assert json.loads(b) == {"error": "only-if-cached: no stored response can answer this request", "reason": "only_if_cached", "upstream": "rfc"}
    assert h["X-Cache"] == "MISS"
    assert origin.count(path) == 0


def test_max_stale(amb, origin):
    path = origin.script("/rfc/max-stale", fixed(("Cache-Control", "max-age=10"), ("Age", "40")))
    get(amb, "/rfc/max-stale")
    assert get(amb, "/rfc/max-stale", {"Cache-Control": "max-stale=60"})[1]["X-Cache"] == "STALE"
    assert get(amb, "/rfc/max-stale", {"Cache-Control": "max-stale"})[1]["X-Cache"] == "STALE"
    assert get(amb, "/rfc/max-stale", {"Cache-Control": "max-stale=5"})[1]["X-Cache"] == "MISS"
    assert origin.count(path) == 2


# --- RFC 5861 and the profile's stale_if_error ----------------------------------------------------


def test_stale_while_revalidate_answers_at_once_and_refreshes_in_the_background(amb, origin):
    def slow_refresh(req, n):
        # The copy is stale on arrival (Age > max-age) but inside the stale-while-revalidate window.
        return Reply(200, [("Cache-Control", "max-age=10, stale-while-revalidate=600"), ("Age", "20" if n == 1 else "0")],
                     f"gen{n}".encode(), delay=0.5 if n == 2 else 0)

    path = origin.script("/rfc/swr", slow_refresh)
    assert get(amb, "/rfc/swr")[2] == b"gen1"
    started = time.monotonic()
    s, h, b = get(amb, "/rfc/swr")
    assert (b, h["X-Cache"]) == (b"gen1", "STALE")
    assert time.monotonic() - started < 0.5  # did not wait for the refresh
    origin.wait_count(path, 2)
    deadline = time.monotonic() + 10
    while (answer := get(amb, "/rfc/swr"))[2] != b"gen2":
        assert time.monotonic() < deadline, answer
    assert answer[1]["X-Cache"] == "HIT"
    assert origin.count(path) == 2


def test_stale_while_revalidate_window_is_respected(amb, origin):
    path = origin.script("/rfc/swr-out", fixed(("Cache-Control", "max-age=10, stale-while-revalidate=5"), ("Age", "30")))
    get(amb, "/rfc/swr-out")
    assert get(amb, "/rfc/swr-out")[1]["X-Cache"] == "MISS"
    assert origin.count(path) == 2


def test_stale_if_error_from_the_response(amb, origin):
    path = origin.script("/rfc/sie", lambda req, n: Reply(200, [("Cache-Control", "max-age=1, stale-if-error=600"), ("Age", "5")], b"good")
                         if n == 1 else Reply(503, [], b"down"))
    get(amb, "/rfc/sie")
    s, h, b = get(amb, "/rfc/sie")
    assert (s, b, h["X-Cache"]) == (200, b"good", "STALE")
    origin.script("/rfc/sie-none", lambda req, n: Reply(200, [("Cache-Control", "max-age=1"), ("Age", "5")], b"good")
                  if n == 1 else Reply(503, [], b"down"))
    get(amb, "/rfc/sie-none")
    s, h, b = get(amb, "/rfc/sie-none")
    assert (s, b, h["X-Cache"]) == (503, b"down", "MISS")


def test_profile_stale_if_error_covers_connection_errors_and_the_open_breaker(amb, origin):
    path = origin.script("/guarded/down", lambda req, n: Reply(200, [("Cache-Control", "max-age=0"), ("ETag", '"d"')], b"last good")
                         if n == 1 else Reply(close=True))
    get(amb, "/guarded/down")
    s, h, b = get(amb, "/guarded/down")
    assert (s, b, h["X-Cache"]) == (200, b"last good", "STALE")  # connect_error
    before = origin.count(path)
    s, h, b = get(amb, "/guarded/down")
    assert (s, b, h["X-Cache"]) == (200, b"last good", "STALE")  # the breaker is open now
    assert origin.count(path) == before
    s, h, b = get(amb, "/guarded/nothing-stored")
    assert (s, json.loads(b)["reason"], h["X-Cache"]) == (503, "circuit_open", "MISS")


def test_profile_stale_if_error_covers_a_timeout(amb, origin):
    origin.script("/hurried/slow", lambda req, n: Reply(200, [("Cache-Control", "max-age=0"), ("ETag", '"s"')], b"in time")
                  if n == 1 else Reply(200, [("Cache-Control", "max-age=60")], b"too late", delay=3.0))
    get(amb, "/hurried/slow")
    started = time.monotonic()
    s, h, b = get(amb, "/hurried/slow")
    assert (s, b, h["X-Cache"]) == (200, b"in time", "STALE")
    assert time.monotonic() - started < 2.5  # the timeout (500ms) answered, not the late upstream
    origin.script("/hurried/never-stored", lambda req, n: Reply(200, [("Cache-Control", "max-age=60")], b"too late", delay=3.0))
    s, h, b = get(amb, "/hurried/never-stored")
    assert (s, json.loads(b)["reason"], h["X-Cache"]) == (504, "timeout", "MISS")


def test_profile_ttl_gives_freshness_only_where_there_is_none(amb, origin):
    path = origin.script("/legacy/ttl", fixed())
    get(amb, "/legacy/ttl")
    assert get(amb, "/legacy/ttl")[1]["X-Cache"] == "HIT"
    path2 = origin.script("/legacy/ttl-cc", fixed(("Cache-Control", "max-age=0")))
    get(amb, "/legacy/ttl-cc")
    assert get(amb, "/legacy/ttl-cc")[1]["X-Cache"] == "MISS"
    assert (origin.count(path), origin.count(path2)) == (1, 2)


def test_uncached_upstream_has_no_x_cache(amb, origin):
    origin.script("/plain/x", fixed(("Cache-Control", "max-age=60")))
    assert get(amb, "/plain/x")[1]["X-Cache"] is None


# --- coalescing -----------------------------------------------------------------------------------


def concurrently(amb, path, n):
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: get(amb, path), range(n)))


def test_concurrent_misses_cause_one_upstream_request(amb, origin):
    path = origin.script("/rfc/herd", lambda req, n: Reply(200, [("Cache-Control", "max-age=60")], f"only {n}".encode(), delay=1.0))
    answers = concurrently(amb, "/rfc/herd", 6)
    assert [(s, b) for s, _, b in answers] == [(200, b"only 1")] * 6
    assert sorted(h["X-Cache"] for _, h, _ in answers) == ["HIT"] * 5 + ["MISS"]
    assert origin.count(path) == 1


def test_waiters_are_not_failed_with_the_first_request(amb, origin):
    def first_fails(req, n):
        if n == 1:
            return Reply(503, [], b"busy", delay=1.0)
        return Reply(200, [("Cache-Control", "max-age=60")], b"second try", delay=0.2)

    path = origin.script("/rfc/herd-fail", first_fails)
    answers = concurrently(amb, "/rfc/herd-fail", 4)
    assert sorted((s, b) for s, _, b in answers) == [(200, b"second try")] * 3 + [(503, b"busy")]
    assert 2 <= origin.count(path) <= 4  # the waiters asked again for themselves


def test_waiters_for_another_variant_get_their_own(amb, origin):
    """Coalescing is per URI; a waiter whose Vary fields differ from the leader's is not given
    the leader's variant: it asks for its own."""
    def negotiate(req, n):
        lang = req.header("Accept-Language")
        return Reply(200, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")], f"{lang}".encode(), delay=0.5)

    path = origin.script("/rfc/herd-vary", negotiate)
    languages = ["en", "de", "en", "de", "en", "fr"]
    with concurrent.futures.ThreadPoolExecutor(len(languages)) as pool:
        answers = list(pool.map(lambda lang: get(amb, "/rfc/herd-vary", {"Accept-Language": lang}), languages))
    assert [(s, b) for s, _, b in answers] == [(200, lang.encode()) for lang in languages]
    leader = origin.received(path)[0].header("Accept-Language")
    assert origin.count(path) <= 1 + sum(lang != leader for lang in languages)  # the leader's language asked once
    for lang in ("en", "de", "fr"):
        _, h, b = get(amb, "/rfc/herd-vary", {"Accept-Language": lang})
        assert (h["X-Cache"], b) == ("HIT", lang.encode())


def test_uncacheable_answers_are_not_shared_between_waiters(amb, origin):
    path = origin.script("/rfc/herd-private", lambda req, n: Reply(200, [("Cache-Control", "private")], f"for {n}".encode(), delay=0.5))
    answers = concurrently(amb, "/rfc/herd-private", 3)
    assert len({b for _, _, b in answers}) == 3
    assert origin.count(path) == 3


# --- status and metrics ---------------------------------------------------------------------------


def test_status_and_metrics_report_the_cache(amb, origin):
    origin.script("/rfc/counted", fixed(("Cache-Control", "max-age=60")))
    before = amb.status()["upstreams"]["rfc"]["cache"]
    get(amb, "/rfc/counted")
    get(amb, "/rfc/counted")
    after = amb.status()["upstreams"]["rfc"]["cache"]
    assert after["hits"] - before["hits"] == 1
    assert after["misses"] - before["misses"] == 1
    assert after["entries"] >= 1
    assert set(after) >= {"entries", "hits", "misses", "stale"}
    _, _, metrics = amb.get("/_ambassador/metrics")
    assert b'ambassador_cache_results_total{result="hit",upstream="rfc"}' in metrics


def test_a_304_for_another_representation_is_not_merged(amb, origin):
    def confused(req, n):
        if req.header("If-None-Match"):
            return Reply(304, [("ETag", '"other"')])
        return Reply(200, [("ETag", f'"r{n}"'), ("Cache-Control", "max-age=0")], f"rep {n}".encode())

    path = origin.script("/rfc/etag-mismatch", confused)
    get(amb, "/rfc/etag-mismatch")
    s, h, b = get(amb, "/rfc/etag-mismatch")
    assert (s, b, h["X-Cache"]) == (200, b"rep 3", "MISS")
    assert [r.header("If-None-Match") for r in origin.received(path)] == [None, '"r1"', None]


def test_request_stale_if_error(amb, origin):
    path = origin.script("/rfc/req-sie", lambda req, n: Reply(200, [("Cache-Control", "max-age=1"), ("Age", "30")], b"old")
                         if n == 1 else Reply(500, [], b"broken"))
    get(amb, "/rfc/req-sie")
    assert get(amb, "/rfc/req-sie", {"Cache-Control": "stale-if-error=10"})[0] == 500  # 29s stale > 10s
    s, h, b = get(amb, "/rfc/req-sie", {"Cache-Control": "stale-if-error=60"})
    assert (s, b, h["X-Cache"]) == (200, b"old", "STALE")


def test_head_response_freshens_the_stored_get(amb, origin):
    def described(req, n):
        if req.method == "HEAD":
            return Reply(200, [("ETag", '"h"'), ("Cache-Control", "max-age=60"), ("X-Fresh", "from-head"), ("Content-Length", "4")])
        return Reply(200, [("ETag", '"h"'), ("Cache-Control", "max-age=0")], b"body")

    path = origin.script("/rfc/head-fresh", described)
    get(amb, "/rfc/head-fresh")
    assert get(amb, "/rfc/head-fresh", method="HEAD")[1]["X-Cache"] == "MISS"  # stale: asked upstream
    s, h, b = get(amb, "/rfc/head-fresh")
    assert (s, b, h["X-Cache"], h["X-Fresh"]) == (200, b"body", "HIT", "from-head")
    assert [r.method for r in origin.received(path)] == ["GET", "HEAD"]


def test_requests_for_an_uncacheable_uri_do_not_wait_for_each_other(amb, origin):
    path = origin.script("/rfc/pass", lambda req, n: Reply(200, [("Cache-Control", "no-store")], b"x", delay=1.5))
    get(amb, "/rfc/pass")  # the cache learns the URI's answers cannot be stored
    started = time.monotonic()
    answers = concurrently(amb, "/rfc/pass", 3)
    assert [s for s, _, _ in answers] == [200] * 3
    assert time.monotonic() - started < 2.8  # in parallel, not one after the other
    assert origin.count(path) == 4
