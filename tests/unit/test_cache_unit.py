"""The cache's plain-Python logic: RFC 9111 parsing and arithmetic, keys, entries, the memory store."""

import asyncio
import email.utils
import tracemalloc

import pytest
from multidict import CIMultiDict

from addons.cache import freshness, keys, ranges
from addons.cache.entry import dump_variants, load_variants, make_entry, merge_not_modified
from addons.cache.stores import Guarded, MemoryStore, SqliteStore
from addons.exchange import UpstreamRequest, UpstreamResponse
from addons.profile import CachePolicy, Match, Upstream, upstream_url

NOW = 1_800_000_000.0
UPSTREAM = Upstream("billing", upstream_url("http://Partner.example:8080/v2"), Match(path_prefix="/billing"))


def date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


def entry_for(headers, status=200, request_headers=(), policy=CachePolicy(), request_cc=None, body=b"body"):
    request = UpstreamRequest("GET", "/v2/x", CIMultiDict(request_headers))
    response = UpstreamResponse(status, "OK", CIMultiDict(headers), body)
    return make_entry(request, response, NOW - 1, NOW, policy, request_cc or {})


# --- Cache-Control and dates ----------------------------------------------------------------------


def test_cache_control_parsing():
    cc, dups = freshness.parse_cache_control(['Max-Age="60", no-cache="Set-Cookie, X-A", private', "s-maxage=5,,  x-ext=a=b"])
    assert cc == {"max-age": "60", "no-cache": "Set-Cookie, X-A", "private": None, "s-maxage": "5", "x-ext": "a=b"}
    assert dups == frozenset()
    cc, dups = freshness.parse_cache_control(["max-age=60", "max-age=0, max-age=0"])
    assert cc["max-age"] == "60" and dups == {"max-age"}
    assert freshness.parse_cache_control(['x="a\\"b", public']) == ({"x": 'a"b', "public": None}, frozenset())


@pytest.mark.parametrize(
    "argument, seconds",
    [("0", 0), ("60", 60), ("-1", None), ("1.5", None), ("", None), (None, None), ("abc", None), ("٣", None),
     ("2147483648", 2147483648), ("99999999999999999999", 2147483648)],
)
def test_delta_seconds(argument, seconds):
    assert freshness.delta_seconds(argument) == seconds


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),
        ("Sun Nov  6 08:49:37 1994", 784111777.0),
        ("Sun, 06 Nov 1994 08:49:37 +0100", None),  # HTTP-dates are GMT
        ("0", None),
        ("-1", None),
        ("", None),
        ("tomorrow", None),
    ],
)
def test_http_date(value, expected):
    assert freshness.http_date(value) == expected


def test_explicit_lifetime_precedence_and_invalid_values():
    def lifetime(cc_lines, expires=(), at=NOW):
        cc, dups = freshness.parse_cache_control(cc_lines)
        return freshness.explicit_lifetime(cc, dups, list(expires), at)

    assert lifetime(["max-age=10, s-maxage=20"]) == 20
    assert lifetime(["max-age=10"], [date(100)]) == 10
    assert lifetime([], [date(100)]) == 100
    assert lifetime([], [date(-100)]) == 0
    assert lifetime([], ["0"]) == 0  # invalid Expires: already expired
    assert lifetime([], [date(100), date(200)]) == 0  # conflicting Expires lines
    assert lifetime(["max-age=ten"]) == 0  # invalid freshness: stale
    assert lifetime(["max-age=10", "max-age=20"]) == 0  # conflicting duplicates: stale
    assert lifetime(["public"]) is None


def test_heuristic_lifetime():
    assert freshness.heuristic_lifetime(NOW, date(-1000)) == 100
    assert freshness.heuristic_lifetime(NOW, date(-10 * 86400 * 10)) == freshness.HEURISTIC_MAX
    assert freshness.heuristic_lifetime(NOW, None) == 0
    assert freshness.heuristic_lifetime(NOW, date(10)) == 0


@pytest.mark.parametrize(
    "status, cc, cacheable",
    [(200, {}, True), (404, {}, True), (302, {}, False), (599, {}, False), (500, {}, False),
     (302, {"public": None}, True), (599, {"public": None}, True)],  # public: heuristically cacheable (5.2.2.9)
)
def test_heuristically_cacheable(status, cc, cacheable):
    assert freshness.heuristically_cacheable(status, cc) is cacheable


