"""Which services a profile reload keeps (gateway.keeps_service), over real profile objects."""

import dataclasses

from addons.gateway import keeps_service
from addons.profile import Match, load_profile
from profiles import profile, upstream


def loaded_app(tmp_path):
    app = upstream("app", "http://127.0.0.1:9/v1", path_prefix="/app", breaker={"fail_max": 2, "reset_timeout": "1h"}, cache={"ttl": "1h"})
    return load_profile(profile(app).write(tmp_path / "p.yaml")).upstreams["app"]


def test_an_unchanged_section_is_kept(tmp_path):
    assert keeps_service(loaded_app(tmp_path), loaded_app(tmp_path))  # read twice: equal, not identical


def test_a_change_of_match_only_is_kept(tmp_path):
    old = loaded_app(tmp_path)
    assert keeps_service(old, dataclasses.replace(old, match=Match(path_prefix="/moved", host="app.internal")))


def test_any_other_change_rebuilds_it(tmp_path):
    old = loaded_app(tmp_path)
    assert not keeps_service(old, dataclasses.replace(old, timeout=5.0))
    assert not keeps_service(old, dataclasses.replace(old, breaker=dataclasses.replace(old.breaker, fail_max=3)))
    assert not keeps_service(old, dataclasses.replace(old, cache=None))
    assert not keeps_service(old, dataclasses.replace(old, match=Match(path_prefix="/moved"), timeout=5.0))
