"""Cache behaviours the public cache-tests suite checks (bench/cache_tests.py), each through the
real ambassador in front of a scripted origin: X-Cache: BYPASS, Age parsing, the fields a 304
may not update, Surrogate-Control, byte ranges from stored responses, heuristic freshness of
`public` answers, case-insensitive Vary values. Staleness comes from header values, not waiting.
"""

import pytest

from harness import Ambassador, Reply
from profiles import profile, upstream
from test_cache_e2e import Origin, fixed, http_date


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    with o.upstream:
        yield o


@pytest.fixture(scope="module")
def amb(origin, tmp_path_factory):
    conformance = profile(upstream("conf", f"{origin.upstream.url}/conf", path_prefix="/conf", cache={}))
    with Ambassador(tmp_path_factory.mktemp("conformance"), conformance) as a:
        yield a


def x_cache(amb, path, headers=None, method="GET"):
    return amb.request(method, path, headers or {})[1]["X-Cache"]


def bypassed(amb) -> int:
    return amb.status()["upstreams"]["conf"]["cache"]["bypass"]


# --- X-Cache: BYPASS ------------------------------------------------------------------------------


def test_bypass_is_reported_and_counted_for_requests_the_cache_may_not_answer(amb, origin):
    path = origin.script("/conf/bypass", fixed(("Cache-Control", "max-age=60")))
    before = bypassed(amb)
    assert x_cache(amb, path, method="POST") == "BYPASS"
    assert x_cache(amb, path, {"Cache-Control": "no-store"}) == "BYPASS"
    assert x_cache(amb, path) == "MISS"  # the no-store answer was not stored
    assert x_cache(amb, path) == "HIT"
    assert x_cache(amb, path, {"Cache-Control": "no-store"}) == "BYPASS"  # not consulted: to the origin
    assert x_cache(amb, path, {"Authorization": "Bearer a"}) == "BYPASS"  # not public: not for the shared cache
    assert x_cache(amb, path, {"Cookie": "session=1"}) == "BYPASS"
    assert origin.count(path) == 6
    assert bypassed(amb) == before + 5


def test_a_credentialed_request_with_a_public_answer_is_a_miss_then_a_hit(amb, origin):
    path = origin.script("/conf/public", fixed(("Cache-Control", "public, max-age=60")))
    assert x_cache(amb, path, {"Authorization": "Bearer a"}) == "MISS"
    assert x_cache(amb, path, {"Authorization": "Bearer b"}) == "HIT"
    assert origin.count(path) == 1


# --- Age ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ages",
    [["abc"], ["-7200"], ["7200.0"], ["7200;foo=bar"], ["7200,0"], ["0, 0"], ["0", "0"], ["0", "7200"]],
    ids=["letters", "negative", "fraction", "parameter", "list", "repeated", "two-lines", "two-lines-old"],
)
def test_a_response_whose_age_cannot_be_read_is_stale(amb, origin, ages):
    path = origin.script(f"/conf/age-{len(origin.scripts)}", fixed(("Cache-Control", "max-age=3600"), *(("Age", a) for a in ages)))
    assert x_cache(amb, path) == "MISS"
    assert x_cache(amb, path) == "MISS"
    assert origin.count(path) == 2


def test_a_readable_age_counts_and_a_huge_one_is_old(amb, origin):
    young = origin.script("/conf/age-young", fixed(("Cache-Control", "max-age=3600"), ("Age", "100")))
    assert x_cache(amb, young) == "MISS"
    _, h, _ = amb.request("GET", young)
    assert h["X-Cache"] == "HIT" and int(h["Age"]) >= 100
    old = origin.script("/conf/age-old", fixed(("Cache-Control", "max-age=3600"), ("Age", "99999999999")))
    assert [x_cache(amb, old), x_cache(amb, old)] == ["MISS", "MISS"]


# --- 304: what it may update ------------------------------------------------------------------