def test_public_response_without_freshness_gets_the_heuristic():
    assert entry_for([("Cache-Control", "public"), ("Last-Modified", date(-1000))], status=599).lifetime == 100
    assert entry_for([("Last-Modified", date(-1000))], status=599) is None


def test_corrected_initial_age():
    # RFC 9111 4.2.3: max(apparent age, Age + response delay)
    assert freshness.corrected_initial_age(0, NOW - 30, NOW - 2, NOW) == 30
    assert freshness.corrected_initial_age(100, NOW, NOW - 2, NOW) == 102
    assert freshness.corrected_initial_age(0, NOW + 50, NOW - 2, NOW) == 2  # future Date: apparent age 0


@pytest.mark.parametrize(
    "lines, age",
    [
        ([], 0),  # no Age: the response is as old as its Date says
        (["7200"], 7200),
        ([" 60 "], 60),  # whitespace around a field value is not part of it
        (["99999999999"], freshness.DELTA_MAX),  # beyond what the cache represents: 2^31, still old
        (["2147483648"], freshness.DELTA_MAX),
        (["abc"], None),  # unreadable ages: unknown, so stale
        (["-7200"], None),
        (["7200.0"], None),
        (["7200;foo=bar"], None),
        (["7200;foo=111"], None),
        (["7200,0"], None),  # a list: the singleton was repeated
        (["0,7200"], None),
        (["0, 0"], None),
        (["3600, 3600"], None),
        (["0", "0"], None),  # two field lines are a list too
        (["0", "7200"], None),
        ([""], None),
    ],
)
def test_age_value(lines, age):
    assert freshness.age_value(lines) == age


def test_unreadable_age_makes_the_entry_stale():
    fresh = [("Cache-Control", "max-age=3600"), ("Date", date(0))]
    assert entry_for([*fresh, ("Age", "100")]).lifetime == 3600
    assert entry_for([*fresh, ("Age", "0"), ("Age", "0"), ("ETag", '"a"')]).lifetime == 0  # kept to revalidate
    assert entry_for([*fresh, ("Age", "-1")]) is None  # stale at once, nothing to revalidate with
    assert entry_for([*fresh, ("Age", "99999999999"), ("ETag", '"a"')]).age(NOW) >= freshness.DELTA_MAX


@pytest.mark.parametrize(
    "lines, directives",
    [
        (["max-age=3600"], {"max-age": "3600"}),
        (["MaX-aGe=3600"], {"max-age": "3600"}),
        (["foobar, max-age=3600"], {"foobar": None, "max-age": "3600"}),
        (["max-age=3600;ambassador"], {"max-age": "3600"}),  # targeted at this cache
        (["max-age=3600;other-edge"], {}),  # targeted at another surrogate
        (["max-age=60;other-edge, max-age=10"], {"max-age": "10"}),
        (['content="ESI/1.0", no-store', "max-age=1"], {"content": "ESI/1.0", "no-store": None, "max-age": "1"}),
        ([""], {}),
    ],
)
def test_surrogate_control(lines, directives):
    assert freshness.surrogate_control(lines, "ambassador") == directives


@pytest.mark.parametrize(
    "argument, lifetime",
    [("3600", 3600), ("60+30", 60), ("99999999999", freshness.DELTA_MAX), ("0", 0), ("ten", 0), ("", 0), (None, 0)],
)
def test_surrogate_lifetime(argument, lifetime):
    assert freshness.surrogate_lifetime(argument) == lifetime


def test_surrogate_control_replaces_cache_control_storage_and_freshness():
    assert entry_for([("Cache-Control", "max-age=1"), ("Surrogate-Control", "max-age=3600")]).lifetime == 3600
    assert entry_for([("Cache-Control", "max-age=3600"), ("Surrogate-Control", "max-age=1")]).lifetime == 1
    assert entry_for([("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=60")]).lifetime == 60
    assert entry_for([("Expires", date(-100)), ("Date", date(0)), ("Surrogate-Control", "max-age=60")]).lifetime == 60
    assert entry_for([("Cache-Control", "max-age=60"), ("Surrogate-Control", "max-age=60;other")]).lifetime == 60
    assert entry_for([("Cache-Control", "max-age=60"), ("Expires", date(100)), ("Surrogate-Control", "no-store")]) is None
    assert entry_for([("Expires", date(100)), ("Date", date(0)), ("Surrogate-Control", "max-age=0")]) is None
    # still not for the shared cache: private answers, and credentials without public / s-maxage
    assert entry_for([("Cache-Control", "private"), ("Surrogate-Control", "max-age=60")]) is None
    assert entry_for([("Surrogate-Control", "max-age=60")], request_headers=[("Authorization", "x")]) is None


