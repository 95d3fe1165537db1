"""Profiles for the tests as plain Python data, written as YAML by `yaml.safe_dump`: no
indentation to get right, no URL or value to quote by hand.

    profile(
        upstream("partner", up.url, path_prefix="/partner", timeout="3s", retry={"attempts": 3}),
        upstream("maps", maps.url, host="maps.internal", auth={"type": "query", "name": "k", "value": "v"}),
        state=redis.url, allowed_hosts=["ambassador.internal"],
    )

`Ambassador(tmp_path, profile(...))` writes it to a file of its own; `.write(path)` puts it where
relative paths (certificates, `${file:...}`) should resolve. Tests about the YAML text itself
(parser errors, key paths, broken files) keep writing text.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """safe_dump, with paths written as their text (a test's `tmp_path / "ca.pem"`)."""


_Dumper.add_multi_representer(PurePath, lambda dumper, path: dumper.represent_str(str(path)))


class Profile(dict):
    """A profile document: `upstreams` and the top-level keys, as dicts and lists."""

    def yaml(self) -> str:
        return yaml.dump(dict(self), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.yaml(), encoding="utf-8")
        return path


def upstream(name: str, url: Any, *, path_prefix: str | None = None, host: str | None = None, **sections: Any) -> dict:
    """`{name: {url, match, sections...}}`. `path_prefix`/`host` make `match`; a section given as
    `match=` replaces it. A keyword that is a Python keyword takes a trailing `_` (`async_=`)."""
    config: dict[str, Any] = {"url": str(url)}
    match = {key: value for key, value in (("path_prefix", path_prefix), ("host", host)) if value is not None}
    if match:
        config["match"] = match
    config.update({key.removesuffix("_"): value for key, value in sections.items()})
    return {name: config}


def profile(*upstreams: dict, **top: Any) -> Profile:
    """The upstreams (from `upstream()`) and top-level keys (`state`, `aggregates`,
    `allowed_origins`, `allowed_hosts`); a top-level key given as None is left out."""
    merged: dict[str, Any] = {}
    for one in upstreams:
        if twice := merged.keys() & one.keys():
            raise ValueError(f"upstream named twice: {', '.join(sorted(twice))}")
        merged.update(one)
    return Profile(upstreams=merged, **{key: value for key, value in top.items() if value is not None})
