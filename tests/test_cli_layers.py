"""The CLI's layering: `--help`, `map` and `checkpoint` start without the HTTP client, the sinks,
the sources or the metrics (the root group imports a command only when it runs or is listed);
only the CLI package imports click, and only the `state` package speaks SQL."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env

HEAVY_PACKAGES = ("httpx", "httpcore", "boto3", "botocore", "prometheus_client", "msgpack")
HEAVY_MODULES = ("forwarder.sinks", "forwarder.sources", "forwarder.runtime", "forwarder.metrics")

# Runs the CLI in process, then reports on stderr which heavy modules it had imported.
PROBE = f"""
import gc, json, sys
from forwarder.cli import cli
try:
    cli(sys.argv[1:], prog_name="openai-audit-forwarder")
except SystemExit as exc:
    code = exc.code
heavy = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {HEAVY_PACKAGES!r} or name.startswith({HEAVY_MODULES!r})
)
gc_policy = {{"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count() > 0}}
sys.stderr.write("PROBE " + json.dumps({{"code": code, "heavy": heavy, "gc": gc_policy}}) + "\\n")
"""


def probe(tmp_path: Path, *args: str) -> tuple[int, list[str], dict]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env=cli_env(XDG_STATE_HOME=str(tmp_path / "xdg")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("PROBE ")]
    assert line, done.stderr
    result = json.loads(line[-1].removeprefix("PROBE "))
    return result["code"], result["heavy"], result["gc"]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["map", "--help"],
        ["run", "--help"],
        ["backfill", "--help"],
        ["map", "--schema", "ocsf", "{sample}", "-o", "{tmp}/out.ndjson"],
        ["checkpoint", "show", "--state", "{tmp}/nothing.db"],
        ["checkpoint", "set", "2026-01-01", "--state", "{tmp}/state.db"],
        ["checkpoint", "show", "--json", "--state", "{tmp}/state.db"],
        ["checkpoint", "reset", "--state", "{tmp}/state.db"],
        ["deadletter", "list", "--state", "{tmp}/state.db"],
    ],
    ids=lambda args: " ".join(a for a in args if "{" not in a),
)
def test_help_map_and_checkpoint_load_no_http_client_sink_or_source(
    tmp_path: Path, args: list[str]
) -> None:
    sample = str(REPO / "samples" / "audit-log.jsonl")
    args = [a.format(sample=sample, tmp=tmp_path) for a in args]
    code, heavy, _ = probe(tmp_path, *args)
    # `checkpoint show` of no state is exit 1, and `reset` of a stream it lacks exit 2, by design
    assert code in (0, None, 1, 2), code
    assert heavy == []


def test_the_probe_sees_what_a_run_loads(tmp_path: Path) -> None:
    sample = str(REPO / "samples" / "audit-log.jsonl")
    code, heavy, _ = probe(
        tmp_path, "run", "--once", "-q", "--input", sample, "--sink", f"file:{tmp_path}/o"
    )
    assert code in (0, None)
    assert "httpx" in heavy and "forwarder.sinks" in heavy and "forwarder.runtime" in heavy


@pytest.mark.parametrize("command", ["run", "backfill", "map"])
def test_every_command_applies_the_one_gc_policy(tmp_path: Path, command: str) -> None:
    """forwarder/process.py: start-up objects frozen, the first generation at 10,000 (it once
    sat in a function that returned early, and never ran)."""
    from forwarder.process import FIRST_GENERATION

    sample = str(REPO / "samples" / "audit-log.jsonl")
    out = ["--input", sample, "--sink", f"file:{tmp_path}/o"]
    args = {
        "run": ["run", "--once", "-q", *out],
        "backfill": ["backfill", "-q", "--since", "2026-01-01", "--until", "2026-12-01", *out],
        "map": ["map", sample, "-o", f"{tmp_path}/o"],
    }[command]
    code, _, gc_policy = probe(tmp_path, *args)
    assert code in (0, None)
    assert gc_policy == {"threshold": FIRST_GENERATION, "frozen": True}


def _python_files(*roots: str) -> list[Path]:
    return [path for root in roots for path in sorted((REPO / root).rglob("*.py"))]


def test_only_the_cli_package_imports_click() -> None:
    offenders = []
    for path in _python_files("forwarder", "mappings"):
        if path.is_relative_to(REPO / "forwarder" / "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name.split(".")[0] == "click" for name in names):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


SQL = re.compile(r"\b(SELECT .+ FROM|INSERT (OR \w+ )?INTO|DELETE FROM|UPDATE \w+ SET)\b")


def test_only_the_state_package_speaks_sql() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in _python_files("forwarder", "mappings")
        if path.parent != REPO / "forwarder" / "state"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SQL.search(line)
    ]
    assert offenders == []
