"""OCSF versions: every golden event, rendered in each supported version, validates against
that version's official schema (ocsf-json-schema) and loses nothing: what the version lacks is
in `unmapped` under its dotted path, and putting it back gives the 1.8.0 document."""

from __future__ import annotations

import copy
import itertools
import re
from functools import cache
from typing import Any

import orjson
import pytest

from mappings.golden import ORGANIZATION, inputs
from mappings.ocsf_versions import NATIVE_VERSION, SUPPORTED_VERSIONS, check_version
from mappings.registry import MappingContext, MappingError, load_mapper
from tests.test_mapping_schemas import lost_values


@cache
def golden_events() -> list[dict[str, Any]]:
    return [event for path in inputs() for event in orjson.loads(path.read_bytes())]


@cache
def class_validator(version: str, class_uid: int, profiles: tuple[str, ...]) -> Any:
    from jsonschema import Draft202012Validator
    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version))
    name = schema.lookup_class_name_from_uid(class_uid)
    return Draft202012Validator(schema.get_class_schema(name, list(profiles)))


def ocsf_version_problems(doc: dict[str, Any], version: str) -> list[str]:
    """What makes `doc` not a valid event of its class in OCSF `version`, with the profiles
    it declares (empty when valid)."""
    metadata = doc.get("metadata", {})
    validator = class_validator(version, doc["class_uid"], tuple(metadata.get("profiles", ())))
    wire = orjson.loads(orjson.dumps(doc))
    problems = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(wire)]
    if metadata.get("version") != version:
        problems.append(f"metadata.version is {metadata.get('version')!r}")
    if doc.get("type_uid") != doc["class_uid"] * 100 + doc.get("activity_id", -1):
        problems.append("type_uid is not class_uid * 100 + activity_id")
    return problems


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _put(doc: Any, path: str, value: Any) -> None:
    steps = [int(index) if index else key for key, index in _STEP.findall(path)]
    for step, after in itertools.pairwise(steps):
        if isinstance(step, int):
            doc = doc[step]
        else:
            doc = doc.setdefault(step, [] if isinstance(after, int) else {})
    doc[steps[-1]] = value


# What mappings/ocsf/ itself puts in `unmapped`: the source's fields without an OCSF place.
_SOURCE_LEFTOVERS = ("actor", "project", "payload", "extra")


def restored(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with every attribute the conversion moved to `unmapped` put back at its path
    (and the derived type fields of a moved activity id re-derived)."""
    doc = copy.deepcopy(doc)
    unmapped = doc.get("unmapped", {})
    for key in [k for k in unmapped if k not in _SOURCE_LEFTOVERS]:
        _put(doc, key, unmapped.pop(key))
    if not unmapped:
        doc.pop("unmapped", None)
    doc["type_uid"] = doc["class_uid"] * 100 + doc["activity_id"]
    return doc


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """Without what a version legitimately changes: its name, profiles, type caption and the
    caption-only enum ids replaced by Other."""
    doc = copy.deepcopy(doc)
    doc["metadata"].pop("version")
    doc["metadata"].pop("profiles", None)
    doc.pop("type_name")
    return doc


@pytest.fixture(scope="module")
def native() -> Any:
    return load_mapper("ocsf", MappingContext(organization_id=ORGANIZATION))


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_golden_event_validates_against_each_supported_version(version: str) -> None:
    mapper = load_mapper("ocsf", MappingContext(organization_id=ORGANIZATION, ocsf_version=version))
    failures = []
    for event in golden_events():
        problems = ocsf_version_problems(mapper(event), version)
        if problems:
            failures.append((event["type"], problems[:3]))
    assert not failures, f"{len(failures)} invalid, first: {failures[:5]}"


@pytest.mark.parametrize("version", [v for v in SUPPORTED_VERSIONS if v != NATIVE_VERSION])
def test_what_a_version_lacks_is_in_unmapped_and_nothing_is_lost(version: str, native) -> None:
    mapper = load_mapper("ocsf", MappingContext(organization_id=ORGANIZATION, ocsf_version=version))
    failures = []
    moved = 0
    for event in golden_events():
        doc, full = mapper(event), native(event)
        moved += sum("." in key for key in doc.get("unmapped", {}))
        back = restored(doc)
        if doc["class_uid"] == full["class_uid"]:
            # Enum ids the version lacks are Other (99) or Unknown (0) with the caption kept.
            if _comparable(back) != _comparable(full):
                failures.append((event["type"], "differs from the 1.8.0 document once restored"))
        elif lost_values(event, back, "ocsf"):  # rendered in the fallback class
            failures.append((event["type"], lost_values(event, back, "ocsf")[:3]))
    assert not failures, failures[:5]
    assert moved, "no attribute moved: the version should lack some of 1.8.0's"


def test_ocsf_1_3_moves_the_1_8_attributes_and_applies_profiles(native) -> None:
    event = next(
        e
        for e in golden_events()
        if e["type"] == "api_key.created" and e.get("actor", {}) and "session" in e["actor"]
    )
    doc = load_mapper("ocsf", MappingContext(ocsf_version="1.3.0"))(event)
    assert doc["metadata"]["version"] == "1.3.0"
    assert doc["unmapped"]["metadata.original_event_uid"] == event["id"]
    assert "original_event_uid" not in doc["metadata"]
    assert "src_endpoint.fingerprints" in doc["unmapped"]
    assert doc["class_uid"] == 3004 and "actor" in doc
    assert "host" in doc["metadata"]["profiles"]  # actor of Entity Management, up to 1.4


def test_an_enum_id_the_version_lacks_becomes_other_and_keeps_its_caption() -> None:
    event = next(
        e
        for e in golden_events()
        if (e.get("actor") or {}).get("api_key", {}).get("type") == "service_account"
    )
    doc = load_mapper("ocsf", MappingContext(ocsf_version="1.3.0"))(event)
    user = doc["actor"]["user"]
    assert (user["type_id"], user["type"]) == (99, "Service")
    assert doc["unmapped"]["actor.user.type_id"] == 4


def test_group_creation_falls_back_to_entity_management_where_the_class_needs_a_user() -> None:
    event = next(e for e in golden_events() if e["type"] == "group.created")
    assert load_mapper("ocsf")(event)["class_uid"] == 3006
    old = load_mapper("ocsf", MappingContext(ocsf_version="1.3.0"))(event)
    assert old["class_uid"] == 3004
    assert old["entity"]["type"] == "group"
    assert ocsf_version_problems(old, "1.3.0") == []


def test_native_version_is_byte_identical_to_the_default_mapper(native) -> None:
    explicit = load_mapper(
        "ocsf", MappingContext(organization_id=ORGANIZATION, ocsf_version="1.8.0")
    )
    for event in golden_events()[:50]:
        assert orjson.dumps(explicit(event)) == orjson.dumps(native(event))


@pytest.mark.parametrize("version", ["1.0.0", "1.9.0", "latest", ""])
def test_an_unsupported_version_is_refused_naming_the_choices(version: str) -> None:
    with pytest.raises(ValueError, match=r"1\.1\.0, 1\.2\.0"):
        check_version(version)


def test_a_class_the_version_does_not_have_is_a_mapping_error() -> None:
    from mappings.ocsf_versions import Downconverter

    with pytest.raises(MappingError, match="no class 9999"):
        Downconverter("1.3.0")({"class_uid": 9999, "metadata": {}})
