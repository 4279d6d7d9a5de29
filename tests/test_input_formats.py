"""`--input` takes data exported from other tools: effective_at as a float, a numeric string
or an ISO 8601 string becomes integer seconds (the checkpoint and de-duplication work on
those) while the documents keep the fraction; `original=true` on a sink and `--original` add
the source event as a JSON string."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson

from tests.conftest import read_ndjson, recent_events, run_cli, write_jsonl


def _iso(seconds: int, micros: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def test_input_normalizes_effective_at_keeps_the_fraction_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    events = recent_events(12, seed=8)
    exported = []
    for index, event in enumerate(events):
        at = event["effective_at"]
        forms = (at + 0.5, f"{at}", f"{at}.250", _iso(at, 125_000))
        exported.append({**event, "effective_at": forms[index % 4]})
    source = write_jsonl(tmp_path / "export.jsonl", exported)
    ecs, ocsf = tmp_path / "ecs.ndjson", tmp_path / "ocsf.ndjson"
    args = [
        "run",
        "--once",
        "--input",
        str(source),
        "--state",
        str(tmp_path / "s.db"),
        "--sink",
        f"file:{ecs}?original=true",
        "--sink",
        f"file:{ocsf}?schema=ocsf",
    ]
    first = run_cli(*args, cwd=tmp_path)
    assert first.code == 0, first.stderr
    fractions = ("500", "", "250", "125")
    docs = {d["event"]["id"]: d for d in read_ndjson(ecs)}
    assert len(docs) == len(events)
    for index, event in enumerate(events):
        doc = docs[event["id"]]
        stamp = datetime.fromtimestamp(event["effective_at"], UTC).strftime("%Y-%m-%dT%H:%M:%S")
        fraction = fractions[index % 4]
        assert doc["@timestamp"] == stamp + (f".{fraction}Z" if fraction else "Z")
        assert "extra" not in doc["openai"]["audit"]
        # original=true on this sink: the event as read, with its effective_at normalized.
        assert orjson.loads(doc["event"]["original"]) == event
    times = {d["metadata"]["original_event_uid"]: d["time"] for d in read_ndjson(ocsf)}
    for index, event in enumerate(events):
        millis = fractions[index % 4]
        assert times[event["id"]] == event["effective_at"] * 1000 + int(millis or 0)
    assert all("raw_data" not in d for d in read_ndjson(ocsf))  # only where asked for
    again = run_cli(*args, cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert len(read_ndjson(ecs)) == len(events)  # the checkpoint works on integer seconds


def test_input_refuses_an_effective_at_that_is_no_time(tmp_path: Path) -> None:
    events = recent_events(3, seed=9)
    events[1]["effective_at"] = "last tuesday"
    source = write_jsonl(tmp_path / "bad.jsonl", events)
    out = tmp_path / "out.ndjson"
    result = run_cli(
        "run",
        "--once",
        "--input",
        str(source),
        "--state",
        str(tmp_path / "s.db"),
        "--sink",
        f"file:{out}",
        cwd=tmp_path,
    )
    assert result.code == 1, result.stderr
    assert "line 2" in result.stderr and "effective_at" in result.stderr
    assert read_ndjson(out) == []


def test_original_flag_and_a_bad_original_parameter(tmp_path: Path) -> None:
    events = recent_events(2, seed=10)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    mapped = run_cli("map", "--schema", "ocsf", "--original", str(source), cwd=tmp_path)
    assert mapped.code == 0, mapped.stderr
    docs = [orjson.loads(line) for line in mapped.stdout.splitlines()]
    assert [orjson.loads(d["raw_data"]) for d in docs] == events
    everywhere = tmp_path / "all.ndjson"
    run = run_cli(
        "run",
        "--once",
        "--original",
        "--input",
        str(source),
        "--state",
        str(tmp_path / "all.db"),
        "--sink",
        f"file:{everywhere}?schema=ocsf",
        cwd=tmp_path,
    )
    assert run.code == 0, run.stderr
    assert [orjson.loads(d["raw_data"]) for d in read_ndjson(everywhere)] == events
    bad = run_cli(
        "run",
        "--once",
        "--input",
        str(source),
        "--state",
        str(tmp_path / "s.db"),
        "--sink",
        f"file:{tmp_path / 'o.ndjson'}?original=maybe",
        cwd=tmp_path,
    )
    assert bad.code == 2, bad.stderr
    assert "original='maybe' is not true or false" in bad.stderr
