"""Golden files: one input event per documented type and actor variant in tests/golden, the
ECS and OCSF documents expected from them beside it. A mapping change fails here until the
outputs are rewritten (`python -m mappings.golden --update`) and the diff is reviewed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from mappings.golden import GOLDEN, SCHEMAS, inputs, output_path, stale
from tests.fakes.events import ACTOR_KINDS, DOCUMENTED_TYPES, UNKNOWN_TYPES
from tests.test_mapping_schemas import ecs_problems, ocsf_problems

ROOT = Path(__file__).resolve().parent.parent


def _actor_kind(event: dict) -> str:
    if "actor" not in event:
        return "absent"
    actor = event["actor"]
    if actor is None:
        return "null"
    if actor["type"] == "session":
        return "session"
    return "api_key_" + actor["api_key"]["type"]


def test_golden_inputs_cover_every_documented_type_in_every_actor_variant() -> None:
    files = {p.name.removesuffix(".json"): p for p in inputs()}
    assert set(DOCUMENTED_TYPES + UNKNOWN_TYPES) <= set(files)
    for event_type, path in files.items():
        events = orjson.loads(path.read_bytes())
        assert {e["type"] for e in events} == {event_type}, path
        assert [_actor_kind(e) for e in events] == list(ACTOR_KINDS), path
        assert all(e["object"] == "organization.audit_log" for e in events), path
        for schema in SCHEMAS:
            assert output_path(path, schema).exists(), f"{path}: no {schema} output"


def test_golden_outputs_are_what_the_mappers_give_now() -> None:
    changed = [str(p.relative_to(ROOT)) for p, _ in stale()]
    assert not changed, (
        f"{len(changed)} golden outputs differ, first {changed[:5]}: review with "
        "`python -m mappings.golden`, then `python -m mappings.golden --update`"
    )


def test_every_golden_output_passes_the_ecs_and_ocsf_validation() -> None:
    failures = []
    for source in inputs():
        for schema, check in (("ecs", ecs_problems), ("ocsf", ocsf_problems)):
            for index, doc in enumerate(orjson.loads(output_path(source, schema).read_bytes())):
                problems = check(doc)
                if problems:
                    failures.append((source.name, schema, index, problems[:3]))
    assert not failures, failures[:10]


def test_golden_outputs_are_pretty_printed_with_sorted_keys() -> None:
    path = output_path(GOLDEN / "role.assignment.created.json", "ecs")
    text = path.read_bytes()
    docs = orjson.loads(text)
    assert text == orjson.dumps(docs, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    assert list(docs[0]) == sorted(docs[0])


def test_a_changed_mapping_shows_as_a_diff_until_update_rewrites_the_output(tmp_path: Path) -> None:
    source = GOLDEN / "login.failed.json"
    for path in (source, *(output_path(source, s) for s in SCHEMAS)):
        shutil.copy(path, tmp_path / path.name)
    ecs = output_path(tmp_path / source.name, "ecs")
    good = ecs.read_bytes()
    ecs.write_bytes(good.replace(b'"authentication"', b'"iam"'))  # what a reviewer would see

    def golden(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mappings.golden", "--dir", str(tmp_path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    check = golden()
    assert check.returncode == 1
    diff = [line.replace(" ", "") for line in check.stdout.splitlines()]
    assert '-"iam",' in diff and '+"authentication",' in diff
    assert "1 golden outputs differ" in check.stderr
    assert golden("--update").returncode == 0
    assert ecs.read_bytes() == good
    assert golden().returncode == 0
