"""Whatever JSON object arrives, a mapper either returns a valid document or raises the one typed
MappingError that the collector dead-letters, never anything else."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappings.registry import MappingContext, MappingError, load_mapper
from tests.fakes.events import ACTOR_KINDS, EVENT_TYPES, make_event
from tests.test_mapping_schemas import ecs_problems, ocsf_problems

# What orjson can parse: integers within 64 bits, finite floats, any text.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "user", "group", "session", "api_key", "1.2.3.4", "::1", "US", "90"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["id", "email", "user", "type", "data", "name"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(
    st.text(max_size=12) | st.sampled_from(["id", "type", "effective_at", "actor", "project"]),
    json_values,
    max_size=6,
)


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


@st.composite
def damaged_events(draw: st.DrawFn) -> dict[str, Any]:
    """A realistic event with one to three of its values (at any depth) replaced by arbitrary
    JSON, or deleted: reaches the deep branches that random objects rarely do."""
    event = make_event(
        draw(st.sampled_from(EVENT_TYPES)),
        draw(st.integers(0, 2_000_000_000)),
        seq=draw(st.integers(0, 10_000)),
        actor=draw(st.sampled_from(ACTOR_KINDS)),
        hostile=draw(st.booleans()),
    )
    event = copy.deepcopy(event)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(event) if p]
        path = draw(st.sampled_from(paths))
        parent = event
        try:
            for key in path[:-1]:
                parent = parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        if draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(json_values)
    return event


MAPPERS = {
    "ecs": (load_mapper("ecs", MappingContext(organization_id="org-1")), ecs_problems),
    "ocsf": (load_mapper("ocsf", MappingContext(organization_id="org-1")), ocsf_problems),
}


def _check(schema: str, event: Any) -> None:
    mapper, problems = MAPPERS[schema]
    try:
        doc = mapper(event)
    except MappingError as exc:
        event_id = event.get("id") if isinstance(event, dict) else None
        if isinstance(event_id, str) and event_id:
            assert exc.event_id == event_id
        assert str(exc)
        return
    orjson.dumps(doc)
    assert problems(doc) == []


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=json_objects)
def test_arbitrary_json_objects_map_or_raise_mapping_error(schema: str, event: Any) -> None:
    _check(schema, event)


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=damaged_events())
def test_damaged_real_events_map_or_raise_mapping_error(schema: str, event: Any) -> None:
    _check(schema, event)


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
@given(value=json_values)
@settings(max_examples=50, deadline=None)
def test_non_objects_raise_mapping_error(schema: str, value: Any) -> None:
    if isinstance(value, dict):
        return
    with pytest.raises(MappingError):
        MAPPERS[schema][0](value)


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "login.failed", "effective_at": 1}, "no id"),
        ({"id": "", "type": "login.failed", "effective_at": 1}, "no id"),
        ({"id": "a", "effective_at": 1}, "no type"),
        ({"id": "a", "type": 5, "effective_at": 1}, "no type"),
        ({"id": "a", "type": "x.created"}, "no effective_at"),
        ({"id": "a", "type": "x.created", "effective_at": True}, "no effective_at"),
        ({"id": "a", "type": "x.created", "effective_at": "17"}, "no effective_at"),
        ({"id": "a", "type": "x.created", "effective_at": 10**15}, "out of range"),
        ({"id": "a", "type": "x.created", "effective_at": 1, "actor": "bob"}, "actor"),
        ({"id": "a", "type": "x.created", "effective_at": 1, "x.created": [1]}, "payload"),
        ({"id": "a", "type": "x.created", "effective_at": 1, "project": "p"}, "project"),
        (
            {"id": "a", "type": "x", "effective_at": 1, "actor": {"session": {"user": "u"}}},
            "actor.session.user",
        ),
    ],
)
def test_unusable_events_raise_mapping_error_naming_the_problem(
    schema: str, event: dict[str, Any], reason: str
) -> None:
    with pytest.raises(MappingError, match=reason.replace(".", r"\.")) as info:
        MAPPERS[schema][0](event)
    assert info.value.event_id == (event.get("id") or None)
