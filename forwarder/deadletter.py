"""The dead-letter directory: every event that could not be mapped, or that a sink refused for
good, is appended here (NDJSON, fsynced before the checkpoint moves) with its reason."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class DeadLetter:
    time: float
    stream: str
    reason: str
    event: Any
    schema: str | None = None
    sink: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)),
                "stream": self.stream,
                "sink": self.sink,
                "schema": self.schema,
                "reason": self.reason,
                "event": self.event,
            },
            default=repr,
        )


class DeadLetters:
    """Appends dead letters to `DIR/dead-letters-YYYY-MM-DD.ndjson` (mode 0600)."""

    def __init__(self, directory: Path, stream: str) -> None:
        self.directory = directory
        self.stream = stream
        self.count = 0

    def add(
        self,
        reason: str,
        event: Any,
        *,
        schema: str | None = None,
        sink: str | None = None,
    ) -> None:
        self.add_many([DeadLetter(time.time(), self.stream, reason, event, schema, sink)])

    def add_many(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / time.strftime("dead-letters-%Y-%m-%d.ndjson", time.gmtime())
        data = b"".join(letter.to_json() + b"\n" for letter in letters)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count += len(letters)


def read_dead_letters(directory: Path) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, line number, letter) for every dead letter in the directory."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("dead-letters-*.ndjson")):
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield path, number, orjson.loads(line)
