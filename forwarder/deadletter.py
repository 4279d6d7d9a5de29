"""The dead-letter directory: every event that could not be mapped, or that a sink refused for
good, is appended here (NDJSON, fsynced before the checkpoint moves) with its reason, once:
a letter whose content is already in the directory is not written again."""

from __future__ import annotations

import hashlib
import os
import reprlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from forwarder.deepjson import DEEP_NESTING, dumps_deep, loads_deep
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

    def fields(self) -> dict[str, Any]:
        """The letter as stored, without its time (what its content hash covers)."""
        fields = {
            "stream": self.stream,
            "sink": self.sink,
            "schema": self.schema,
            "reason": redact(self.reason),
            "event": self.event,
        }
        try:
            orjson.dumps(self.event, default=repr)
        except TypeError:  # orjson.JSONEncodeError
            fields.update(_event_as_text(self.event))
        return fields


def _event_as_text(event: Any) -> dict[str, Any]:
    """The stored form of an event orjson cannot encode (nested deeper than 254 levels, an
    integer beyond 64 bits): `event_json` (the whole event as JSON text, written by the
    standard library), or `event_repr` (a truncated repr) when even that is too deep;
    `event_note` says which."""
    text = dumps_deep(event)
    if text is not None:
        return {
            "event": None,
            "event_json": text,
            "event_note": "orjson cannot encode this event; it is kept whole as JSON text",
        }
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 20, 2000, 200
    return {
        "event": None,
        "event_repr": short.repr(event),
        "event_note": f"nested deeper than {DEEP_NESTING} levels; only a truncated repr is kept",
    }


def letter_event(letter: dict[str, Any]) -> Any:
    """The event of a stored letter (parsing `event_json` when the event was kept as text)."""
    text = letter.get("event_json")
    if letter.get("event") is not None or not isinstance(text, str):
        return letter.get("event")
    try:
        return loads_deep(text)
    except ValueError:
        return text


def content_hash(fields: dict[str, Any]) -> str:
    """Hash of a letter's content: everything but its time."""
    content = {key: value for key, value in fields.items() if key != "time"}
    data = orjson.dumps(content, option=orjson.OPT_SORT_KEYS, default=repr)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class DeadLetters:
    """Appends dead letters to `DIR/dead-letters-YYYY-MM-DD.ndjson` (mode 0600). A letter
    whose content (all but the time) is already in an unclaimed file is not written again:
    an event without an id is re-read on every sweep, and must not pile up."""

    def __init__(self, directory: Path, stream: str) -> None:
        self.directory = directory
        self.stream = stream
        self.count = 0  # letters handed in, including those already on file
        self._known: set[str] | None = None

    def add(
        self,
        reason: str,
        event: Any,
        *,
        schema: str | None = None,
        sink: str | None = None,
    ) -> None:
        self.add_many([DeadLetter(time.time(), self.stream, reason, event, schema, sink)])

    def _known_hashes(self) -> set[str]:
        if self._known is None:
            self._known = set()
            if self.directory.is_dir():
                for path in sorted(self.directory.glob("dead-letters-*.ndjson")):
                    self._known.update(content_hash(letter) for _, _, letter in read_file(path))
        return self._known

    def add_many(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """Append `letters`; returns those written now (not already in the directory)."""
        if not letters:
            return []
        known = self._known_hashes()
        lines: list[bytes] = []
        new: list[DeadLetter] = []
        for letter in letters:
            fields = letter.fields()
            digest = content_hash(fields)
            if digest in known:
                continue
            known.add(digest)
            new.append(letter)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(letter.time))
            lines.append(orjson.dumps({"time": stamp, **fields}, default=repr) + b"\n")
        self.count += len(letters)
        if not lines:
            return new
        path = self.directory / time.strftime("dead-letters-%Y-%m-%d.ndjson", time.gmtime())
        data = b"".join(lines)
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
        return new


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


def summarize(directory: Path) -> dict[str, Any]:
    """The dead letters of `directory` counted by stream, sink, schema and reason (its text up
    to the first colon), with the files, the oldest and newest time and every unreadable line
    (`deadletter list`)."""
    groups: dict[tuple[str, str, str, str], int] = {}
    files: set[str] = set()
    times: list[str] = []
    bad_lines: list[dict[str, Any]] = []
    for path, number, letter in read_dead_letters(directory):
        files.add(path.name)
        if "unreadable" in letter:
            bad_lines.append({"file": path.name, "line": number, "problem": letter["unreadable"]})
        reason = str(letter.get("reason") or "")
        key = (
            str(letter.get("stream") or "-"),
            str(letter.get("sink") or "-"),
            str(letter.get("schema") or "-"),
            reason.split(":", 1)[0],
        )
        groups[key] = groups.get(key, 0) + 1
        if letter.get("time"):
            times.append(str(letter["time"]))
    return {
        "directory": str(directory),
        "total": sum(groups.values()),
        "files": sorted(files),
        "oldest": min(times, default=None),
        "newest": max(times, default=None),
        "groups": [
            {"stream": k[0], "sink": k[1], "schema": k[2], "reason": k[3], "count": n}
            for k, n in sorted(groups.items())
        ],
        "bad_lines": bad_lines,
    }


def read_file(path: Path) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, line number, letter) per line. A line that is not a JSON object (torn by a crash
    mid-append, edited by hand) is kept visible, never dropped: a letter whose `unreadable`
    says why, with the line's text as its event."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                letter = orjson.loads(line)
                problem = None if isinstance(letter, dict) else f"a JSON {_kind(letter)}"
            except orjson.JSONDecodeError as exc:
                problem = f"invalid JSON ({str(exc).splitlines()[0]})"
            if problem is not None:
                letter = {
                    "reason": "unreadable dead-letter line",
                    "event": line.decode("utf-8", "replace").rstrip("\n"),
                    "unreadable": f"not a dead letter: {problem}",
                }
            yield path, number, letter


def _kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


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
