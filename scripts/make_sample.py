"""Regenerate samples/audit-log.jsonl, samples/list-response.json and the golden inputs
tests/golden/<type>.json from the deterministic event factory (fixed seed, fixed 2026
timestamps). `--check` fails if the committed files differ. The golden outputs beside the
inputs come from `python -m mappings.golden --update`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.events import (  # noqa: E402
    ACTOR_KINDS,
    EVENT_TYPES,
    HOSTILE_STRINGS,
    UNKNOWN_TYPES,
    is_tenant_scoped,
    make_event,
)

SAMPLES = ROOT / "samples"
GOLDEN = ROOT / "tests" / "golden"
GOLDEN_SEQ = 900_000  # first seq of the golden inputs
START = 1772323200  # 2026-03-01T00:00:00Z
SEED_SEQ = 260301  # first seq: ids are stable as long as this is


def build_events() -> list[dict[str, Any]]:
    """Chronological: every type once (actors cycling), every actor kind on a few common
    types, the unknown future types with each actor, a same-second burst, hostile strings."""
    events: list[dict[str, Any]] = []
    seq = SEED_SEQ
    t = START + 8 * 3600

    def add(event_type: str, actor: str, *, hostile: bool = False, step: int = 37) -> None:
        nonlocal seq, t
        events.append(make_event(event_type, t, seq=seq, actor=actor, hostile=hostile))
        seq += 1
        t += step

    for i, event_type in enumerate(EVENT_TYPES):
        add(event_type, ACTOR_KINDS[i % len(ACTOR_KINDS)])
    for event_type in ("api_key.created", "login.succeeded", "project.updated", *UNKNOWN_TYPES):
        for kind in ACTOR_KINDS:
            add(event_type, kind)
    # A burst in one second, as when a script deletes many keys at once.
    for i in range(12):
        add("api_key.deleted", ACTOR_KINDS[i % 3], step=0)
    t += 5
    hostile_types = [
        "login.failed", "project.created", "user.updated", "ip_allowlist.created",
        "group.created", "invite.sent", "role.created", "tenant.policy.created",
    ]  # fmt: skip
    for i in range(len(HOSTILE_STRINGS)):
        # seq picks the hostile string (seq % len), so each string appears once.
        while seq % len(HOSTILE_STRINGS) != i:
            seq += 1
        add(hostile_types[i % len(hostile_types)], ACTOR_KINDS[i % 3], hostile=True)
    return events


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def list_response(events: list[dict[str, Any]]) -> bytes:
    """The first page of the default listing (newest first, no tenant-scoped events)."""
    ordered = sorted(
        (
            (e["effective_at"], i, e)
            for i, e in enumerate(events)
            if not is_tenant_scoped(e["type"])
        ),
        key=lambda row: (row[0], row[1]),
        reverse=True,
    )
    # Leave out the 10 KB hostile value so the saved response stays readable.
    data = [e for _, _, e in ordered if len(orjson.dumps(e)) < 4096][:20]
    body = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"],
        "last_id": data[-1]["id"],
        "has_more": False,
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"


def golden_inputs() -> dict[Path, bytes]:
    """One file per event type (documented and future): the type with every actor variant."""
    files = {}
    for i, event_type in enumerate(EVENT_TYPES):
        events = [
            make_event(event_type, START + i * 60 + j, seq=GOLDEN_SEQ + i * 10 + j, actor=kind)
            for j, kind in enumerate(ACTOR_KINDS)
        ]
        files[GOLDEN / f"{event_type}.json"] = orjson.dumps(
            events, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        )
    return files


def outputs() -> dict[Path, bytes]:
    events = build_events()
    return {
        SAMPLES / "audit-log.jsonl": jsonl(events),
        SAMPLES / "list-response.json": list_response(events),
        **golden_inputs(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the samples are stale")
    args = parser.parse_args(argv)
    stale = [p for p, data in outputs().items() if not p.exists() or p.read_bytes() != data]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run python scripts/make_sample.py)")
        return 1 if stale else 0
    for p, data in outputs().items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        print(f"wrote {p.relative_to(ROOT)} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
