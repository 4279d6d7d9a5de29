"""Maps a file of audit-log events offline, for the `map` command. The input is any mix of
events, saved list responses (`{"object": "list", "data": [...]}`) and arrays of either: one
JSON value per line (streamed), pretty-printed over several lines, or several values one
after the other. Whatever cannot be mapped is reported with its place, never skipped silently."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from forwarder.effective_at import normalize
from mappings.registry import MapFunction, MappingError

Report = Callable[[str, str], None]  # (where: "line 12", "line 3 data[4]", "lines 5-9", reason)

# Strings (which may hold brackets) and the brackets outside them, for the nesting depth of a
# value spread over several lines. JSON strings never span lines.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPENERS = (b"{", b"[")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def map_file(source: BinaryIO, target: BinaryIO, mapper: MapFunction, report: Report) -> int:
    """Writes one NDJSON line to `target` per event of `source` that maps; reports every other
    value (blank lines aside) and returns how many there were."""
    return _Mapper(target, mapper, report).run(source)


class _Mapper:
    def __init__(self, target: BinaryIO, mapper: MapFunction, report: Report) -> None:
        self.write = target.write
        self.mapper = mapper
        self.report = report
        self.failures = 0

    def run(self, source: BinaryIO) -> int:
        # The hot loop: a line holding one event costs parse, map, dump and write, plus a
        # type test. Anything else (blank, a list response, an array, part of a value spread
        # over lines, bad JSON) leaves it for the slow paths below.
        loads, dumps, write, mapper = orjson.loads, orjson.dumps, self.write, self.mapper
        newline = orjson.OPT_APPEND_NEWLINE
        pending: list[bytes] = []  # the lines of a value spread over several lines
        first = depth = 0
        for number, line in enumerate(source, 1):
            if pending:
                if line.startswith(_OPENERS) and _starts_anew(pending, line):
                    # A value of its own that cannot continue the pending one: that one was
                    # cut short (a truncated JSONL line). Report it, go on with this line.
                    self._values(b"".join(pending), first)
                    pending = []
                else:
                    pending.append(line)
                    depth += _depth(line)
                    if depth <= 0:
                        self._values(b"".join(pending), first)
                        pending = []
                    continue
            try:
                value = loads(line)
            except orjson.JSONDecodeError:
                if not line.strip():
                    continue
                depth = _depth(line)
                if depth > 0:
                    pending, first = [line], number
                else:
                    self._values(line, number)
                continue
            if type(value) is dict and "type" in value:
                try:
                    write(dumps(mapper(value), option=newline))
                    continue
                except MappingError:
                    pass
            self._value(value, f"line {number}")
        if pending:
            self._values(b"".join(pending), first)
        return self.failures

    def _fail(self, where: str, reason: str) -> None:
        self.failures += 1
        self.report(where, reason)

    def _values(self, chunk: bytes, first: int) -> None:
        """Every JSON value in `chunk` (lines from `first` on): one, or several one after the
        other. Bad JSON is reported with the lines it spans; decoding goes on at the next line
        (or at the line where the error is, when a new value starts there)."""
        try:
            self._value(orjson.loads(chunk), f"line {first}")
            return
        except orjson.JSONDecodeError:
            pass
        try:
            text = chunk.decode()
        except UnicodeDecodeError as exc:
            self._fail(_span(first, chunk), f"invalid JSON (not UTF-8 at byte {exc.start})")
            return
        pos, end = 0, len(text)
        while True:
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
            if pos >= end:
                return
            line = first + text.count("\n", 0, pos)
            try:
                value, after = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                bol = text.rfind("\n", 0, exc.pos) + 1
                if bol > pos and not text[bol : exc.pos].strip():
                    resume = bol  # a new value begins where the error is
                else:
                    eol = text.find("\n", exc.pos)
                    resume = end if eol < 0 else eol + 1
                at = f"{exc.msg} at line {first + exc.lineno - 1} column {exc.colno}"
                self._fail(_span(line, text[pos:resume]), f"invalid JSON ({at}); skipped")
                pos = resume
                continue
            except ValueError as exc:  # NaN, Infinity
                eol = text.find("\n", pos)
                resume = end if eol < 0 else eol + 1
                self._fail(_span(line, text[pos:resume]), f"invalid JSON ({exc}); skipped")
                pos = resume
                continue
            self._value(value, f"line {line}")
            pos = after

    def _value(self, value: Any, where: str) -> None:
        """One parsed JSON value: an event, a list response, or an array of either."""
        if type(value) is list:
            for index, item in enumerate(value):
                data = _list_response_data(item)
                if data is None:
                    self._event(item, f"{where} [{index}]")
                else:
                    self._data(data, f"{where} [{index}]")
            return
        data = _list_response_data(value)
        if data is not None:
            self._data(data, where)
        else:
            self._event(value, where)

    def _data(self, data: list[Any], where: str) -> None:
        for index, event in enumerate(data):
            self._event(event, f"{where} data[{index}]")

    def _event(self, event: Any, where: str) -> None:
        try:
            try:
                doc = self.mapper(event)
            except MappingError:
                # Data exported from other tools: a float, numeric or ISO 8601 effective_at.
                if not normalize(event):
                    raise
                doc = self.mapper(event)
            self.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))
        except MappingError as exc:
            self._fail(where, exc.reason)
        except TypeError as exc:  # a value orjson cannot write (an integer past 64 bits)
            self._fail(where, f"cannot be written as JSON ({exc})")


def _list_response_data(document: Any) -> list[Any] | None:
    """The events of a list response, or None for anything else (an event has a `type`)."""
    if type(document) is dict and "type" not in document:
        data = document.get("data")
        if type(data) is list:
            return data
    return None


def _depth(line: bytes) -> int:
    """How much deeper in brackets the line ends than it starts."""
    if b'"' in line:
        line = _STRING.sub(b"", line)
    return line.count(b"{") + line.count(b"[") - line.count(b"}") - line.count(b"]")


def _starts_anew(pending: list[bytes], line: bytes) -> bool:
    """Whether `line`, a whole JSON value by itself, cannot continue the pending lines (it can
    in `[\n{...},\n{...}\n]`, where the last element's line is a whole value too)."""
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    try:
        head = b"".join(pending).decode()
        _DECODER.raw_decode(head + line.decode())
    except json.JSONDecodeError as exc:
        return exc.pos == len(head) + len(line) - len(line.lstrip())
    except (UnicodeDecodeError, ValueError):
        return True
    return False


def _span(first: int, chunk: bytes | str) -> str:
    newline = b"\n" if isinstance(chunk, bytes) else "\n"
    last = first + chunk.rstrip().count(newline)  # type: ignore[arg-type]
    return f"line {first}" if last == first else f"lines {first}-{last}"
