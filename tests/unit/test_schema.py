"""profiles/schema.json (for editors) and the loader agree on what a profile is.

Two checks: a corpus of valid and invalid profiles on which both give the same verdict, and
the keys and value patterns of the schema compared with the loader's own constants.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from addons.profile import (
    AUTH_TYPES,
    DEFAULTED_SECTIONS,
    DURATION_PATTERN,
    HTTP_METHODS,
    NAME_PATTERN,
    SECTIONS,
    SIZE_PATTERN,
    SUBSTITUTION_PATTERN,
    ProfileError,
    load_profile,
)
from profile_corpus import INVALID, LOADER_ONLY, VALID, Invalid, prepare

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "profiles" / "schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
DEFS = SCHEMA["$defs"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    prepare(tmp_path, monkeypatch)
    return tmp_path


def loader_problems(folder: Path, text: str) -> list[tuple[str, str]]:
    file = folder / "profile.yaml"
    file.write_text(text)
    try:
        load_profile(file)
    except ProfileError as e:
        return e.problems
    return []


def schema_errors(text: str) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in VALIDATOR.iter_errors(yaml.safe_load(text))]


def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# --- the corpus ------------------------------------------------------------------------


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_both_accept(case, folder):
    assert loader_problems(folder, case.text) == []
    assert schema_errors(case.text) == []


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_both_refuse(case: Invalid, folder):
    problems = loader_problems(folder, case.text)
    assert [path for path, _ in problems] == [case.path], problems
    assert schema_errors(case.text), "the schema accepts what the loader refuses"


@pytest.mark.parametrize("case", LOADER_ONLY, ids=lambda c: c.id)
def test_rules_only_the_loader_can_check(case: Invalid, folder):
    """Environment variables, files and cross-references are beyond JSON Schema (see `why_not_in_schema`):
    the schema accepts these profiles and only the loader (`./run.sh check`) refuses them."""
    assert case.why_not_in_schema
    problems = loader_problems(folder, case.text)
    assert [path for path, _ in problems] == [case.path], problems
    assert schema_errors(case.text) == []


def test_shipped_profiles_satisfy_the_schema():
    shipped = sorted((ROOT / "profiles").glob("*.yaml"))
    assert ROOT / "profiles" / "default.yaml" in shipped and len(shipped) > 1
    for file in shipped:
        assert schema_errors(file.read_text()) == [], file


# --- structure: the schema's sections and patterns are the loader's ---------------------


def schema_objects(node, where="#"):
    """Every object schema with `properties` in the schema, with its JSON pointer."""
    if isinstance(node, dict):
        if "properties" in node:
            yield where, node
        for key, value in node.items():
            yield from schema_objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schema_objects(value, f"{where}/{i}")


def test_every_section_of_the_schema_is_a_section_of_the_loader():
    assert {where for where, _ in schema_objects(SCHEMA)} == {f"#/$defs/{name}" for name in SECTIONS}


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_a_section_allows_and_requires_the_same_keys(name):
    definition = DEFS[name]
    assert set(definition["properties"]) == SECTIONS[name].allowed
    assert set(definition.get("required", ())) == SECTIONS[name].required
    assert definition["additionalProperties"] is False


def test_sections_that_may_be_left_empty_are_the_same():
    nullable = {name for name, d in DEFS.items() if name in SECTIONS and "null" in d["type"]}
    assert nullable == DEFAULTED_SECTIONS


def test_maps_of_names_constrain_their_values():
    """`upstreams` and `aggregates` are maps from names to sections: their additionalProperties
    is the schema of each entry, never `true`."""
    upstreams = DEFS["profile"]["properties"]["upstreams"]
    assert upstreams["additionalProperties"] == {"$ref": "#/$defs/upstream"}
    assert upstreams["propertyNames"]["pattern"] == f"^{NAME_PATTERN}$"
    assert DEFS["aggregates"]["additionalProperties"] == {"$ref": "#/$defs/aggregate"}
    assert DEFS["aggregate"]["additionalProperties"]["anyOf"]


def test_auth_types_are_the_loaders():
    variants = DEFS["upstream"]["properties"]["auth"]["oneOf"]
    assert [v["$ref"] for v in variants] == [f"#/$defs/auth_{kind}" for kind in AUTH_TYPES]
    for kind in AUTH_TYPES:
        assert DEFS[f"auth_{kind}"]["properties"]["type"] == {"const": kind}


def string_pattern(definition: dict) -> str:
    (pattern,) = [branch["pattern"] for branch in definition["anyOf"] if branch.get("type") == "string"]
    return pattern


def test_value_patterns_are_the_loaders():
    assert DEFS["substitution"]["pattern"] == SUBSTITUTION_PATTERN
    assert string_pattern(DEFS["duration"]) == f"^{DURATION_PATTERN}$"
    positive = "^(?=[^1-9]*[1-9])"  # the same, with a digit other than 0 somewhere
    assert string_pattern(DEFS["positive_duration"]) == f"{positive}{DURATION_PATTERN}$"
    assert string_pattern(DEFS["size"]) == f"{positive}{SIZE_PATTERN}$"
    assert set(DEFS["method_list"]["items"]["anyOf"][0]["enum"]) == HTTP_METHODS


def test_every_property_is_described_for_editors():
    for where, section in schema_objects(SCHEMA):
        for key, value in section["properties"].items():
            if key != "type":  # the auth discriminator: its const says it all
                assert value.get("description") or "$ref" in value, f"{where}/properties/{key}"
