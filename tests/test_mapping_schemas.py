"""Every documented event type, plus unknown ones, in every actor variant, maps to ECS documents
that pass the field check derived from the official ECS 9.4.0 reference, and to OCSF events that
validate against the OCSF 1.8.0 JSON schema; no source value is lost on the way."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from mappings.registry import MappingContext, load_mapper
from tests.fakes.events import ACTOR_KINDS, DOCUMENTED_TYPES, UNKNOWN_TYPES, make_event

DATA = Path(__file__).parent / "data"
ECS_FIELDS = DATA / "ecs_fields-9.4.0.json"
ORG = "org-test1234"
T0 = 1_720_804_090

# --- ECS field check (generated from ecs_flat-9.4.0.yml by scripts/gen_ecs_fields.py) ---------


@cache
def ecs_table() -> dict[str, Any]:
    return json.loads(ECS_FIELDS.read_text(encoding="utf-8"))


_STRINGS = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}
_INTEGERS = {"long": 63, "integer": 31, "short": 15, "byte": 7}
_FLOATS = {"float", "double", "scaled_float", "half_float"}
_OPAQUE = {"object", "flattened", "nested", "geo_point"}  # values checked as a whole


def _ecs_value_problem(name: str, ftype: str, value: Any) -> str | None:
    if ftype in _STRINGS:
        ok = isinstance(value, str)
    elif ftype in _INTEGERS:
        bits = _INTEGERS[ftype]
        ok = type(value) is int and -(2**bits) <= value < 2**bits
    elif ftype in _FLOATS:
        ok = type(value) in (int, float) and math.isfinite(value)
    elif ftype == "boolean":
        ok = type(value) is bool
    elif ftype == "date":
        try:
            ok = isinstance(value, str) and dt.datetime.fromisoformat(value).tzinfo is not None
        except ValueError:
            ok = False
    elif ftype == "ip":
        try:
            ok = isinstance(value, str) and bool(ipaddress.ip_address(value))
        except ValueError:
            ok = False
    elif ftype == "geo_point":
        ok = (
            isinstance(value, dict)
            and set(value) == {"lat", "lon"}
            and all(type(value[k]) is float for k in ("lat", "lon"))
            and -90 <= value["lat"] <= 90
            and -180 <= value["lon"] <= 180
        )
    elif ftype in ("object", "flattened"):
        ok = isinstance(value, dict)
    elif ftype == "nested":
        ok = isinstance(value, list) and all(isinstance(v, dict) for v in value)
    else:
        return f"{name}: no check for ECS type {ftype}"
    return None if ok else f"{name}: {value!r} is not a valid {ftype}"


def _ecs_leaves(doc: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    fields = ecs_table()["fields"]
    for key, value in doc.items():
        name = prefix + key
        if name == "openai":
            continue  # the custom namespace: anything goes
        spec = fields.get(name)
        if isinstance(value, dict) and (spec is None or spec["type"] not in _OPAQUE):
            yield from _ecs_leaves(value, name + ".")
        else:
            yield name, value


def ecs_problems(doc: Any) -> list[str]:
    """What makes `doc` not a valid ECS 9.4 document (empty when it is valid)."""
    table = ecs_table()
    fields = table["fields"]
    problems: list[str] = []
    if not isinstance(doc, dict):
        return ["document is not an object"]
    seen: dict[str, Any] = {}
    for name, value in _ecs_leaves(doc):
        spec = fields.get(name)
        if spec is None:
            problems.append(f"{name}: not an ECS field and not under openai.*")
            continue
        seen[name] = value
        values = value if isinstance(value, list | tuple) else [value]
        if spec.get("array") and not isinstance(value, list | tuple):
            problems.append(f"{name}: ECS expects an array")
        for v in values:
            problem = _ecs_value_problem(name, spec["type"], v)
            if problem:
                problems.append(problem)
            elif "allowed" in spec and v not in spec["allowed"]:
                problems.append(f"{name}: {v!r} is not an allowed value")
    for required in ("@timestamp", "ecs.version"):
        if required not in seen:
            problems.append(f"{required}: missing")
    categories = seen.get("event.category") or []
    types = seen.get("event.type") or []
    for category in categories:
        expected = table["expected_event_types"].get(category, [])
        for t in types:
            if t not in expected:
                problems.append(f"event.type {t!r} is not expected for category {category!r}")
    return problems


# --- OCSF validation (ocsf-json-schema package, OCSF 1.8.0) ------------------------------------


@cache
def ocsf_validators() -> dict[int, Any]:
    from jsonschema import Draft202012Validator
    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema("1.8.0"))
    validators = {}
    for cls in schema.schema.schema["classes"].values():
        if cls["uid"] in (3001, 3002, 3003, 3004, 3005, 3006, 6003):
            validators[cls["uid"]] = Draft202012Validator(schema.get_class_schema(cls["name"]))
    return validators


def ocsf_problems(doc: Any) -> list[str]:
    """What makes `doc` not a valid OCSF 1.8.0 event (empty when it is valid)."""
    if not isinstance(doc, dict):
        return ["event is not an object"]
    validator = ocsf_validators().get(doc.get("class_uid"))  # type: ignore[arg-type]
    if validator is None:
        return [f"class_uid {doc.get('class_uid')!r} is not one this mapper may emit"]
    wire = orjson.loads(orjson.dumps(doc))  # validate what a receiver gets (tuples → arrays)
    problems = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(wire)]
    if doc.get("type_uid") != doc["class_uid"] * 100 + doc.get("activity_id", -1):
        problems.append("type_uid is not class_uid * 100 + activity_id")
    if doc.get("metadata", {}).get("version") != "1.8.0":
        problems.append("metadata.version is not 1.8.0")
    return problems


# --- the events ---------------------------------------------------------------------------------

ALL_TYPES = DOCUMENTED_TYPES + UNKNOWN_TYPES


def corpus() -> Iterator[tuple[str, str, bool, dict[str, Any]]]:
    for i, event_type in enumerate(ALL_TYPES):
        for j, actor in enumerate(ACTOR_KINDS):
            for hostile in (False, True):
                seq = i * 10 + j * 2 + hostile
                yield (
                    event_type,
                    actor,
                    hostile,
                    make_event(event_type, T0 + seq, seq=seq, actor=actor, hostile=hostile),
                )


@pytest.fixture(scope="module")
def events() -> list[tuple[str, str, bool, dict[str, Any]]]:
    return list(corpus())


@pytest.fixture(scope="module")
def ecs():
    return load_mapper("ecs", MappingContext(organization_id=ORG))


@pytest.fixture(scope="module")
def ocsf():
    return load_mapper("ocsf", MappingContext(organization_id=ORG))


def test_corpus_covers_every_documented_type_unknown_types_and_actor_variant(events) -> None:
    enum = json.loads((DATA / "openai-audit-log.openapi.json").read_text())["components"][
        "schemas"
    ]["AuditLogEventType"]["enum"]
    assert {e[0] for e in events} >= set(enum)
    assert len(UNKNOWN_TYPES) >= 3
    assert {e[1] for e in events} >= {"session", "api_key_user", "api_key_service_account", "null"}
    geo = [
        e for e in events if e[1] == "session" and "ip_address_details" in e[3]["actor"]["session"]
    ]
    assert geo


def test_every_event_maps_to_an_ecs_document_passing_the_ecs_9_4_field_check(events, ecs) -> None:
    failures = []
    for event_type, actor, hostile, event in events:
        doc = ecs(event)
        orjson.dumps(doc)
        problems = ecs_problems(doc)
        if problems:
            failures.append((event_type, actor, hostile, problems[:3]))
    assert not failures, failures[:10]


def test_every_event_maps_to_an_ocsf_1_8_event_valid_against_the_schema(events, ocsf) -> None:
    failures = []
    for event_type, actor, hostile, event in events:
        problems = ocsf_problems(ocsf(event))
        if problems:
            failures.append((event_type, actor, hostile, problems[:3]))
    assert not failures, failures[:10]


def test_documents_carry_the_audit_id_time_and_organization(events, ecs, ocsf) -> None:
    for _, _, _, event in events[:40]:
        e, o = ecs(event), ocsf(event)
        assert e["event"]["id"] == o["metadata"]["original_event_uid"] == event["id"]
        assert e["organization"]["id"] == o["metadata"]["tenant_uid"] == ORG
        assert o["time"] == event["effective_at"] * 1000
        when = dt.datetime.fromisoformat(e["@timestamp"])
        assert when.timestamp() == event["effective_at"]
        assert e["event"]["action"] == o["metadata"]["event_code"] == event["type"]


def test_without_an_organization_id_nothing_is_stamped() -> None:
    event = make_event("project.created", T0, seq=1, actor="null")
    assert "organization" not in load_mapper("ecs")(event)
    assert "tenant_uid" not in load_mapper("ocsf")(event)["metadata"]


# --- no source value is lost ----------------------------------------------------------------------


def _leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    elif value is not None and value != {} and value != []:
        yield path, value


def _at(doc: Any, path: tuple) -> Any:
    for key in path:
        if isinstance(doc, dict) and isinstance(key, str):
            doc = doc.get(key)
        elif isinstance(doc, list | tuple) and isinstance(key, int) and key < len(doc):
            doc = doc[key]
        else:
            return None
    return doc


def _fingerprint(algorithm: str):
    def get(doc: dict[str, Any]) -> Any:
        for fp in _at(doc, ("src_endpoint", "fingerprints")) or []:
            if fp["algorithm"] == algorithm:
                return fp["value"]
        return None

    return get


_S = ("actor", "session")
_D = (*_S, "ip_address_details")
_K = ("actor", "api_key")
_same = str
# source path -> (where ECS puts it, where OCSF puts it, how the value is written there)
_ACTOR_PLACES: dict[tuple, tuple[Any, Any, Any]] = {
    (*_S, "user", "id"): (("user", "id"), ("actor", "user", "uid"), _same),
    (*_S, "user", "email"): (("user", "email"), ("actor", "user", "email_addr"), _same),
    (*_S, "ip_address"): (("source", "ip"), ("src_endpoint", "ip"), _same),
    (*_S, "user_agent"): (("user_agent", "original"), ("http_request", "user_agent"), _same),
    (*_S, "ja3"): (("tls", "client", "ja3"), _fingerprint("JA3"), _same),
    (*_S, "ja4"): (None, _fingerprint("JA4"), _same),
    (*_D, "country"): (
        ("source", "geo", "country_iso_code"),
        ("src_endpoint", "location", "country"),
        _same,
    ),
    (*_D, "city"): (("source", "geo", "city_name"), ("src_endpoint", "location", "city"), _same),
    (*_D, "region"): (("source", "geo", "region_name"), None, _same),
    (*_D, "region_code"): (
        ("source", "geo", "region_iso_code"),
        ("src_endpoint", "location", "region"),
        lambda v: v.split("-", 1)[1],
    ),
    (*_D, "asn"): (
        ("source", "as", "number"),
        ("src_endpoint", "autonomous_system", "number"),
        lambda v: str(v),
    ),
    (*_D, "latitude"): (
        ("source", "geo", "location", "lat"),
        ("src_endpoint", "location", "lat"),
        float,
    ),
    (*_D, "longitude"): (
        ("source", "geo", "location", "lon"),
        ("src_endpoint", "location", "long"),
        float,
    ),
    (*_K, "user", "id"): (("user", "id"), ("actor", "user", "uid"), _same),
    (*_K, "user", "email"): (("user", "email"), ("actor", "user", "email_addr"), _same),
    (*_K, "service_account", "id"): (("user", "id"), ("actor", "user", "uid"), _same),
    (*_K, "id"): (
        None,
        ("actor", "user", "programmatic_credentials", 0, "uid"),
        _same,
    ),
    (*_K, "type"): (
        None,
        ("actor", "user", "type_id"),
        lambda v: {1: "user", 4: "service_account"}[v],
    ),
}


def _normalised(source_value: Any, written: Any, how: Any) -> bool:
    if written is None:
        return False
    try:
        back = how(written)
    except (KeyError, ValueError, IndexError, AttributeError):
        return False
    if how is float:
        return math.isclose(back, float(source_value))
    return back == source_value


def lost_values(event: dict[str, Any], doc: dict[str, Any], schema: str) -> list[tuple]:
    """Source leaves found neither at their mapped place nor verbatim under the schema's
    namespace for unmapped data (`openai.audit.*` / `unmapped.*`)."""
    keep = ("openai", "audit") if schema == "ecs" else ("unmapped",)
    top = {
        "id": (("event", "id"), ("metadata", "original_event_uid"), _same),
        "type": (("event", "action"), ("metadata", "event_code"), _same),
        "object": (("openai", "audit", "object"), ("metadata", "log_name"), _same),
        "effective_at": (
            ("@timestamp",),
            ("time",),
            (lambda v: int(dt.datetime.fromisoformat(v).timestamp()))
            if schema == "ecs"
            else (lambda v: v // 1000),
        ),
    }
    lost = []
    for path, value in _leaves(event):
        place = top.get(path[0]) if len(path) == 1 else _ACTOR_PLACES.get(path)
        if place is not None:
            where = place[0] if schema == "ecs" else place[1]
            if where is not None:
                written = where(doc) if callable(where) else _at(doc, where)
                if _normalised(value, written, place[2]):
                    continue
        if path[0] == event["type"]:
            mirrored = (*keep, "payload", *path[1:])
        elif path[0] in ("actor", "project"):
            mirrored = (*keep, *path)
        else:
            mirrored = (*keep, "extra", *path)
        if _at(doc, mirrored) != value:
            lost.append((path, value))
    return lost


def _with_surprises(event: dict[str, Any]) -> dict[str, Any]:
    """The event plus fields the API may add one day, at the top and inside the actor."""
    event = json.loads(json.dumps(event))
    event["request_id"] = "req_123"
    event["labels"] = {"env": ["prod", 3]}
    actor = event.get("actor")
    if isinstance(actor, dict):
        actor["mfa"] = True
        inner = actor.get("session") or actor.get("api_key")
        inner["device"] = {"id": "dev-1", "trusted": False}
        user = inner.get("user")
        if isinstance(user, dict):
            user["name"] = "Ada"
        details = inner.get("ip_address_details")
        if isinstance(details, dict):
            details["postal_code"] = "94107"
            details["latitude"] = "not a number"
        if "ip_address" in inner:
            inner["ip_address"] = "999.1.1.1"
    return event


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
def test_every_source_value_appears_in_the_output(events, schema) -> None:
    mapper = load_mapper(schema, MappingContext(organization_id=ORG))
    failures = []
    for event_type, actor, hostile, event in events:
        for variant in (event, _with_surprises(event)):
            doc = mapper(variant)
            lost = lost_values(variant, doc, schema)
            if lost:
                failures.append((event_type, actor, hostile, lost[:3]))
    assert not failures, failures[:10]


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
def test_unexpected_fields_and_bad_values_still_give_valid_documents(events, schema) -> None:
    mapper = load_mapper(schema, MappingContext(organization_id=ORG))
    check = ecs_problems if schema == "ecs" else ocsf_problems
    failures = []
    for event_type, actor, _, event in events[::3]:
        problems = check(mapper(_with_surprises(event)))
        if problems:
            failures.append((event_type, actor, problems[:3]))
    assert not failures, failures[:10]


def test_lost_value_check_notices_a_dropped_field(ecs) -> None:
    event = make_event("api_key.created", T0, seq=5, actor="session")
    doc = ecs(event)
    del doc["openai"]["audit"]["actor"]["session"]["ja4"]
    del doc["source"]["as"]
    assert {p[-1] for p, _ in lost_values(event, doc, "ecs")} == {"ja4", "asn"}


def test_the_shipped_sample_maps_to_valid_ecs_and_ocsf(ecs, ocsf) -> None:
    sample = Path(__file__).resolve().parent.parent / "samples" / "audit-log.jsonl"
    failures = []
    for number, line in enumerate(sample.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        event = orjson.loads(line)
        problems = ecs_problems(ecs(event)) + ocsf_problems(ocsf(event))
        problems += [f"lost {p}" for p in lost_values(event, ecs(event), "ecs")]
        problems += [f"lost {p}" for p in lost_values(event, ocsf(event), "ocsf")]
        if problems:
            failures.append((number, event.get("type"), problems[:3]))
    assert not failures, failures[:10]
