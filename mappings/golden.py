"""Golden files of the mappings: `tests/golden/<type>.json` holds one input event per actor
variant, `<type>.ecs.json` and `<type>.ocsf.json` the documents expected from it (pretty-printed,
keys sorted), so that a mapping change shows as a reviewable diff.

    python -m mappings.golden            # exit 1 and show the diff when an output is stale
    python -m mappings.golden --update   # rewrite the outputs from the inputs

The inputs come from the event factory: `python scripts/make_sample.py`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from mappings.registry import MappingContext, load_mapper

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
SCHEMAS = ("ecs", "ocsf")
ORGANIZATION = "org-golden"  # stamped into every document, like OPENAI_ORG_ID
PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def inputs(directory: Path = GOLDEN) -> list[Path]:
    """The input files: `<type>.json`, not the `<type>.<schema>.json` beside them."""
    outputs = tuple(f".{schema}.json" for schema in SCHEMAS)
    return sorted(p for p in directory.glob("*.json") if not p.name.endswith(outputs))


def output_path(source: Path, schema: str) -> Path:
    return source.with_name(f"{source.name.removesuffix('.json')}.{schema}.json")


def render(events: list[dict[str, Any]], schema: str) -> bytes:
    """The expected file for `events`: their documents, pretty-printed with sorted keys. The
    mappers take no clock: the same events always give the same bytes."""
    mapper = load_mapper(schema, MappingContext(organization_id=ORGANIZATION))
    return orjson.dumps([mapper(event) for event in events], option=PRETTY)


def expected(directory: Path = GOLDEN) -> Iterator[tuple[Path, bytes]]:
    """(output file, the bytes it should hold) for every input and schema."""
    for source in inputs(directory):
        events = orjson.loads(source.read_bytes())
        for schema in SCHEMAS:
            yield output_path(source, schema), render(events, schema)


def stale(directory: Path = GOLDEN) -> list[tuple[Path, bytes]]:
    return [
        (p, data) for p, data in expected(directory) if not p.exists() or p.read_bytes() != data
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mappings.golden", description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the expected outputs")
    parser.add_argument("--dir", type=Path, default=GOLDEN, help="golden directory")
    args = parser.parse_args(argv)
    if not inputs(args.dir):
        print(f"no golden inputs in {args.dir}", file=sys.stderr)
        return 2
    changed = stale(args.dir)
    if args.update:
        for path, data in changed:
            path.write_bytes(data)
            print(f"wrote {path}")
        return 0
    for path, data in changed:
        old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        diff = difflib.unified_diff(
            old, data.decode().splitlines(), str(path), f"{path} (mapped now)", lineterm=""
        )
        print("\n".join(diff))
    if changed:
        print(
            f"{len(changed)} golden outputs differ from the mapping "
            "(review, then: python -m mappings.golden --update)",
            file=sys.stderr,
        )
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