def test_entity_tags():
    assert freshness.entity_tags('"a", W/"b" ,*') == ['"a"', 'W/"b"', "*"]
    assert freshness.weak_match('W/"b"', '"b"')
    assert not freshness.weak_match('"a"', '"b"')


# --- keys and Vary ---------------------------------------------------------------------------------


def test_keys():
    name = UPSTREAM.name
    assert keys.primary_key(UPSTREAM, "/v2/x?a=1") == f"{name} http://partner.example:8080/v2/x?a=1"
    assert keys.primary_key(UPSTREAM, "/v2/x").startswith(keys.namespace(UPSTREAM))
    assert keys.related_key(UPSTREAM, "/v2/x", "/v2/y?z") == f"{name} http://partner.example:8080/v2/y?z"
    assert keys.related_key(UPSTREAM, "/v2/a/b", "c") == f"{name} http://partner.example:8080/v2/a/c"
    assert keys.related_key(UPSTREAM, "/v2/x", "http://PARTNER.example:8080/v2/y") == f"{name} http://partner.example:8080/v2/y"
    assert keys.related_key(UPSTREAM, "/v2/x", "http://other.example:8080/v2/y") is None
    assert keys.related_key(UPSTREAM, "/v2/x", "https://partner.example:8080/v2/y") is None


def test_vary_normalisation():
    assert keys.vary_names(["Accept-Language, accept", "X-A"]) == ("accept", "accept-language", "x-a")
    assert keys.vary_names(["Accept, *"]) is None
    names = ("accept", "x-missing")
    a = keys.selecting_values(names, CIMultiDict([("Accept", "text/html ,  application/json")]))
    b = keys.selecting_values(names, CIMultiDict([("accept", "text/html"), ("Accept", "application/json")]))
    assert a == b == ("text/html,application/json", None)
    assert keys.selecting_values(names, CIMultiDict([("X-Missing", "")])) == (None, "")
    # case-insensitive values fold: language ranges, codings, charsets; others keep their case
    folded = ("accept-encoding", "accept-language", "x-a")
    assert keys.selecting_values(folded, CIMultiDict([("Accept-Language", "eN, De"), ("Accept-Encoding", "GZip"), ("X-A", "Q")])) == (
        "gzip", "en,de", "Q"
    )


# --- entries ----------------------------------------------------------------------------------------


def test_entry_fields_are_worked_out_at_store_time():
    e = entry_for(
        [("Cache-Control", "max-age=60, stale-while-revalidate=30, stale-if-error=600"), ("Date", date(-10)), ("Age", "5"),
         ("ETag", '"x"'), ("X-Cache", "HIT from elsewhere"), ("X-Ambassador-Attempts", "2"), ("Vary", "Accept")],
        request_headers=[("Accept", "a/b")],
    )
    assert e.lifetime == 60
    assert e.corrected_initial_age == 10  # apparent age 10 > 5 + 1 s delay
    assert e.age(NOW + 5) == 15
    assert (e.stale_while_revalidate, e.stale_if_error, e.etag) == (30, 600, '"x"')
    assert e.vary == ("accept",) and e.vary_values == ("a/b",)
    assert {k.lower() for k, _ in e.headers} == {"cache-control", "date", "etag", "vary"}
    served = e.response(NOW + 5, "HIT")
    assert served.headers["Age"] == "15" and served.headers["Date"] == date(-10)


@pytest.mark.parametrize(
    "headers, status, request_headers, request_cc",
    [
        ([("Cache-Control", "no-store, max-age=60")], 200, [], {}),
        ([("Cache-Control", "private, max-age=60")], 200, [], {}),
        ([("Cache-Control", "max-age=60")], 200, [("Authorization", "x")], {}),
        ([("Cache-Control", "max-age=60")], 200, [("Cookie", "x")], {}),
        ([("Cache-Control", "max-age=60")], 200, [], {"no-store": None}),
        ([("Cache-Control", "max-age=60"), ("Vary", "*")], 200, [], {}),
        ([("Cache-Control", "max-age=60")], 206, [], {}),
        ([], 302, [], {}),  # not heuristically cacheable, no explicit freshness
        ([], 200, [], {}),  # nothing to reuse it with: no freshness, no validator
    ],
)
def test_not_storable(headers, status, request_headers, request_cc):
    assert entry_for(headers, status, request_headers, request_cc=request_cc) is None


