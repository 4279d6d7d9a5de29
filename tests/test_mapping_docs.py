"""Generated artefacts never drift: docs/event-types.md is what `python -m mappings.doc` prints,
and the committed ECS field table is what scripts/gen_ecs_fields.py derives from the official
ECS reference (checked when ../shared/reference is present)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mappings.catalog import CATALOG
from tests.peers import require_file

ROOT = Path(__file__).resolve().parent.parent
ECS_FLAT = ROOT.parent / "shared" / "reference" / "ecs_flat-9.4.0.yml"


def test_committed_event_type_table_equals_the_generator_output() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mappings.doc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "docs" / "event-types.md").read_text(encoding="utf-8")
    assert committed == out, "run: python -m mappings.doc > docs/event-types.md"


def test_event_type_table_lists_every_catalog_type() -> None:
    text = (ROOT / "docs" / "event-types.md").read_text(encoding="utf-8")
    missing = [t for t in CATALOG if f"| `{t}` |" not in text]
    assert not missing


def test_committed_ecs_field_table_equals_what_the_official_reference_gives() -> None:
    require_file(ECS_FLAT, "the official ECS reference, shipped in ../shared/reference")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_ecs_fields
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    committed = (ROOT / "tests" / "data" / "ecs_fields-9.4.0.json").read_text(encoding="utf-8")
    assert gen_ecs_fields.render(ECS_FLAT) == committed, (
        "run: python scripts/gen_ecs_fields.py ../shared/reference/ecs_flat-9.4.0.yml"
        " > tests/data/ecs_fields-9.4.0.json"
    )