def test_a_304_updates_the_stored_fields_but_not_those_of_the_stored_content(amb, origin):
    def answer(req, n):
        if req.header("If-None-Match") == '"v1"':
            return Reply(304, [("ETag", '"v1"'), ("Cache-Control", "max-age=60"), ("X-Version", "2"),
                               ("Content-Encoding", "x-other"), ("Content-MD5", "N7UdGUp1E+RbVvZSTy1R8g=="),
                               ("Content-Range", "bytes 0-1/2")])
        return Reply(200, [("ETag", '"v1"'), ("Cache-Control", "max-age=0"), ("X-Version", "1"),
                           ("Content-Encoding", "x-stored"), ("Content-MD5", "rL0Y20zC+Fzt72VPzMSk2A=="),
                           ("Content-Range", "bytes 0-6/7")], b"payload")

    path = origin.script("/conf/304", answer)
    assert x_cache(amb, path) == "MISS"
    status, h, body = amb.request("GET", path)
    assert (status, h["X-Cache"], body) == (200, "HIT", b"payload")  # revalidated
    assert h["X-Version"] == "2" and h["Cache-Control"] == "max-age=60"
    assert h.get_all("Content-Encoding") == ["x-stored"]
    assert h.get_all("Content-MD5") == ["rL0Y20zC+Fzt72VPzMSk2A=="]
    assert h.get_all("Content-Range") == ["bytes 0-6/7"]
    assert x_cache(amb, path) == "HIT"  # fresh for the 304's max-age
    assert origin.count(path) == 2


# --- Surrogate-Control ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cache_control, surrogate_control, second",
    [
        ("no-store", "max-age=60", "HIT"),  # for the gateway: store, whatever browsers are told
        ("max-age=1, must-revalidate", "max-age=3600", "HIT"),
        ("max-age=3600", "max-age=0", "MISS"),
        ("max-age=3600", "no-store", "MISS"),
        ("no-store", "max-age=60;ambassador", "HIT"),  # targeted at this cache
        ("no-store", "max-age=60;other-edge", "MISS"),  # targeted at another one
    ],
)
def test_surrogate_control_rules_the_gateway_cache_and_is_removed(amb, origin, cache_control, surrogate_control, second):
    path = origin.script(
        f"/conf/surrogate-{len(origin.scripts)}", fixed(("Cache-Control", cache_control), ("Surrogate-Control", surrogate_control))
    )
    _, first, _ = amb.request("GET", path)
    _, again, _ = amb.request("GET", path)
    assert (first["X-Cache"], again["X-Cache"]) == ("MISS", second)
    assert first["Surrogate-Control"] is None and again["Surrogate-Control"] is None
    assert first["Cache-Control"] == cache_control  # the client's caches still get theirs
    assert origin.received(path)[0].header("Surrogate-Capability") == 'ambassador="Surrogate/1.0"'


# --- byte ranges ----------------------------------------------------------------------------------


def test_a_byte_range_of_a_fresh_stored_response_is_answered_from_it(amb, origin):
    path = origin.script("/conf/range", lambda req, n: Reply(200, [("Cache-Control", "max-age=60")], b"0123456789A"))
    assert x_cache(amb, path, {"Range": "bytes=0-1"}) == "BYPASS"  # nothing stored: the origin's answer
    assert x_cache(amb, path) == "MISS"
    for spec, content_range, body in [("bytes=0-1", "bytes 0-1/11", b"01"), ("bytes=1-", "bytes 1-10/11", b"123456789A"),
                                      ("bytes=-1", "bytes 10-10/11", b"A")]:
        status, h, got = amb.request("GET", path, {"Range": spec})
        assert (status, h["X-Cache"], h["Content-Range"], got) == (206, "HIT", content_range, body)
    assert x_cache(amb, path, {"Range": "bytes=0-1,3-4"}) == "BYPASS"  # several ranges: the origin's
    assert origin.count(path) == 3


# --- heuristic freshness and Vary -------------------------------------------------------------


def test_a_public_answer_of_any_status_is_heuristically_fresh(amb, origin):
    path = origin.script("/conf/public-599", fixed(("Cache-Control", "public"), ("Last-Modified", http_date(-10000)), status=599))
    assert [x_cache(amb, path), x_cache(amb, path)] == ["MISS", "HIT"]
    plain = origin.script("/conf/plain-599", fixed(("Last-Modified", http_date(-10000)), status=599))
    assert [x_cache(amb, plain), x_cache(amb, plain)] == ["MISS", "MISS"]


def test_vary_on_accept_language_ignores_case(amb, origin):
    path = origin.script("/conf/lang", fixed(("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")))
    assert x_cache(amb, path, {"Accept-Language": "en, de"}) == "MISS"
    assert x_cache(amb, path, {"Accept-Language": "eN,De"}) == "HIT"
    assert x_cache(amb, path, {"Accept-Language": "fr"}) == "MISS"
