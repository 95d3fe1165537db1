"""Aggregate paths, capture confinement and body embedding as plain Python."""

from pathlib import Path

import pytest
from multidict import CIMultiDict

from addons.aggregate import AggregateTable, embedded, part_path, query_values
from addons.errors import AmbassadorError
from addons.exchange import UpstreamResponse
from addons.profile import parse_profile


def table() -> AggregateTable:
    profile = parse_profile(
        {
            "upstreams": {"users": {"url": "http://u.example", "match": {"path_prefix": "/users"}}},
            "aggregates": {
                "/dashboard/{user_id}": {"user": "users:/users/{user_id}"},
                "/a.b/{x}/c": {"x": "users:/x?q={x}"},
            },
        },
        Path("/tmp/p.yaml"),
    )
    return AggregateTable(profile)


def test_templates_match_whole_segments_and_decode_captures():
    t = table()
    aggregate, captures = t.match("/dashboard/a%20b")
    assert aggregate.template == "/dashboard/{user_id}" and captures == {"user_id": "a b"}
    assert t.match("/dashboard/") is None
    assert t.match("/dashboard/1/2") is None
    assert t.match("/dashboardx/1") is None
    assert t.match("/a.b/1/c")[1] == {"x": "1"}
    assert t.match("/aXb/1/c") is None  # literal dots are literal


@pytest.mark.parametrize("value, expected", [
    ("42", "/users/42"),
    ("a/b", "/users/a%2Fb"),
    ("x?admin=1&y#z", "/users/x%3Fadmin%3D1%26y%23z"),
    ("100%", "/users/100%25"),
    ("...", "/users/..."),
])
def test_captures_are_confined_to_their_segment(value, expected):
    assert part_path("/users/{id}", {"id": value}) == expected


# '%2e%2e' (a capture already decoded once) would still be '..' to an upstream that decodes twice.
@pytest.mark.parametrize("value", ["..", ".", "../admin", "a/../../b", "%2e%2e"])
def test_captures_that_would_become_dot_segments_are_refused(value):
    with pytest.raises(AmbassadorError) as e:
        part_path("/users/{id}/x", {"id": value})
    assert e.value.reason == "bad_request"


@pytest.mark.parametrize("query, expected", [
    ("", {}),
    ("page=2&sort=name", {"page": "2", "sort": "name"}),
    ("page=", {"page": ""}),
    ("page", {"page": ""}),
    ("page=1&page=2", {"page": "1"}),  # a repeated parameter: its first value
    ("q=a+b%26c%3Dd", {"q": "a b&c=d"}),  # decoded once, '+' is a space
    ("sort%2Dby=x", {"sort-by": "x"}),
])
def test_query_values(query, expected):
    assert query_values(query) == expected


@pytest.mark.parametrize("query, expected", [
    ({"page": "2"}, "/orders?user=42&page=2"),
    ({"page": ""}, "/orders?user=42&page="),
    ({"page": "2&admin=1#x"}, "/orders?user=42&page=2%26admin%3D1%23x"),  # one parameter, never two
    ({"page": "a b/c"}, "/orders?user=42&page=a%20b%2Fc"),
    ({"page": "\udcff"}, "/orders?user=42&page=%FF"),  # a byte that was no UTF-8, as it came
])
def test_query_parameters_fill_their_place_percent_encoded(query, expected):
    assert part_path("/orders?user={id}&page={query.page}", {"id": "42"}, query) == expected


def test_a_missing_query_parameter_is_a_bad_request_naming_it():
    with pytest.raises(AmbassadorError) as e:
        part_path("/orders?user={id}&page={query.page}", {"id": "42"}, {"pages": "1"})
    assert e.value.reason == "bad_request" and "query parameter page" in e.value.message


@pytest.mark.parametrize("value", ["..", "%2e%2e", "../admin"])
def test_query_parameters_in_a_path_segment_cannot_climb_out(value):
    with pytest.raises(AmbassadorError) as e:
        part_path("/files/{query.name}/meta", {}, {"name": value})
    assert e.value.reason == "bad_request"


def response(body: bytes, content_type: str | None = None, encoding: str | None = None) -> UpstreamResponse:
    headers = CIMultiDict()
    if content_type:
        headers["Content-Type"] = content_type
    if encoding:
        headers["Content-Encoding"] = encoding
    return UpstreamResponse(200, "OK", headers, body)


def test_embedding():
    import gzip

    assert embedded(response(b'{"a": 1}', "application/json; charset=utf-8"), "u") == {"a": 1}
    assert embedded(response(b'{"a": 1}', "application/problem+json"), "u") == {"a": 1}
    assert embedded(response(b"[1]"), "u") == [1]  # no content type: JSON when it parses
    assert embedded(response(b'{"a": 1}', "text/plain"), "u") == '{"a": 1}'
    assert embedded(response(b"{broken", "application/json"), "u") == "{broken"
    assert embedded(response(b""), "u") is None
    assert embedded(response(gzip.compress(b'{"z": true}'), "application/json", "gzip"), "u") == {"z": True}
    assert embedded(response(b"caf\xe9", "text/plain"), "u") == "caf\ufffd"
