"""The offline `map` command: JSONL streamed line by line, or one JSON document (a saved list
response, an array, an event; one line or pretty-printed); bad lines reported by number while
the rest still maps, exit code 1."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from forwarder.mapfile import map_file
from mappings.registry import MappingContext, load_mapper
from tests.fakes.events import make_event

ROOT = Path(__file__).resolve().parent.parent
ECS = load_mapper("ecs", MappingContext(organization_id="org-map"))


def _events(n: int) -> list[dict]:
    types = ["login.succeeded", "api_key.created", "user.deleted", "project.archived"]
    return [make_event(types[i % 4], 1_720_804_090 + i, seq=i, actor="session") for i in range(n)]


def _map(data: bytes, schema: str = "ecs") -> tuple[list[dict], list[tuple[str, str]], int]:
    mapper = ECS if schema == "ecs" else load_mapper(schema, MappingContext())
    out = io.BytesIO()
    reports: list[tuple[str, str]] = []
    failures = map_file(io.BytesIO(data), out, mapper, lambda w, r: reports.append((w, r)))
    docs = [orjson.loads(line) for line in out.getvalue().splitlines()]
    return docs, reports, failures


def _jsonl(events: list) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def test_jsonl_maps_every_line_in_order_and_skips_blank_lines() -> None:
    events = _events(5)
    data = b"\n" + _jsonl(events[:2]) + b"   \n\n" + _jsonl(events[2:]) + b"\n"
    docs, reports, failures = _map(data)
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events]
    assert docs[0] == orjson.loads(orjson.dumps(ECS(events[0])))
    assert (reports, failures) == ([], 0)


def test_bad_lines_are_reported_by_number_and_the_rest_still_maps() -> None:
    good = _events(3)
    no_id = {k: v for k, v in good[0].items() if k != "id"}
    lines = [good[0], b"{not json", b"", [1, 2], no_id, good[1], b'{"id": "x"', good[2]]
    data = b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines)
    docs, reports, failures = _map(data)
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in good]
    # [1, 2] is an array whose items are no events: each is reported by its index.
    where = ["line 2", "line 4 [0]", "line 4 [1]", "line 5", "line 7"]
    assert [w for w, _ in reports] == where
    assert reports[0][1].startswith("invalid JSON (")
    assert "not an object" in reports[1][1] and "not an object" in reports[2][1]
    assert "no id" in reports[3][1]
    assert failures == 5


def test_jsonl_is_streamed_not_read_whole() -> None:
    class LinesOnly(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise AssertionError("the whole input was read at once")

    events = _events(50)
    out = io.BytesIO()
    assert map_file(LinesOnly(_jsonl(events)), out, ECS, lambda w, r: None) == 0
    assert len(out.getvalue().splitlines()) == 50


def test_a_line_cut_short_inside_a_string_does_not_hold_back_the_lines_after_it() -> None:
    # Such a line opens a value that no later line can close: were the lines after it kept
    # pending, each would be decoded again with all before it (quadratic, the file in memory).
    events = _events(400)
    lines = _jsonl(events).splitlines(keepends=True)
    lines[4] = lines[4][:60] + b"\n"
    assert lines[4].count(b'"') % 2 == 1  # cut inside a string
    out = io.BytesIO()

    def source() -> Iterator[bytes]:
        for number, line in enumerate(lines, 1):
            if number > 10:
                assert len(out.getvalue().splitlines()) >= number - 8, number
            yield line

    reports: list[tuple[str, str]] = []
    assert map_file(source(), out, ECS, lambda w, r: reports.append((w, r))) == 1  # type: ignore[arg-type]
    assert [w for w, _ in reports] == ["line 5"]
    assert reports[0][1].startswith("invalid JSON (Invalid control character at line 5 column")
    docs = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events[:4] + events[5:]]


def test_an_event_nested_2000_deep_is_reported_on_its_line_or_in_its_page() -> None:
    from tests.test_hostile_events import nested_body

    events = _events(3)
    deep = nested_body("deep-2000", 1_720_804_090, 2000)  # past orjson's 1024 levels
    line = _jsonl(events[:1]) + deep + b"\n" + _jsonl(events[1:])
    data = b",".join(orjson.dumps(e) for e in events[1:])
    page = b'{"object": "list", "data": [' + deep + b"," + data + b"]}\n"
    for source, where in ((line, "line 2"), (_jsonl(events[:1]) + page, "line 2 data[0]")):
        docs, reports, failures = _map(source)
        assert [d["event"]["id"] for d in docs] == [e["id"] for e in events]
        assert reports == [(where, "cannot be written as JSON (Recursion limit reached)")]
        assert failures == 1


def test_a_saved_list_response_maps_its_data_pretty_printed_or_on_one_line() -> None:
    saved = (ROOT / "samples" / "list-response.json").read_bytes()
    data = orjson.loads(saved)["data"]
    assert b"\n" in saved.strip()  # pretty-printed
    for source in (saved, orjson.dumps({"object": "list", "data": data, "has_more": False})):
        docs, reports, failures = _map(source)
        assert [d["event"]["id"] for d in docs] == [e["id"] for e in data]
        assert (reports, failures) == ([], 0)


def test_a_bad_event_inside_a_list_response_is_reported_by_its_index() -> None:
    events = _events(3)
    events[1] = {"type": "api_key.created"}
    docs, reports, failures = _map(orjson.dumps({"object": "list", "data": events}, option=2))
    assert len(docs) == 2
    assert [where for where, _ in reports] == ["line 1 data[1]"]  # the page starts at line 1
    assert failures == 1


def test_an_array_of_events_or_one_pretty_printed_event_maps_too() -> None:
    events = _events(3)
    for source in (orjson.dumps(events), orjson.dumps(events, option=orjson.OPT_INDENT_2)):
        docs, reports, failures = _map(source)
        assert [d["event"]["id"] for d in docs] == [e["id"] for e in events]
        assert (reports, failures) == ([], 0)
    docs, reports, failures = _map(orjson.dumps(events[0], option=orjson.OPT_INDENT_2))
    assert [d["event"]["id"] for d in docs] == [events[0]["id"]]
    assert (reports, failures) == ([], 0)


def test_a_multiline_document_that_is_no_list_response_is_read_as_jsonl() -> None:
    events = _events(2)
    docs, reports, failures = _map(b"{\n" + _jsonl(events))
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events]
    assert [where for where, _ in reports] == ["line 1"]
    assert failures == 1


def test_raw_schema_passes_events_unchanged_and_refuses_an_unusable_header() -> None:
    events = _events(2)
    data = _jsonl([events[0], {"type": "x", "effective_at": 1}, events[1]])
    docs, reports, failures = _map(data, schema="raw")
    assert docs == events
    assert [where for where, _ in reports] == ["line 2"]
    assert failures == 1


def test_map_command_names_each_bad_line_on_stderr_and_exits_1(tmp_path: Path) -> None:
    events = _events(4)
    source = tmp_path / "in.jsonl"
    source.write_bytes(_jsonl(events[:2]) + b"{broken\n" + _jsonl(events[2:]))
    out = tmp_path / "out" / "ecs.ndjson"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "forwarder", "map", "--schema", "ocsf", str(source), "-o", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"openai-audit-forwarder: {source} line 3: invalid JSON (")
    assert lines[1:] == [
        "openai-audit-forwarder: error: 1 events could not be mapped (see the lines above)"
    ]
    docs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [d["metadata"]["original_event_uid"] for d in docs] == [e["id"] for e in events]


def test_map_stops_quietly_when_the_reader_of_stdout_goes_away(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(_jsonl(_events(20_000)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))}
    env["PYTHONPATH"] = str(ROOT)
    with subprocess.Popen(
        [sys.executable, "-m", "forwarder", "map", str(source)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert orjson.loads(process.stdout.readline())["event"]["kind"] == "event"
        process.stdout.close()  # like `| head -1`
        stderr = process.stderr.read()
        code = process.wait(timeout=60)
    assert (code, stderr) == (141, b"")


# --- any mix of events, list responses and arrays (nothing skipped silently) ---------------------


def _page(events: list[dict], *, pretty: bool = False) -> bytes:
    page = {
        "object": "list",
        "data": events,
        "first_id": events[0]["id"],
        "last_id": events[-1]["id"],
        "has_more": True,
    }
    return orjson.dumps(page, option=orjson.OPT_INDENT_2 if pretty else 0)


def test_one_list_response_per_line_maps_every_page() -> None:
    events = _events(30)
    pages = [events[i : i + 10] for i in (0, 10, 20)]
    docs, reports, failures = _map(b"".join(_page(p) + b"\n" for p in pages))
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events]
    assert (reports, failures) == ([], 0)


def test_concatenated_pretty_printed_pages_arrays_and_events_all_map() -> None:
    events = _events(24)
    data = (
        _page(events[0:5], pretty=True)  # pretty-printed, the next one glued to its end
        + _page(events[5:10], pretty=True)
        + b"\n"
        + _page(events[10:13])
        + _page(events[13:15])  # two pages on one line, no separator
        + b"\n\n"
        + orjson.dumps(events[15:18], option=orjson.OPT_INDENT_2)  # an array of events
        + b"\n"
        + orjson.dumps(events[18])  # a plain JSONL event
        + b"\n"
        + orjson.dumps(
            [orjson.loads(_page(events[19:21])), events[21]]
        )  # an array holding a page and an event
        + b" "
        + orjson.dumps(events[22], option=orjson.OPT_INDENT_2)  # a pretty event after it
        + b"\n"
        + orjson.dumps(events[23])
        + b"\n"
    )
    docs, reports, failures = _map(data)
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events]
    assert (reports, failures) == ([], 0)


def test_an_array_written_one_compact_event_per_line_maps_whole() -> None:
    events = _events(4)
    data = b"[\n" + b",\n".join(orjson.dumps(e) for e in events) + b"\n]\n"
    docs, reports, failures = _map(data)
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events]
    assert (reports, failures) == ([], 0)


def test_a_page_cut_short_is_reported_with_its_lines_and_the_pages_after_it_still_map() -> None:
    events = _events(15)
    broken = _page(events[5:10], pretty=True)[:-40]  # cut off inside its last event
    data = _page(events[:5]) + b"\n" + broken + b"\n" + _page(events[10:], pretty=True) + b"\n"
    docs, reports, failures = _map(data)
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events[:5] + events[10:]]
    assert failures == 1
    ((where, reason),) = reports
    last = 1 + broken.count(b"\n") + 1
    assert where == f"lines 2-{last}", reports
    assert reason.startswith("invalid JSON (") and reason.endswith("skipped")


def test_values_that_are_neither_event_nor_page_nor_array_are_reported_not_dropped() -> None:
    events = _events(2)
    data = (
        _jsonl([events[0]]) + b'42\n"text"\n{"object": "list", "data": "x"}\n' + _jsonl([events[1]])
    )
    docs, reports, failures = _map(data)
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events]
    assert [w for w, _ in reports] == ["line 2", "line 3", "line 4"]
    assert failures == 3


def test_map_command_exits_1_for_a_file_of_pages_with_one_cut_short(tmp_path: Path) -> None:
    events = _events(20)
    source = tmp_path / "pages.json"
    source.write_bytes(_page(events[:10]) + b"\n" + _page(events[10:])[:-25] + b"\n")
    out = tmp_path / "out.ndjson"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "forwarder", "map", str(source), "-o", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert f"{source} line 2: invalid JSON (" in result.stderr
    docs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [d["event"]["id"] for d in docs] == [e["id"] for e in events[:10]]


# --- effective_at from other tools; event.original ----------------------------------------------


def test_float_numeric_and_iso_effective_at_map_to_integer_seconds_keeping_the_fraction() -> None:
    base = _events(1)[0]
    at = 1_720_804_090  # 2024-07-12T17:08:10Z
    cases = {
        at + 0.25: ("2024-07-12T17:08:10.250Z", at * 1000 + 250),
        f"{at}": ("2024-07-12T17:08:10Z", at * 1000),
        f"{at}.5": ("2024-07-12T17:08:10.500Z", at * 1000 + 500),
        "2024-07-12T17:08:10.123456Z": ("2024-07-12T17:08:10.123456Z", at * 1000 + 123),
        "2024-07-12T19:08:10+02:00": ("2024-07-12T17:08:10Z", at * 1000),
    }
    for value, (timestamp, millis) in cases.items():
        event = {**base, "effective_at": value}
        (ecs,), reports, _ = _map(_jsonl([event]))
        (ocsf,), _, _ = _map(_jsonl([event]), schema="ocsf")
        (raw,), _, _ = _map(_jsonl([event]), schema="raw")
        assert reports == [], (value, reports)
        assert ecs["@timestamp"] == timestamp, value
        assert "extra" not in ecs["openai"]["audit"], value
        assert (ocsf["time"], "unmapped" in ocsf and "extra" in ocsf["unmapped"]) == (millis, False)
        assert raw == {**base, "effective_at": at}, value  # integer seconds, nothing private
    for bad in ("yesterday", "", None, True, [at]):
        _, reports, failures = _map(_jsonl([{**base, "effective_at": bad}]))
        assert failures == 1 and "effective_at" in reports[0][1], bad


def test_original_carries_the_source_event_as_a_json_string_and_is_off_by_default() -> None:
    event = _events(1)[0]
    for schema, field in (("ecs", ("event", "original")), ("ocsf", ("raw_data",))):
        plain = load_mapper(schema, MappingContext())(event)
        with_original = load_mapper(schema, MappingContext(original=True))(event)
        value: Any = with_original
        for key in field:
            value = value[key]
        assert orjson.loads(value) == event
        off: Any = plain
        for key in field[:-1]:
            off = off[key]
        assert field[-1] not in off
    imported = {**event, "effective_at": f"{event['effective_at']}.5"}
    ecs_original = load_mapper("ecs", MappingContext(original=True))
    out = io.BytesIO()
    assert map_file(io.BytesIO(_jsonl([imported])), out, ecs_original, lambda w, r: None) == 0
    original = orjson.loads(orjson.loads(out.getvalue())["event"]["original"])
    assert original == {**event, "effective_at": event["effective_at"]}
