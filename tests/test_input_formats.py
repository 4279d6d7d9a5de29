"""`--input` takes data exported from other tools: effective_at as a float, a numeric string
or an ISO 8601 string becomes integer seconds (the checkpoint and de-duplication work on
those) while the documents keep the fraction; `original=true` on a sink and `--original` add
the source event as a JSON string. It reads what `map` reads (pages one per line, pretty-printed
or concatenated, arrays, a mix), checked whole before anything is delivered."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.conftest import read_ndjson, recent_events, run_cli, write_jsonl


def _iso(seconds: int, micros: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def _run_once(tmp_path: Path, source: str, *sinks: str, state: str = "s.db") -> list[str]:
    """`run --once` of `source` (a path or `-`) into `sinks`, with a state in tmp_path."""
    args = ["run", "--once", "--input", source, "--state", str(tmp_path / state)]
    for sink in sinks:
        args += ["--sink", sink]
    return args


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
    args = _run_once(tmp_path, str(source), f"file:{ecs}?original=true", f"file:{ocsf}?schema=ocsf")
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
    result = run_cli(*_run_once(tmp_path, str(source), f"file:{out}"), cwd=tmp_path)
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
        *_run_once(tmp_path, str(source), f"file:{everywhere}?schema=ocsf", state="all.db"),
        "--original",
        cwd=tmp_path,
    )
    assert run.code == 0, run.stderr
    assert [orjson.loads(d["raw_data"]) for d in read_ndjson(everywhere)] == events
    bad = run_cli(
        *_run_once(tmp_path, str(source), f"file:{tmp_path / 'o.ndjson'}?original=maybe"),
        cwd=tmp_path,
    )
    assert bad.code == 2, bad.stderr
    assert "original='maybe' is not true or false" in bad.stderr


# --- `--input` reads what `map` reads: pages, arrays, a mix; checked whole first ------------------


def _page(events: list[dict], *, pretty: bool = False) -> bytes:
    page = {
        "object": "list",
        "data": events,
        "first_id": events[0]["id"],
        "last_id": events[-1]["id"],
        "has_more": True,
    }
    return orjson.dumps(page, option=orjson.OPT_INDENT_2 if pretty else 0)


def _pages_one_per_line(events: list[dict]) -> bytes:
    return b"".join(_page(events[i : i + 10]) + b"\n" for i in range(0, len(events), 10))


def _pretty_pages_concatenated(events: list[dict]) -> bytes:
    return b"".join(_page(events[i : i + 10], pretty=True) for i in range(0, len(events), 10))


def _an_array_of_events(events: list[dict]) -> bytes:
    return orjson.dumps(events, option=orjson.OPT_INDENT_2)


def _a_mix(events: list[dict]) -> bytes:
    return (
        b"".join(orjson.dumps(e) + b"\n" for e in events[:5])  # plain JSONL
        + _page(events[5:12])  # a page on one line, the next one glued to it
        + _page(events[12:15], pretty=True)
        + b"\n"
        + orjson.dumps(events[15:20])  # an array of events
        + b"\n"
        + orjson.dumps([orjson.loads(_page(events[20:25])), events[25]])  # a page in an array
        + b"\n\n"
        + orjson.dumps(events[26], option=orjson.OPT_INDENT_2)  # one pretty event
        + b"\n"
        + b"".join(orjson.dumps(e) + b"\n" for e in events[27:])
    )


def _sweep(tmp_path: Path, source: str, out: Path) -> list[str]:
    return [*_run_once(tmp_path, source, f"file:{out}"), "--schema", "raw"]


@pytest.mark.parametrize(
    "shape", [_pages_one_per_line, _pretty_pages_concatenated, _an_array_of_events, _a_mix]
)
def test_input_delivers_every_event_of_pages_arrays_or_a_mix_once_and_a_rerun_adds_nothing(
    shape: Callable[[list[dict]], bytes], tmp_path: Path
) -> None:
    events = recent_events(40, hours=1, seed=41)
    source = tmp_path / "saved.json"
    source.write_bytes(shape(events))
    out = tmp_path / "out.ndjson"

    first = run_cli(*_sweep(tmp_path, str(source), out), cwd=tmp_path)

    assert first.code == 0, first.stderr
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)
    sort = orjson.OPT_SORT_KEYS
    delivered = Counter(orjson.dumps(doc, option=sort) for doc in read_ndjson(out))
    assert delivered == Counter(orjson.dumps(e, option=sort) for e in events)  # each whole, once
    again = run_cli(*_sweep(tmp_path, str(source), out), cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert len(read_ndjson(out)) == len(events)  # the file's checkpoint: nothing again


def test_input_from_stdin_takes_pages_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    events = recent_events(30, hours=1, seed=42)
    data = _pages_one_per_line(events[:20]) + _page(events[20:], pretty=True) + b"\n"
    out = tmp_path / "out.ndjson"

    first = run_cli(*_sweep(tmp_path, "-", out), cwd=tmp_path, input=data)

    assert first.code == 0, first.stderr
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)
    again = run_cli(*_sweep(tmp_path, "-", out), cwd=tmp_path, input=data)
    assert again.code == 0, again.stderr
    assert len(read_ndjson(out)) == len(events)


def test_a_page_with_a_malformed_middle_line_stops_the_run_naming_the_line_and_changes_nothing(
    tmp_path: Path,
) -> None:
    events = recent_events(30, hours=1, seed=43)
    source = tmp_path / "pages.json"
    source.write_bytes(_page(events[:10], pretty=True) + b"\n")
    out = tmp_path / "out.ndjson"
    assert run_cli(*_sweep(tmp_path, str(source), out), cwd=tmp_path).code == 0
    before = _snapshot(tmp_path, out)
    # Two more pages saved since; a line in the middle of the second one is damaged.
    second = _page(events[10:20], pretty=True).split(b"\n")
    start = 1 + len(_page(events[:10], pretty=True).split(b"\n"))  # the line the page begins at
    middle = len(second) // 2
    assert second[middle].strip().startswith(b'"') and second[middle].endswith(b",")
    second[middle] = second[middle][:-1] + b" oops,"
    source.write_bytes(
        _page(events[:10], pretty=True)
        + b"\n"
        + b"\n".join(second)
        + b"\n"
        + _page(events[20:])
        + b"\n"
    )

    result = run_cli(*_sweep(tmp_path, str(source), out), cwd=tmp_path)

    assert result.code == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"openai-audit-forwarder: error: input {source}: lines {start}-")
    assert f"invalid JSON (Expecting ',' delimiter at line {start + middle} column " in line
    assert "more malformed" not in line  # one damaged line, one problem: no fragments
    assert _snapshot(tmp_path, out) == before

    source.write_bytes(source.read_bytes().replace(b" oops,", b","))
    mended = run_cli(*_sweep(tmp_path, str(source), out), cwd=tmp_path)
    assert mended.code == 0, mended.stderr
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)


def test_an_event_in_a_page_without_an_id_is_named_by_line_and_index(tmp_path: Path) -> None:
    events = recent_events(12, hours=1, seed=44)
    del events[7]["id"]
    source = tmp_path / "pages.json"
    source.write_bytes(_page(events[:5]) + b"\n" + _page(events[5:]) + b"\n")
    out = tmp_path / "out.ndjson"

    result = run_cli(*_sweep(tmp_path, str(source), out), cwd=tmp_path)

    assert result.code == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.endswith(
        f"input {source}: line 2 data[2]: missing or invalid 'id' (a non-empty string)"
    )
    assert read_ndjson(out) == []


def _snapshot(tmp_path: Path, out: Path) -> tuple[list, bytes]:
    """Every row of the state database and the sink's bytes."""
    rows: list = []
    with sqlite3.connect(tmp_path / "s.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            rows.append((table, sorted(db.execute(f"SELECT * FROM {table}"))))
    return rows, out.read_bytes() if out.exists() else b""


def test_an_event_nested_2000_deep_in_a_page_is_dead_lettered_and_the_rest_delivered(
    tmp_path: Path,
) -> None:
    from tests.test_hostile_events import nested_body, read_letters

    events = recent_events(8, hours=1, seed=45)
    deep = nested_body("deep-2000", events[3]["effective_at"], 2000)  # past orjson's 1024
    data = b",".join(orjson.dumps(e) for e in events[4:])
    source = tmp_path / "pages.json"
    source.write_bytes(
        _page(events[:4]) + b"\n" + b'{"object": "list", "data": [' + deep + b"," + data + b"]}\n"
    )
    out = tmp_path / "out.ndjson"
    args = [*_sweep(tmp_path, str(source), out), "--dead-letter", str(tmp_path / "dl")]

    first = run_cli(*args, cwd=tmp_path)

    assert first.code == 0, first.stderr
    [letter] = read_letters(tmp_path / "dl")
    assert letter["reason"] == "invalid event: nested deeper than 128 levels"
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)
    again = run_cli(*args, cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert len(read_ndjson(out)) == len(events)
    assert len(read_letters(tmp_path / "dl")) == 1


def test_backfill_input_takes_pages_one_per_line_and_delivers_each_event_once(
    tmp_path: Path,
) -> None:
    events = recent_events(40, hours=2, seed=46)
    source = tmp_path / "pages.json"
    source.write_bytes(_pages_one_per_line(events))
    out = tmp_path / "out.ndjson"
    since = str(min(e["effective_at"] for e in events))
    args = ["backfill", "--since", since, "--window", "20m", "--input", str(source)]
    args += ["--schema", "raw", "--sink", f"file:{out}", "--state", str(tmp_path / "s.db")]

    first = run_cli(*args, cwd=tmp_path)

    assert first.code == 0, first.stderr
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)
