"""Third-party mappers plug in through the entry-point group `openai_audit_forwarder.mappings`:
a tiny one, installed only as a `.dist-info` directory on PYTHONPATH, is used by
`map --schema NAME` exactly like the built-in schemas."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from mappings.registry import ENTRY_POINT_GROUP
from tests.fakes.events import make_event

ROOT = Path(__file__).resolve().parent.parent

MODULE = '''
"""A tiny third-party mapper: the id, the type and the organization, nothing else."""

def make_mapper(context):
    org = context.organization_id

    def tiny(event):
        return {"tiny_id": event["id"], "tiny_type": event["type"], "org": org}

    return tiny
'''


def _install(site: Path) -> None:
    (site / "tiny_mapper.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    info = site / "tiny_mapper-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tiny-mapper\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ntiny = tiny_mapper:make_mapper\n", encoding="utf-8"
    )


def _run(args: list[str], pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env["OPENAI_ORG_ID"] = "org-plugin"
    return subprocess.run(
        [sys.executable, "-m", "forwarder", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def events_file(tmp_path: Path) -> tuple[Path, list[dict]]:
    events = [
        make_event(t, 1_720_804_090 + i, seq=i, actor="session")
        for i, t in enumerate(["login.succeeded", "api_key.created", "widget.created"])
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path, events


def test_registered_third_party_mapper_is_used_by_map_schema_name(tmp_path, events_file) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install(site)
    source, events = events_file
    out = tmp_path / "out.ndjson"
    result = _run(["map", "--schema", "tiny", str(source), "-o", str(out)], [site, ROOT], tmp_path)
    assert result.returncode == 0, result.stderr
    docs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert docs == [
        {"tiny_id": e["id"], "tiny_type": e["type"], "org": "org-plugin"} for e in events
    ]


def test_unregistered_schema_name_is_a_clear_error(tmp_path, events_file) -> None:
    source, _ = events_file
    result = _run(["map", "--schema", "tiny", str(source), "-o", "-"], [ROOT], tmp_path)
    assert result.returncode != 0
    assert "tiny" in result.stderr
    assert "Traceback" not in result.stderr
