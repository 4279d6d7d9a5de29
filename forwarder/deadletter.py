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

from forwarder.errors import StorageError
from forwarder.files import make_private_dirs
from forwarder.logs import redact


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
                "reason": redact(self.reason),
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
        path = self.directory / time.strftime("dead-letters-%Y-%m-%d.ndjson", time.gmtime())
        data = b"".join(letter.to_json() + b"\n" for letter in letters)
        try:
            make_private_dirs(self.directory)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = os.write(fd, data)
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            # The batch is not committed, so its events come again next sweep (a torn line
            # left by a full disk reads back as an "unreadable dead-letter line", not lost).
            raise StorageError(
                f"dead letters {self.directory}: cannot write ({exc.strerror or exc})"
            ) from None
        self.count += len(letters)


CLAIMED = ".replaying"


def dead_letter_files(directory: Path) -> list[Path]:
    """Every dead-letter file, including those a replay claimed and did not finish."""
    if not directory.is_dir():
        return []
    return sorted(
        list(directory.glob("dead-letters-*.ndjson"))
        + list(directory.glob(f"dead-letters-*.ndjson{CLAIMED}"))
    )


def read_dead_letters(directory: Path) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, line number, letter) for every dead letter in the directory."""
    for path in dead_letter_files(directory):
        yield from read_file(path)


def read_file(path: Path) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                letter = orjson.loads(line)
            except orjson.JSONDecodeError:
                # A line torn by a crash mid-append: keep it visible, never drop it.
                letter = {
                    "reason": "unreadable dead-letter line",
                    "event": line.decode("utf-8", "replace"),
                }
            yield path, number, letter


def claim_for_replay(directory: Path) -> list[Path]:
    """Rename the current files aside (atomically) so that letters written while replaying
    land in new files; a crash leaves the claimed files to the next replay."""
    claimed = []
    for path in dead_letter_files(directory):
        if path.name.endswith(CLAIMED):
            claimed.append(path)
        else:
            target = path.with_name(path.name + CLAIMED)
            if target.exists():  # an earlier claim of the same day's file is still there
                with target.open("ab") as out:
                    out.write(path.read_bytes())
                    os.fsync(out.fileno())
                path.unlink()
            else:
                path.rename(target)
            claimed.append(target)
    return sorted(set(claimed))
