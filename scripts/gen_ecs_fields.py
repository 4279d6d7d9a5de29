"""Derives the compact ECS field table the tests check documents against from the official
flattened reference (`ecs_flat.yml` of elastic/ecs):

    python scripts/gen_ecs_fields.py ../shared/reference/ecs_flat-9.4.0.yml \
        > tests/data/ecs_fields-9.4.0.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def derive(flat: dict[str, Any], version: str) -> dict[str, Any]:
    """{version, fields: {name: {type, array?, allowed?}}, expected_event_types: {category:
    [types]}} from the flattened ECS definitions."""
    fields: dict[str, Any] = {}
    expected: dict[str, list[str]] = {}
    for name in sorted(flat):
        spec = flat[name]
        entry: dict[str, Any] = {"type": spec["type"]}
        if "array" in (spec.get("normalize") or []):
            entry["array"] = True
        allowed = spec.get("allowed_values")
        if allowed:
            entry["allowed"] = [a["name"] for a in allowed]
            if name == "event.category":
                for a in allowed:
                    expected[a["name"]] = list(a.get("expected_event_types") or [])
        fields[name] = entry
    return {"version": version, "fields": fields, "expected_event_types": expected}


def render(path: Path) -> str:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    flat = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    version = path.stem.rsplit("-", 1)[-1] if "-" in path.stem else "unknown"
    table = derive(flat, version)
    # One field per line: small, and diffs between ECS versions stay readable.
    lines = ["{", f'"version": {json.dumps(table["version"])},', '"expected_event_types": {']
    cats = table["expected_event_types"]
    lines += [
        f"{json.dumps(c)}: {json.dumps(t)}{',' if i < len(cats) - 1 else ''}"
        for i, (c, t) in enumerate(cats.items())
    ]
    lines += ["},", '"fields": {']
    fields = table["fields"]
    lines += [
        f"{json.dumps(n)}: {json.dumps(f, sort_keys=True)}{',' if i < len(fields) - 1 else ''}"
        for i, (n, f) in enumerate(fields.items())
    ]
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gen_ecs_fields.py ECS_FLAT_YML > ecs_fields.json", file=sys.stderr)
        return 2
    sys.stdout.write(render(Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
