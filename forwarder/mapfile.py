"""Maps a file of audit-log events offline, for the `map` command: JSONL streamed line by line,
or one JSON document: a saved list response (`{"object": "list", "data": [...]}`), an array of
events or a single event, pretty-printed or not."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, BinaryIO

import orjson

from mappings.registry import MapFunction, MappingError

Report = Callable[[str, str], None]  # (where: "line 12", "data[3]" or "[3]", reason)


def map_file(source: BinaryIO, target: BinaryIO, mapper: MapFunction, report: Report) -> int:
    """Writes one NDJSON line to `target` per event of `source` that maps; reports every other
    one (blank lines aside) and returns how many there were."""
    lines = iter(source)
    number = 0
    for line in lines:
        number += 1
        if line.strip():
            break
    else:
        return 0
    try:
        first = orjson.loads(line)
    except orjson.JSONDecodeError:
        if not line.lstrip().startswith((b"{", b"[")):
            return _map_lines(line, lines, number, target, mapper, report)
        # One JSON document over several lines, or JSONL whose first line is bad.
        whole = line + source.read()
        try:
            document = orjson.loads(whole)
        except orjson.JSONDecodeError:
            rest = whole.splitlines()
            return _map_lines(rest[0], iter(rest[1:]), number, target, mapper, report)
        if isinstance(document, dict) and _list_response_data(document) is None:
            document = [document]  # a single event
        return _map_document(document, target, mapper, report)
    if isinstance(first, list) or _list_response_data(first) is not None:
        return _map_document(first, target, mapper, report)
    return _map_lines(line, lines, number, target, mapper, report)


def _list_response_data(document: Any) -> list[Any] | None:
    """The events of a list response, or None for anything else (an event has a `type`)."""
    if isinstance(document, dict) and "type" not in document:
        data = document.get("data")
        if isinstance(data, list):
            return data
    return None


def _map_lines(
    first: bytes,
    rest: Iterable[bytes],
    first_number: int,
    target: BinaryIO,
    mapper: MapFunction,
    report: Report,
) -> int:
    # The hot loop: no per-line work besides parse, map, dump and write. A blank line costs
    # one failed parse, which is cheaper than testing every line for blankness.
    loads, dumps, write = orjson.loads, orjson.dumps, target.write
    newline = orjson.OPT_APPEND_NEWLINE
    failures = 0
    for number, line in enumerate(chain((first,), rest), first_number):
        try:
            write(dumps(mapper(loads(line)), option=newline))
        except orjson.JSONDecodeError as exc:
            if line.strip():
                failures += 1
                report(f"line {number}", f"invalid JSON ({str(exc).splitlines()[0]})")
        except MappingError as exc:
            failures += 1
            report(f"line {number}", exc.reason)
    return failures


def _map_document(document: Any, target: BinaryIO, mapper: MapFunction, report: Report) -> int:
    data = _list_response_data(document)
    events, label = (data, "data[{}]") if data is not None else (document, "[{}]")
    dumps, write = orjson.dumps, target.write
    newline = orjson.OPT_APPEND_NEWLINE
    failures = 0
    for index, event in enumerate(events):
        try:
            write(dumps(mapper(event), option=newline))
        except MappingError as exc:
            failures += 1
            report(label.format(index), exc.reason)
    return failures
