"""The JSONL source: a file (or stdin) of audit-log objects, one per line, or a saved API list
response (`{"object": "list", "data": [...]}`). The whole input is checked before anything is
delivered, so a malformed line stops the run with its line number and the state untouched."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from forwarder.effective_at import normalize
from forwarder.errors import SourceError
from forwarder.model import loads_deep, minimal_problem
from forwarder.sources import Page, Source

PAGE_SIZE = 500
MAX_REPORTED = 5


class JsonlSource(Source):
    live = False

    def __init__(self, path: str, filters: dict[str, Any] | None = None) -> None:
        self.label = "stdin" if path == "-" else path
        self._spool: IO[bytes] | None = None
        if path == "-":
            # stdin can be read once; keep a copy so it can be checked, then delivered.
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
            shutil.copyfileobj(sys.stdin.buffer, self._spool)
            self._spool.seek(0)
            self.path = None
        else:
            self.path = Path(path)
            if not self.path.is_file():
                raise SourceError(f"input {path}: no such file")
        filters = filters or {}
        self._types = set(filters.get("event_types") or ())
        self._projects = set(filters.get("project_ids") or ())
        self._is_list_response = False
        self.count = self._validate()

    def _open(self) -> IO[bytes]:
        if self._spool is not None:
            self._spool.seek(0)
            return open(self._spool.fileno(), "rb", closefd=False)
        assert self.path is not None
        return self.path.open("rb")

    def _validate(self) -> int:
        with self._open() as handle:
            head = handle.read(4096).lstrip()
            handle.seek(0)
            if (
                head.startswith(b"{")
                and b'"data"' in head[:4096]
                and not _first_line_is_event(handle)
                and self._whole_document(handle)
            ):
                return len(self._list_data())
            handle.seek(0)
            problems: list[str] = []
            total = bad = 0
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                total += 1
                problem = _line_problem(line)
                if problem:
                    bad += 1
                    if len(problems) < MAX_REPORTED:
                        problems.append(f"line {number}: {problem}")
        if bad:
            more = f" ({bad - 1} more malformed lines)" if bad > 1 else ""
            raise SourceError(f"input {self.label}: {problems[0]}{more}")
        return total

    def _whole_document(self, handle: IO[bytes]) -> bool:
        try:
            document = orjson.loads(handle.read())
        except orjson.JSONDecodeError:
            return False
        if isinstance(document, dict) and isinstance(document.get("data"), list):
            self._is_list_response = True
            for index, event in enumerate(document["data"]):
                normalize(event)
                problem = minimal_problem(event)
                if problem:
                    raise SourceError(f"input {self.label}: data[{index}]: {problem}")
            return True
        return False

    def _list_data(self) -> list[dict[str, Any]]:
        with self._open() as handle:
            return orjson.loads(handle.read())["data"]

    def _events(self) -> Iterator[dict[str, Any]]:
        if self._is_list_response:
            for event in self._list_data():
                normalize(event)  # a float, numeric or ISO 8601 effective_at from other tools
                yield event
            return
        with self._open() as handle:
            for line in handle:
                if line.strip():
                    event = _loads(line)
                    if type(event["effective_at"]) is not int:
                        normalize(event)
                    yield event

    def _wanted(self, event: dict[str, Any]) -> bool:
        if self._types and event["type"] not in self._types:
            return False
        if self._projects:
            project = event.get("project")
            return isinstance(project, dict) and project.get("id") in self._projects
        return True

    def pages(self, start: int, end: int | None) -> Iterator[Page]:
        page: Page = []
        for event in self._events():
            at = event["effective_at"]
            if at < start or (end is not None and at >= end) or not self._wanted(event):
                continue
            page.append(event)
            if len(page) >= PAGE_SIZE:
                yield page
                page = []
        if page:
            yield page

    def check(self) -> str:
        return f"input {self.label}: {self.count} well-formed events"

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _loads(line: bytes) -> Any:
    """One line; a line nested deeper than orjson's 1024 levels is valid JSON all the same:
    parsed the slow way, it goes on to the intake, which dead-letters it."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if "depth limit" not in str(exc):
            raise
    return loads_deep(line)


def _first_line_is_event(handle: IO[bytes]) -> bool:
    """Whether the first non-blank line is a whole event: then the input is JSONL, and need
    not be read at once to be tried as one document (an event may have a `data` field)."""
    handle.seek(0)
    for line in handle:
        if line.strip():
            break
    else:
        line = b""
    handle.seek(0)
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and "type" in event


def _line_problem(line: bytes) -> str | None:
    try:
        event = _loads(line)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        return f"invalid JSON ({str(exc).splitlines()[0]})"
    normalize(event)
    return minimal_problem(event)
