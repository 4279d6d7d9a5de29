"""The mappers cache each actor's rendering and share it between documents: a document must be the
same bytes whether its actor was seen before or not, and must not change when later events that
share its actor (or its type's constant objects) are mapped."""

from __future__ import annotations

import importlib

import orjson
import pytest

from mappings.registry import MappingContext, load_mapper
from tests.fakes.events import iter_events

CONTEXT = MappingContext(organization_id="org-cache")


def _corpus() -> list[dict]:
    # 2 passes over every type with every actor kind; actors repeat, hostile strings included.
    return list(
        iter_events(600, start=1_735_689_600, end=1_735_689_600 + 3600, seed=2, hostile_ratio=0.2)
    )


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
def test_a_document_is_the_same_whether_its_actor_was_cached_or_not(schema: str) -> None:
    events = _corpus()
    warm = load_mapper(schema, CONTEXT)
    warmed = [orjson.dumps(warm(e)) for e in events]
    again = [orjson.dumps(warm(e)) for e in events]  # every actor now comes from the cache
    make_mapper = importlib.import_module(f"mappings.{schema}").make_mapper
    fresh = [orjson.dumps(make_mapper(CONTEXT)(e)) for e in events]  # nothing cached
    assert again == warmed
    assert fresh == warmed


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
def test_mapping_later_events_never_changes_an_earlier_document(schema: str) -> None:
    events = _corpus()
    mapper = load_mapper(schema, CONTEXT)
    docs = [mapper(e) for e in events]
    first = [orjson.dumps(d) for d in docs]
    # Same actors again, with targets that add users, roles and groups to the shared objects.
    for e in events:
        mapper(e)
    assert [orjson.dumps(d) for d in docs] == first


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
def test_mapping_never_changes_the_input_event(schema: str) -> None:
    mapper = load_mapper(schema, CONTEXT)
    for e in _corpus():
        before = orjson.dumps(e)
        mapper(e)
        assert orjson.dumps(e) == before
