"""A whole profile: upstreams, aggregates and routes read and checked together, then the file
itself (YAML with duplicate keys refused) and the profile names under profiles/."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import yaml

from .model import (
    ADMIN_PREFIX, AGGREGATE_ERRORS_KEY, Aggregate, AggregatePart, PART_PLACEHOLDER_RE,
    NeedsNetwork, PLACEHOLDER_RE, Profile, ProfileError, QUERY_PLACEHOLDER, SECTIONS, Upstream,
)
from .reading import Reader, join
from .sections import read_list, read_upstream
from .values import InvalidValue, describe, origin, plain_host_name, redis_url


def read_aggregates(r: Reader, node: Any, upstream_names: set[str]) -> dict[str, Aggregate]:
    if node is None:  # `aggregates:` with every entry commented out
        return {}
    if not isinstance(node, dict):
        r.problem("aggregates", f"must be a mapping of GET paths to parts, got {describe(node)}")
        return {}
    aggregates = {}
    routes: dict[str, str] = {}
    for template, parts in node.items():
        path = join("aggregates", template)
        template = str(template)
        if not template.startswith("/") or any(c in template for c in "?#") or any(c.isspace() for c in template):
            r.problem(path, "must be a path starting with '/' (no query, no spaces)")
            continue
        if template == ADMIN_PREFIX or template.startswith(ADMIN_PREFIX + "/"):
            r.problem(path, f"{ADMIN_PREFIX}/ is reserved for the ambassador")
            continue
        if any(not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}|[^{}]*", seg) for seg in template.split("/")):
            r.problem(path, "a {capture} must be a whole path segment, named with letters, digits and '_'")
            continue
        captures = PLACEHOLDER_RE.findall(template)
        if len(set(captures)) != len(captures):
            r.problem(path, "a capture name is used twice")
            continue
        route = PLACEHOLDER_RE.sub("{}", template)
        if route in routes:
            r.problem(path, f"matches the same requests as {routes[route]}")
            continue
        routes[route] = template
        if not isinstance(parts, dict) or not parts:
            r.problem(path, f"must map part names to 'upstream:/path', got {describe(parts)}")
            continue
        read_parts = {}
        for part_name, spec in parts.items():
            part_path = join(path, part_name)
            if part_name == AGGREGATE_ERRORS_KEY:
                r.problem(part_path, f"{AGGREGATE_ERRORS_KEY} is reserved: the answer reports failed parts there")
                continue
            try:
                spec = r.substitute(spec)
            except InvalidValue as e:
                r.problem(part_path, str(e))
                continue
            if not isinstance(spec, str) or ":" not in spec:
                r.problem(part_path, f"must be 'upstream:/path', got {describe(spec)}")
                continue
            upstream, _, part = spec.partition(":")
            if upstream not in upstream_names:
                r.problem(part_path, f"names unknown upstream {upstream!r}")
                continue
            if not part.startswith("/") or any(c.isspace() for c in part):
                r.problem(part_path, f"the path after '{upstream}:' must start with '/' and have no spaces, got {part!r}")
                continue
            if any(c in PART_PLACEHOLDER_RE.sub("", part) for c in "{}"):
                r.problem(part_path, "'{' and '}' may only enclose a {capture} of the aggregate's path or a {query.name} of the client's query")
                continue
            unknown = {n for n in PART_PLACEHOLDER_RE.findall(part) if not n.startswith(QUERY_PLACEHOLDER)} - set(captures)
            if unknown:
                r.problem(part_path, f"uses {{{', '.join(sorted(unknown))}}} which the path does not capture")
                continue
            read_parts[str(part_name)] = AggregatePart(upstream, part)
        aggregates[template] = Aggregate(template, MappingProxyType(read_parts))
    return aggregates


def check_routes(r: Reader, upstreams: Mapping[str, Upstream]) -> None:
    for key in ("path_prefix", "host"):
        seen: dict[str, str] = {}
        for upstream in upstreams.values():
            value = getattr(upstream.match, key)
            if value is None:
                continue
            if value in seen:
                r.problem(f"upstreams.{upstream.name}.match.{key}", f"{value!r} is already used by upstream {seen[value]!r}")
            seen[value] = upstream.name


def parse_profile(document: Any, path: Path, fetch: bool = True) -> Profile:
    """Validate a parsed YAML document; raises ProfileError listing every problem. With
    `fetch` false, a valid profile naming a document by URL raises NeedsNetwork instead of
    fetching it."""
    r = Reader(path.parent, fetch)
    if document is None:
        raise ProfileError(str(path), [("upstreams", "is required (the profile is empty)")])
    top = r.section(document, "", SECTIONS["profile"])
    if top is None:
        raise ProfileError(str(path), r.problems)
    state = r.value(top, "", "state", functools.partial(redis_url, folder=r.folder))
    allowed_origins = read_list(r, top, "allowed_origins", origin)
    allowed_hosts = read_list(r, top, "allowed_hosts", plain_host_name)
    upstreams: dict[str, Upstream] = {}
    raw_upstreams = top.get("upstreams")
    if "upstreams" in top:
        if not isinstance(raw_upstreams, dict) or not raw_upstreams:
            r.problem("upstreams", f"must map one or more upstream names to their settings, got {describe(raw_upstreams)}")
            raw_upstreams = {}
        for name, node in raw_upstreams.items():
            upstream = read_upstream(r, name, node, join("upstreams", name), "state" in top)
            if upstream:
                upstreams[str(name)] = upstream
    check_routes(r, upstreams)
    # Parts may name an upstream that has problems of its own: those are reported there.
    aggregates = read_aggregates(r, top["aggregates"], {str(n) for n in raw_upstreams or ()}) if "aggregates" in top else {}
    if r.problems:
        raise ProfileError(str(path), r.problems)
    if r.to_fetch:
        raise NeedsNetwork(str(path), r.to_fetch)
    return Profile(
        path=path,
        upstreams=MappingProxyType(upstreams),
        aggregates=MappingProxyType(aggregates),
        state=state,
        allowed_origins=allowed_origins,
        allowed_hosts=allowed_hosts,
        files_read=frozenset(r.files_read),
    )


def duplicate_keys(node: yaml.Node, path: str, visited: set[int]) -> Iterator[tuple[str, str]]:
    """Keys given twice in one mapping (PyYAML would silently keep the last one)."""
    if id(node) in visited:  # aliases can make the node graph cyclic
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                yield from duplicate_keys(value_node, path, visited)
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key) in first_line:
                    yield join(path, key), f"duplicate key (line {line}; first at line {first_line[key_node.tag, key]})"
                else:
                    first_line[key_node.tag, key] = line
            yield from duplicate_keys(value_node, join(path, key), visited)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from duplicate_keys(item, path, visited)


def read_yaml(source: str, file: str) -> Any:
    """One YAML document, refusing duplicate keys; raises ProfileError."""
    loader = yaml.SafeLoader(source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = list(duplicate_keys(node, "", set()))
        if duplicates:
            raise ProfileError(file, duplicates)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ProfileError(file, [("", f"not valid YAML: {where}{problem}")]) from None
    finally:
        loader.dispose()


def load_profile(path: str | os.PathLike, fetch: bool = True) -> Profile:
    """Read and validate a profile file; raises ProfileError (and NeedsNetwork, see
    parse_profile)."""
    file = Path(path).resolve()
    try:
        source = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ProfileError(str(file), [("", f"cannot read the profile: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        raise ProfileError(str(file), [("", f"cannot read the profile: not UTF-8 text ({e.reason} at byte {e.start})")]) from None
    return parse_profile(read_yaml(source, str(file)), file, fetch)


def resolve_profile_name(name: str, profiles_dir: Path) -> Path:
    """`prod` -> profiles/prod.yaml; anything that looks like a path stays a path."""
    if name and "/" not in name and not name.endswith((".yaml", ".yml")):
        return profiles_dir / f"{name}.yaml"
    return Path(name)