def test_must_understand():
    assert entry_for([("Cache-Control", "max-age=60, must-understand, no-store")]).lifetime == 60
    assert entry_for([("Cache-Control", "max-age=60, must-understand, no-store")], status=299) is None
    assert entry_for([("Cache-Control", "max-age=60, must-understand")], status=299) is None
    assert entry_for([("Cache-Control", "max-age=60")], status=299).lifetime == 60


def test_ttl_applies_only_without_explicit_freshness():
    legacy = CachePolicy(ttl=30)
    assert entry_for([], policy=legacy).lifetime == 30
    assert entry_for([("Cache-Control", "max-age=5")], policy=legacy).lifetime == 5
    assert entry_for([("Expires", "0")], policy=legacy) is None  # invalid Expires is explicit: stale, not ttl
    assert entry_for([("Last-Modified", date(-1000))], policy=legacy).lifetime == 30  # ttl replaces the heuristic
    assert entry_for([("Last-Modified", date(-1000))]).lifetime == 100


def test_profile_stale_if_error_keeps_responses_without_validators():
    assert entry_for([], policy=CachePolicy(stale_if_error=60)).lifetime == 0


def test_flags():
    assert entry_for([("Cache-Control", "max-age=5, must-revalidate")]).must_revalidate
    assert entry_for([("Cache-Control", "max-age=5, proxy-revalidate")]).must_revalidate
    assert entry_for([("Cache-Control", "s-maxage=5")]).must_revalidate  # s-maxage implies proxy-revalidate
    assert entry_for([("Cache-Control", "no-cache"), ("ETag", '"a"')]).no_cache
    assert entry_for([("Cache-Control", "public, max-age=5")], request_headers=[("Authorization", "x")]).shared_with_credentials


@pytest.mark.parametrize(
    "value, span",
    [
        ("bytes=0-1", (0, 1)),
        ("bytes=1-", (1, 10)),
        ("bytes=-1", (10, 10)),  # the last byte
        ("bytes=-50", (0, 10)),  # a suffix longer than the body: all of it
        ("bytes=5-99", (5, 10)),  # a last position beyond the end: up to the end
        (" Bytes = 2-3", (2, 3)),
        ("bytes=11-", None),  # unsatisfiable: the upstream says so
        ("bytes=3-2", None),
        ("bytes=-0", None),
        ("bytes=0-1,3-4", None),  # several ranges: a multipart answer, the upstream's
        ("items=0-1", None),
        ("bytes=a-b", None),
        ("bytes=1", None),
        ("bytes=-", None),
        ("bytes=+1-2", None),
        ("bytes=\u0661-2", None),
    ],
)
def test_byte_range(value, span):
    assert ranges.byte_range(value, 11) == span


def test_partial_answer_from_a_stored_response():
    e = entry_for([("Cache-Control", "max-age=60"), ("Content-Length", "11")], body=b"01234567890")
    partial = e.partial(NOW, "HIT", 1, 3)
    assert (partial.status, partial.body) == (206, b"123")
    assert partial.headers["Content-Range"] == "bytes 1-3/11" and partial.headers["Content-Length"] == "3"


def test_304_merge_replaces_fields_but_not_those_of_the_stored_content():
    e = entry_for(
        [("Cache-Control", "max-age=0"), ("ETag", '"a"'), ("X-V", "1"), ("X-V", "1b"), ("Content-Length", "4"),
         ("Content-Encoding", "gzip"), ("Content-MD5", "stored=="), ("Content-Range", "bytes 0-3/4"), ("Content-Type", "a/b")]
    )
    not_modified = UpstreamResponse(304, "", CIMultiDict(
        [("X-V", "2"), ("Content-Length", "0"), ("Cache-Control", "max-age=9"), ("Content-Encoding", "br"),
         ("Content-MD5", "other=="), ("Content-Range", "bytes 0-9/10"), ("Content-Type", "a/c")]
    ))
    merged = merge_not_modified(e, not_modified)
    assert merged.headers.getall("X-V") == ["2"]
    assert merged.headers["Cache-Control"] == "max-age=9"
    assert merged.headers["Content-Type"] == "a/c"  # describes the representation: updated
    # describe the stored bytes, which the 304 did not send: kept (RFC 9111 3.2)
    assert merged.headers["Content-Length"] == "4"
    assert merged.headers.getall("Content-Encoding") == ["gzip"]
    assert merged.headers.getall("Content-MD5") == ["stored=="]
    assert merged.headers.getall("Content-Range") == ["bytes 0-3/4"]
    assert merged.body == b"body"


