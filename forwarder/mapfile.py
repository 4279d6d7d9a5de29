"""Maps a file of audit-log events offline, for the `map` command. The input is whatever
`forwarder.eventfile` reads: any mix of events, saved list responses and arrays, one JSON value
per line (streamed), pretty-printed or one after the other. Whatever cannot be mapped is
reported with its place, never skipped silently."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from forwarder.config import Settings
from forwarder.effective_at import normalize
from forwarder.errors import ForwarderError
from forwarder.eventfile import Found, Reader, Report, contents, where
from forwarder.files import make_private_dirs
from forwarder.schemas import build_mappers
from mappings.registry import MapFunction, MappingError


def map_path(settings: Settings, schema: str, input_path: str, output: str, report: Report) -> int:
    """`map`: the events of the file `input_path` (`-`: stdin) mapped to `schema`, one NDJSON
    line each, into `output` (`-`: stdout; a file is created owner-only, as the file sink's).
    Returns how many values could not be mapped, each reported."""
    mapper = build_mappers(settings, {schema})[schema]
    source = sys.stdin.buffer if input_path == "-" else _open_input(input_path)
    target = sys.stdout.buffer if output == "-" else _open_output(output)
    with source, target:
        return map_file(source, target, mapper, report)


def _open_input(path: str) -> Any:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ForwarderError(f"input {path}: {exc.strerror or exc}") from None


def _open_output(path: str) -> Any:
    try:
        # Event data: owner only, as the file sink writes it.
        make_private_dirs(Path(path).parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return open(fd, "wb", buffering=1 << 20)
    except OSError as exc:
        raise ForwarderError(f"output {path}: {exc.strerror or exc}") from None


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
        # The hot loop, `read_events`'s with the mapping inlined: a line holding one event
        # costs parse, map, dump and write, plus a type test. Anything else (blank, a list
        # response, an array, part of a value spread over lines, bad JSON, an event that does
        # not map as it is) leaves it for the reader and `_found`.
        loads, dumps, write, mapper = orjson.loads, orjson.dumps, self.write, self.mapper
        newline = orjson.OPT_APPEND_NEWLINE
        reader = Reader(self._unreadable)
        pending = reader.pending
        for number, line in enumerate(source, 1):
            if not pending:
                try:
                    value = loads(line)
                except orjson.JSONDecodeError:
                    pass
                else:
                    if type(value) is dict and "type" in value:
                        try:
                            write(dumps(mapper(value), option=newline))
                            continue
                        except (MappingError, TypeError):
                            pass
                    self._found(contents(value, number))
                    continue
            self._found(reader.line(line, number))
        self._found(reader.end())
        return self.failures

    def _found(self, events: Iterator[Found]) -> None:
        for event, number, path in events:
            self._event(event, where(number, path))

    def _fail(self, where: str, reason: str) -> None:
        self.failures += 1
        self.report(where, reason)

    def _unreadable(self, where: str, reason: str) -> None:
        self._fail(where, f"{reason}; skipped")

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
