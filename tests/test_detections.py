"""Every Sigma rule in detections/ runs: its true-positive event sequences, mapped to ECS and to
OCSF by our mappers and loaded into SQLite, make the query pySigma-backend-sqlite converts it to
return something (correlations with their windows), and its true negatives return nothing."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from forwarder.detections import convert, describe, load_rules, rule_files
from mappings.registry import MappingContext, load_mapper
from mappings.sigma import SCHEMAS
from tests.detection_cases import CASES
from tests.sigma_sqlite import backend_options, load, matches

STEMS = [p.stem for p in rule_files()]


@cache
def _queries(schema: str) -> dict[str, str]:
    """Rule file name → the SQL of the rule: alerting rules converted together (as a SIEM
    gets them), rules that only correlations count each on its own."""
    queries = {}
    conversion = convert("sqlite", schema, **backend_options(schema))
    for rule, query in conversion.queries:
        queries[Path(rule.source.path).stem] = query
    for path in rule_files():
        if path.stem not in queries:
            alone = convert("sqlite", schema, paths=[path], **backend_options(schema))
            [(_, query)] = alone.queries
            queries[path.stem] = query
    return queries


def _fires(stem: str, schema: str, events: list[dict]) -> list[dict]:
    mapper = load_mapper(schema, MappingContext("org-detections"))
    db = load([mapper(e) for e in events], schema)
    try:
        return matches(db, _queries(schema)[stem])
    finally:
        db.close()


def test_every_rule_has_a_positive_and_a_negative_case() -> None:
    assert sorted(CASES) == sorted(STEMS)
    for stem, cases in CASES.items():
        assert cases["positive"], f"{stem}: no positive case"
        assert cases["negative"], f"{stem}: no negative case"


def test_every_rule_converts_in_both_schemas() -> None:
    for schema in SCHEMAS:
        assert sorted(_queries(schema)) == sorted(STEMS)


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("stem", STEMS)
def test_rule_fires_on_its_positives_and_stays_silent_on_its_negatives(
    stem: str, schema: str
) -> None:
    cases = CASES[stem]
    for i, events in enumerate(cases["positive"]):
        assert _fires(stem, schema, events), f"{stem} ({schema}): positive {i} did not fire"
    for i, events in enumerate(cases["negative"]):
        hits = _fires(stem, schema, events)
        assert not hits, f"{stem} ({schema}): negative {i} fired: {hits[:2]}"


def test_a_correlation_counts_each_event_once_although_its_lists_make_several_rows() -> None:
    # An ECS login.failed has event.category [authentication, session]: loaded one row per
    # category, four events are eight rows, and the burst of five must still not fire.
    from tests.detection_cases import failed
    from tests.sigma_sqlite import rule_columns

    mapper = load_mapper("ecs", MappingContext("org-detections"))
    query = _queries("ecs")["correlation_openai_failed_login_burst"]
    exploded = rule_columns("ecs") | {"event.category"}
    events = [failed(i * 60) for i in range(4)]
    db = load([mapper(e) for e in events], "ecs", exploded)
    assert db.execute("SELECT COUNT(*) FROM logs").fetchone() == (8,)
    assert not matches(db, query)
    db = load([mapper(e) for e in [*events, failed(300)]], "ecs", exploded)
    assert matches(db, query)


def test_rules_describe_their_level_event_types_and_fields() -> None:
    infos = {i.title: i for i in describe(load_rules())}
    alerting = [i for i in infos.values() if i.alerting]
    assert len(alerting) >= 15
    for info in infos.values():
        assert info.level and info.event_types and "type" in info.fields, info
        assert any(t.startswith("attack.t") for t in info.tags), info