def test_serialised_variants_round_trip():
    a = entry_for([("Cache-Control", "max-age=60"), ("Vary", "Accept")], request_headers=[("Accept", "x")], body=b"\x00\xffA")
    b = entry_for([("Cache-Control", "max-age=60"), ("Vary", "Accept")], body=b"")
    assert load_variants(dump_variants([a, b])) == [a, b]


# --- stores -----------------------------------------------------------------------------------------


def test_memory_store_is_bounded_and_least_recently_used():
    async def run():
        entry = entry_for([("Cache-Control", "max-age=60")], body=b"x" * 1000)
        store = MemoryStore(max_bytes=10**9)
        await store.put("k0", [entry], 60)
        store.max_bytes = store.bytes * 3 + 10  # room for three such items
        for i in range(3):
            await store.put(f"k{i}", [entry], 60)
        await store.get("k0")  # k1 is now the least recently used
        await store.put("k3", [entry], 60)
        assert [k for k in ("k0", "k1", "k2", "k3") if await store.get(k)] == ["k0", "k2", "k3"]
        assert store.bytes <= store.max_bytes
        for i in range(1000):
            await store.put(f"many{i}", [entry], 60)
        assert store.bytes <= store.max_bytes and store.entries >= 2
        assert await store.get("many999")
        await store.put("huge", [entry_for([("Cache-Control", "max-age=60")], body=b"x" * 10_000)], 60)
        assert await store.get("huge") is None
        await store.put("short", [entry], 0.0)
        assert await store.get("short") is None  # past its use
        await store.clear("many")
        assert store.entries == 0 and store.bytes == 0

    asyncio.run(run())


def test_sqlite_store_persists_and_evicts(tmp_path):
    entry = entry_for([("Cache-Control", "max-age=60")], body=b"y" * 1000)

    async def fill():
        store = SqliteStore(tmp_path / "c.db", max_bytes=10_000)
        await asyncio.gather(*(store.put(f"k{i}", [entry], 60) for i in range(20)))
        assert store.entries < 20 and store.bytes <= 10_000
        assert await store.get("k19") == [entry]
        await store.put("gone", [entry], 0.0)
        await store.close()

    async def reopen():
        store = SqliteStore(tmp_path / "c.db", max_bytes=10_000)
        assert await store.get("k19") == [entry]
        assert await store.get("gone") is None
        await store.delete("k19")
        assert await store.get("k19") is None
        await store.clear("k")
        assert store.entries == 0
        await store.close()

    asyncio.run(fill())
    asyncio.run(reopen())


def test_guarded_store_degrades_and_warns_once(caplog):
    class Broken:
        entries = 0

        async def get(self, key):
            raise OSError("disk on fire")

        async def put(self, key, variants, keep_for):
            raise OSError("disk full")

    async def run():
        store = Guarded(Broken(), "billing")
        assert await store.get("k") is None
        await store.put("k", [], 1)
        assert await store.get("k") is None

    with caplog.at_level("WARNING", logger="ambassador.cache"):
        asyncio.run(run())
    assert [r.getMessage() for r in caplog.records] == [
        "upstream billing: cache store failed (OSError: disk on fire); answering without the cache until it recovers"
    ]


def test_memory_store_stays_within_max_bytes_under_many_distinct_keys():
    """The accounting counts Python's object overhead, so real memory follows max_bytes."""

    async def run():
        store = MemoryStore(max_bytes=200_000)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(3_000):
                headers = [("Content-Type", "application/json"), ("Cache-Control", "max-age=60"), ("ETag", f'"{i}"'), ("Vary", "Accept")]
                entry = entry_for(headers, request_headers=[("Accept", "*/*")], body=b'{"id": %d}' % i)
                await store.put(f"http://partner.example/v2/items/{i}", [entry], 60)
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert store.bytes <= store.max_bytes
        assert used <= store.max_bytes + 64 * 1024, used

    asyncio.run(run())
