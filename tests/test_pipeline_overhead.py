"""What the pipeline's speed-ups must not change: `run --once --input` writes byte for byte what
`map` writes, ids delivered under the first state layout stay remembered after the migration,
and a JSONL input is read line by line even when its first event has a `data` field."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from forwarder.sources.jsonl import JsonlSource
from forwarder.state import Commit, State, Window
from tests.conftest import read_ndjson, recent_events, run_cli, write_jsonl
from tests.fakes.events import make_event

FIRST_LAYOUT = """
CREATE TABLE delivered (
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    effective_at INTEGER NOT NULL,
    PRIMARY KEY (scope, id)
) WITHOUT ROWID;
CREATE INDEX delivered_by_time ON delivered (scope, effective_at);
"""


def test_run_once_input_writes_the_same_bytes_as_map(tmp_path: Path) -> None:
    events = recent_events(2500, hours=2, seed=61)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    mapped = run_cli("map", "--schema", "ecs", str(source), "-o", "mapped.ndjson", cwd=tmp_path)
    assert mapped.code == 0, mapped.stderr
    state = ["--state", str(tmp_path / "s.db")]
    sink = ["--sink", f"file:{tmp_path / 'run.ndjson'}", "--schema", "ecs"]
    first = run_cli("run", "--once", "--input", str(source), *sink, *state, cwd=tmp_path)
    assert first.code == 0, first.stderr
    again = run_cli("run", "--once", "--input", str(source), *sink, *state, cwd=tmp_path)
    assert again.code == 0, again.stderr
    written = (tmp_path / "run.ndjson").read_bytes()
    assert written == (tmp_path / "mapped.ndjson").read_bytes()
    assert len(written.splitlines()) == len(events)


def test_ids_delivered_under_the_first_state_layout_are_still_remembered(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_LAYOUT)
        db.executemany(
            "INSERT INTO delivered(scope, id, effective_at) VALUES (?,?,?)",
            [("live:default", f"audit_log-{i}", 1_000 + i) for i in range(50)]
            + [("backfill:job", "audit_log-b", 5_000)],
        )
    db.close()
    state = State(path)
    try:
        assert state.delivered_ids("live:default", 1_040) == {
            f"audit_log-{i}" for i in range(40, 50)
        }
        assert state.delivered_ids("backfill:job", 0, 6_000) == {"audit_log-b"}
        # Committing the same id again changes nothing; a new one is added.
        state.commit(
            Commit(
                scope="live:default",
                delivered=[("audit_log-49", 1_049), ("audit_log-new", 1_100)],
                sink_positions={},
                prune_before=1_045,
            )
        )
        assert state.count_delivered("live:default") == 6
        state.commit(
            Commit(
                scope="backfill:job",
                delivered=[],
                sink_positions={},
                window_done=("job", Window(4_000, 6_000), 1),
            )
        )
        assert state.count_delivered("backfill:job") == 0
        indexes = state.db.execute("SELECT name FROM sqlite_master WHERE type='index'").fetchall()
        assert ("delivered_by_time",) not in indexes
    finally:
        state.close()
    again = State(path)  # migrated once: opening again keeps everything
    try:
        assert again.delivered_ids("live:default", 0) == {
            *(f"audit_log-{i}" for i in range(45, 50)),
            "audit_log-new",
        }
    finally:
        again.close()


def test_jsonl_whose_first_event_has_a_data_field_is_read_line_by_line(tmp_path: Path) -> None:
    events = [make_event("api_key.created", 1_720_804_090 + i, seq=i) for i in range(3)]
    assert all("data" in orjson.dumps(e).decode()[:4096] for e in events)
    source = JsonlSource(str(write_jsonl(tmp_path / "in.jsonl", events)))
    assert source.count == 3
    assert [e["id"] for page in source.pages(0, None) for e in page] == [e["id"] for e in events]


def test_a_saved_list_response_is_read_as_one_document(tmp_path: Path) -> None:
    events = [make_event("api_key.created", 1_720_804_090 + i, seq=i) for i in range(3)]
    response = {"object": "list", "data": events, "has_more": False}
    for name, option in (("one-line.json", 0), ("pretty.json", orjson.OPT_INDENT_2)):
        path = tmp_path / name
        path.write_bytes(orjson.dumps(response, option=option))
        source = JsonlSource(str(path))
        assert source.count == 3
        got = [e["id"] for page in source.pages(0, None) for e in page]
        assert got == [e["id"] for e in events]
    out = tmp_path / "out.ndjson"
    done = run_cli(
        "run",
        "--once",
        "--input",
        str(tmp_path / "pretty.json"),
        "--sink",
        f"file:{out}",
        "--schema",
        "raw",
        "--state",
        str(tmp_path / "s.db"),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    assert [doc["id"] for doc in read_ndjson(out)] == [e["id"] for e in events]
