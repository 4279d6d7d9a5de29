"""Reads audit-log events from a file, for `map` and `--input` alike: any mix of events, saved
list responses (`{"object": "list", "data": [...]}`) and arrays of either, one JSON value per
line (streamed), pretty-printed over several lines, or several values one after the other."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from forwarder.deepjson import DEEP_NESTING, deep_recursion, loads_deep

Report = Callable[[str, str], None]  # (where: "line 12", "lines 5-9", reason)
Found = tuple[Any, int, str]  # (value, its first line, its path: "", " data[4]", " [2] data[0]")

# Strings (which may hold brackets) and the brackets outside them, for the nesting depth of a
# value spread over several lines. JSON strings never span lines.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPENERS = (b"{", b"[")
_OPEN = ("{", "[")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def where(number: int, path: str) -> str:
    """The place of a value for messages: `line 3`, `line 3 data[1]`."""
    return f"line {number}{path}"


def read_events(source: Iterable[bytes], report: Report) -> Iterator[Found]:
    """Every value of `source` that is neither a list response nor an array, with its place,
    in file order; the caller checks that it is an event. What is no JSON goes to `report`
    (with its line or lines) and reading goes on at the next value."""
    # The hot loop: a line holding one event costs a parse and a type test. Anything else
    # (blank, a list response, an array, part of a value spread over lines, bad JSON) leaves
    # it for `contents` and the reader. `map` has a copy of this loop that maps as well.
    loads = orjson.loads
    reader = Reader(report)
    pending = reader.pending
    for number, line in enumerate(source, 1):
        if not pending:
            try:
                value = loads(line)
            except orjson.JSONDecodeError:
                pass
            else:
                if type(value) is dict and "type" in value:
                    yield value, number, ""
                else:
                    yield from contents(value, number)
                continue
        yield from reader.line(line, number)
    yield from reader.end()


class Reader:
    """The slow path of reading, between lines: a value spread over several lines (pretty-
    printed, or a line cut short), or bad JSON."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.pending: list[bytes] = []  # the lines of a value spread over several lines
        self.first = self.depth = 0

    def line(self, line: bytes, number: int) -> Iterator[Found]:
        """The values a line completes. `line` is any line while `pending`, else one that is
        no JSON value by itself."""
        pending = self.pending
        if pending:
            if not (line.startswith(_OPENERS) and _starts_anew(pending, line)):
                pending.append(line)
                self.depth += _depth(line)
                if self.depth <= 0:
                    yield from self.end()
                return
            # A value of its own that cannot continue the pending one: that one was cut short
            # (a truncated JSONL line). Report it, go on with this line (whole JSON).
            yield from self.end()
            yield from contents(orjson.loads(line), number)
            return
        if not line.strip():
            return
        depth = _depth(line)
        if depth > 0:
            pending.append(line)
            self.first, self.depth = number, depth
        else:
            yield from _values(line, number, self.report)

    def end(self) -> Iterator[Found]:
        """The values of the pending lines, at the end of the input or of the value."""
        if self.pending:
            chunk = b"".join(self.pending)
            self.pending.clear()
            yield from _values(chunk, self.first, self.report)


def _values(chunk: bytes, first: int, report: Report) -> Iterator[Found]:
    """Every JSON value in `chunk` (lines from `first` on): one, or several one after the
    other. Bad JSON is reported with the lines it spans; decoding goes on at the next line that
    opens a value in its first column (the line of the error, when a new value starts there)."""
    try:
        value = _loads(chunk)
    except ValueError:  # orjson.JSONDecodeError too
        pass
    else:
        yield from contents(value, first)
        return
    try:
        text = chunk.decode()
    except UnicodeDecodeError as exc:
        report(_span(first, chunk), f"invalid JSON (not UTF-8 at byte {exc.start})")
        return
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos >= end:
            return
        line = first + text.count("\n", 0, pos)
        try:
            value, after = _raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            bol = text.rfind("\n", 0, exc.pos) + 1
            if bol > pos and not text[bol : exc.pos].strip() and text.startswith(_OPEN, bol):
                resume = bol  # a new value begins where the error is
            else:
                resume = _resume(text, exc.pos)
            lineno = first + exc.lineno - 1
            at = f"{exc.msg.removesuffix(' at')} at line {lineno} column {exc.colno}"
            report(_span(line, text[pos:resume]), f"invalid JSON ({at})")
            pos = resume
            continue
        except ValueError as exc:  # NaN, Infinity, nested past DEEP_NESTING
            resume = _resume(text, pos)
            report(_span(line, text[pos:resume]), f"invalid JSON ({exc})")
            pos = resume
            continue
        yield from contents(value, line)
        pos = after


def _resume(text: str, after: int) -> int:
    """Where decoding goes on after bad JSON: the next line that opens a value in its first
    column, else the end. An indented line is inside the value that failed (pretty-printed),
    where decoding would find only fragments."""
    pos = after
    while (eol := text.find("\n", pos)) >= 0:
        pos = eol + 1
        if text.startswith(_OPEN, pos):
            return pos
    return len(text)


def contents(value: Any, number: int, path: str = "") -> Iterator[Found]:
    """The events of one parsed JSON value: itself, or those of a list response or an array of
    either (anything else in an array is yielded too, for the caller to refuse)."""
    if type(value) is list:
        for index, item in enumerate(value):
            data = _list_response_data(item)
            if data is None:
                yield item, number, f"{path} [{index}]"
            else:
                for inner, event in enumerate(data):
                    yield event, number, f"{path} [{index}] data[{inner}]"
        return
    data = _list_response_data(value)
    if data is None:
        yield value, number, path
    else:
        for index, event in enumerate(data):
            yield event, number, f"{path} data[{index}]"


def _list_response_data(document: Any) -> list[Any] | None:
    """The events of a list response, or None for anything else (an event has a `type`)."""
    if type(document) is dict and "type" not in document:
        data = document.get("data")
        if type(data) is list:
            return data
    return None


def _loads(chunk: bytes) -> Any:
    """One value; one nested deeper than orjson's 1024 levels is valid JSON all the same:
    parsed the slow way, its event goes on (to the intake, which dead-letters it)."""
    try:
        return orjson.loads(chunk)
    except orjson.JSONDecodeError as exc:
        if "depth limit" not in str(exc):
            raise
    return loads_deep(chunk)


def _raw_decode(text: str, pos: int) -> tuple[Any, int]:
    """The value at `pos` and where it ends; the standard library recurses per level, so a
    deep one is decoded again under a raised recursion limit."""
    try:
        return _DECODER.raw_decode(text, pos)
    except RecursionError:
        pass
    with deep_recursion():
        try:
            return _DECODER.raw_decode(text, pos)
        except RecursionError:
            raise ValueError(f"nested deeper than {DEEP_NESTING} levels") from None


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
    joined = b"".join(pending)
    if joined.rstrip().endswith(b":"):
        return True  # JSON writers put a value on the line of its key: this line is no value
    try:
        head = joined.decode()
        _raw_decode(head + line.decode(), 0)
    except json.JSONDecodeError as exc:
        # Broken within the pending lines (more lines cannot mend them: a line cut short in a
        # string), or just where this line begins.
        begins = len(head) + len(line) - len(line.lstrip())
        return exc.pos <= len(head.rstrip()) or exc.pos == begins
    except (UnicodeDecodeError, ValueError):
        return True
    return False


def _span(first: int, chunk: bytes | str) -> str:
    newline = b"\n" if isinstance(chunk, bytes) else "\n"
    last = first + chunk.rstrip().count(newline)  # type: ignore[arg-type]
    return f"line {first}" if last == first else f"lines {first}-{last}"
