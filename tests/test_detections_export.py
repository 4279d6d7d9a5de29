"""`detections list` and `detections export`: the conversions committed under packaging/ are
what the backends make of the rules now (regenerate: `openai-audit-forwarder detections export
--all`), each SIEM gets its own field names, and what a backend cannot express is named."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forwarder.detection_exports import COMMITTED, export_all
from forwarder.detections import convert, describe
from mappings.sigma import FIELDS

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forwarder", "detections", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_committed_conversions_are_what_the_backends_make_now(tmp_path: Path) -> None:
    export_all(tmp_path)
    stale = [
        relative
        for relative in COMMITTED.values()
        if (tmp_path / relative).read_bytes() != (ROOT / relative).read_bytes()
    ]
    assert not stale, (
        f"stale conversions {stale}: run `openai-audit-forwarder detections export --all` "
        "from the repository and commit the result"
    )


def test_export_all_is_one_command_that_rewrites_every_committed_file(tmp_path: Path) -> None:
    run = _cli("export", "--all", "--root", str(tmp_path))
    assert run.returncode == 0, run.stderr
    for relative in COMMITTED.values():
        assert (tmp_path / relative).read_bytes() == (ROOT / relative).read_bytes(), relative


def test_list_prints_id_level_title_and_event_types_of_every_alerting_rule() -> None:
    run = _cli("list")
    assert run.returncode == 0, run.stderr
    alerting = [i for i in describe() if i.alerting]
    assert len(alerting) >= 15
    for info in alerting:
        assert f"{info.id}  {info.level}" in run.stdout
        assert info.title in run.stdout
        assert ", ".join(info.event_types) in run.stdout
    counted_only = [i for i in describe() if not i.alerting]
    assert counted_only and all(i.title not in run.stdout for i in counted_only)
    everything = _cli("list", "--all", "--json")
    rows = [json.loads(line) for line in everything.stdout.splitlines()]
    assert {r["id"] for r in rows} == {i.id for i in describe()}


def test_export_to_stdout_is_the_committed_splunk_file() -> None:
    run = _cli("export", "--target", "splunk", "--schema", "ecs")
    assert run.returncode == 0, run.stderr
    assert run.stdout == (ROOT / COMMITTED[("splunk", "ecs")]).read_text()


def test_export_without_target_is_a_usage_error() -> None:
    run = _cli("export")
    assert run.returncode == 2
    assert "--target" in run.stderr


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
def test_each_siem_gets_its_own_field_names(schema: str) -> None:
    splunk = (ROOT / COMMITTED[("splunk", schema)]).read_text()
    sentinel = json.loads((ROOT / COMMITTED[("kusto", schema)]).read_text())
    esql = [
        json.loads(line) for line in (ROOT / COMMITTED[("esql", schema)]).read_text().splitlines()
    ]
    eql = [
        json.loads(line) for line in (ROOT / COMMITTED[("eql", schema)]).read_text().splitlines()
    ]
    action = "event.action" if schema == "ecs" else "metadata.event_code"
    # Splunk: JSON arrays are `name{}` fields; the documents' sourcetype and index.
    roles = "user.target.roles{}" if schema == "ecs" else "privileges{}"
    assert f'"{roles}"="owner"' in splunk
    assert f'sourcetype="openai:audit:{schema}"' in splunk
    # Sentinel: bare column names of the table, never a quoted dotted string.
    queries = [r["properties"]["query"] for r in sentinel["resources"]]
    assert queries and all(q.startswith("OpenAIAudit") for q in queries)
    assert all("EventType =~" in q or "EventType in~" in q for q in queries)
    assert not any("'" in q.split("| where", 1)[1] for q in queries)
    # Elastic: ES|QL over the index, EQL with a sliding window for the bursts.
    assert all(r["query"].startswith("from ") and action in r["query"] for r in esql)
    bursts = [r for r in eql if r["query"].startswith("sequence by ")]
    assert bursts and all("with maxspan=" in r["query"] and "runs=" in r["query"] for r in bursts)


def test_what_a_backend_cannot_express_is_named_with_the_reason() -> None:
    splunk = (ROOT / COMMITTED[("splunk", "ecs")]).read_text()
    assert "not converted: OpenAI Sign-In Succeeded After A Failed Sign-In Burst" in splunk
    sentinel = json.loads((ROOT / COMMITTED[("kusto", "ecs")]).read_text())
    assert any("event_count correlation" in n for n in sentinel["metadata"]["notConverted"])


def test_the_sigma_export_is_a_pipeline_sigma_cli_can_load(tmp_path: Path) -> None:
    from sigma.backends.sqlite import sqliteBackend
    from sigma.processing.pipeline import ProcessingPipeline

    from forwarder.detections import load_rules

    run = _cli("export", "--target", "sigma", "--schema", "ocsf", "-o", str(tmp_path))
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "pipeline-ocsf.yml").read_text()
    assert text == (ROOT / COMMITTED[("sigma", "ocsf")]).read_text()
    pipeline = ProcessingPipeline.from_yaml(text)
    # Rules before the correlations that count them: pySigma 1.5's own sort of a loaded
    # ruleset is not a topological one (see docs/detections.md).
    rules = load_rules(sorted((tmp_path / "rules").glob("*.yml")))
    queries = sqliteBackend(pipeline).convert(rules)
    [query] = [q for q in queries if "tenant.admin\\_api\\_key.created" in q]
    assert query.startswith("SELECT * FROM logs WHERE `metadata.event_code` LIKE")
    assert yaml.safe_load(text)["transformations"][0]["type"] == "field_name_mapping"


def test_the_docs_name_every_rule_every_field_and_what_each_target_converts() -> None:
    text = (ROOT / "docs" / "detections.md").read_text()
    words = " ".join(text.split())
    for info in describe():
        assert info.title in words, info.title
    for f in FIELDS:
        row = " | ".join(
            [
                f"| `{f.name}`",
                ", ".join(f"`{p}`" for p in f.ecs),
                ", ".join(f"`{p}`" for p in f.ocsf),
            ]
        )
        assert f"{row} | `{f.column}` |" in text, f.name
    total = sum(i.alerting for i in describe())
    for target in ("splunk", "eql", "kusto"):
        counts = {len(convert(target, s).queries) for s in ("ecs", "ocsf")}
        assert len(counts) == 1
        assert f"| `{target}` | {counts.pop()} of {total} |" in text, target
    esql = [len(convert("esql", s).queries) for s in ("ecs", "ocsf")]
    assert f"| `esql` | ECS {esql[0]}, OCSF {esql[1]} |" in text


def test_the_commands_in_the_docs_run_as_written(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "detections.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    commands = [c for c in block.splitlines() if c.startswith("openai-audit-forwarder ")]
    assert len(commands) == 2
    script = Path(sys.executable).parent / "openai-audit-forwarder"
    for command in commands:
        args = shlex.split(command)[1:]
        run = subprocess.run(
            [str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, (command, run.stderr)
    written = (tmp_path / "savedsearches.conf").read_text()
    assert written == (ROOT / COMMITTED[("splunk", "ecs")]).read_text()


def test_without_the_detections_extra_the_command_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['sigma'] = None  # as if pySigma were not installed\n"
        "sys.argv = ['openai-audit-forwarder', 'detections', 'list']\n"
        "from forwarder.cli import main; main()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert "pip install 'openai-audit-forwarder[detections]'" in run.stderr
    assert "Traceback" not in run.stderr
