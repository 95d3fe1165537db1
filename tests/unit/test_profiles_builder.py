"""The tests' profile builder (tests/profiles.py): the YAML it writes, and that the real
profile loader reads it as meant."""

from __future__ import annotations

import textwrap

import pytest

from addons.profile import BearerAuth, Match, load_profile
from harness import Ambassador
from profiles import profile, upstream


def test_writes_the_yaml_a_person_would():
    built = profile(
        upstream("partner", "http://127.0.0.1:8000/v2", path_prefix="/partner", timeout="3s", retry={"attempts": 3}),
        upstream("maps", "http://127.0.0.1:8001", host="maps.internal"),
        state="redis://127.0.0.1:6379/0",
    )
    assert built.yaml() == textwrap.dedent("""\
        upstreams:
          partner:
            url: http://127.0.0.1:8000/v2
            match:
              path_prefix: /partner
            timeout: 3s
            retry:
              attempts: 3
          maps:
            url: http://127.0.0.1:8001
            match:
              host: maps.internal
        state: redis://127.0.0.1:6379/0
        """)


def test_the_loader_reads_what_was_meant(tmp_path):
    built = profile(
        upstream(
            "partner",
            "http://127.0.0.1:8000/v2",
            path_prefix="/partner",
            host="partner.internal",
            timeout=2.5,
            auth={"type": "bearer", "token": "tok: #en"},  # characters YAML would misread unquoted
            retry={"attempts": 3, "backoff": "1ms", "statuses": [503]},
            async_={"keep": "1h"},
            fallback={"status": 200, "headers": {"Content-Type": "application/json"}, "body": '{"items": []}'},
            failover=["http://127.0.0.1:8002"],
        ),
        upstream("legacy", "http://127.0.0.1:8001", path_prefix="/legacy", soap={"namespace": "urn:x", "version": "1.2"}),
        aggregates={"/both/{id}": {"a": "partner:/a/{id}", "b": "legacy:/b?id={id}"}},
        allowed_hosts=["ambassador.internal"],
        allowed_origins=None,  # left out
    )
    assert "allowed_origins" not in built
    loaded = load_profile(built.write(tmp_path / "built.yaml"))
    partner = loaded.upstreams["partner"]
    assert str(partner.url) == "http://127.0.0.1:8000/v2"
    assert partner.match == Match(path_prefix="/partner", host="partner.internal")
    assert partner.timeout == 2.5
    assert partner.auth == BearerAuth(token="tok: #en")
    assert partner.retry.attempts == 3 and partner.retry.statuses == {503} and partner.retry.backoff == 0.001
    assert partner.async_.keep == 3600
    assert partner.fallback.body == b'{"items": []}' and partner.fallback.headers == (("Content-Type", "application/json"),)
    assert [str(u) for u in partner.failover] == ["http://127.0.0.1:8002"]
    assert loaded.upstreams["legacy"].soap.version == "1.2"
    assert set(loaded.aggregates["/both/{id}"].parts) == {"a", "b"}
    assert loaded.allowed_hosts == {"ambassador.internal"}


def test_paths_are_written_as_text(tmp_path):
    built = profile(upstream("a", "http://127.0.0.1:9", path_prefix="/a", cache={"store": "sqlite:" + str(tmp_path / "c.db")}))
    built["upstreams"]["a"]["tls"] = {"verify": False, "ca": tmp_path / "ca.pem"}
    assert f"ca: {tmp_path / 'ca.pem'}\n" in built.yaml()


def test_match_given_whole_replaces_the_shortcuts():
    built = profile(upstream("a", "http://127.0.0.1:9", match={"host": "a.internal"}))
    assert built["upstreams"]["a"] == {"url": "http://127.0.0.1:9", "match": {"host": "a.internal"}}


def test_an_upstream_named_twice_is_a_mistake():
    with pytest.raises(ValueError, match="upstream named twice: a"):
        profile(upstream("a", "http://127.0.0.1:9", path_prefix="/a"), upstream("a", "http://127.0.0.1:9", path_prefix="/b"))


def test_the_harness_writes_a_built_profile_to_a_file_of_its_own(tmp_path):
    built = profile(upstream("a", "http://127.0.0.1:9", path_prefix="/a"))
    amb = Ambassador(tmp_path, built)  # not started: only the file it would start with
    assert amb.profile_path.parent == tmp_path and amb.profile_path.read_text() == built.yaml()
    assert str(amb.profile_path) in amb.argv
