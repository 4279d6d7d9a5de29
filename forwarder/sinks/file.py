"""`file:PATH`: appends NDJSON. Crash-safe: the byte offset after each acknowledged batch is
committed with the state, and on start any uncommitted tail is cut, so after a crash no line
is duplicated or torn. An exclusive lock keeps two processes from appending at once."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

import orjson

from forwarder.files import make_private_dirs
from forwarder.sinks.base import (
    Record,
    Rejection,
    Sink,
    SinkConfigError,
    SinkError,
    SinkSpec,
    encode_each,
)


class FileSink(Sink):
    ndjson_lines = True

    def __init__(self, spec: SinkSpec, path: Path, fsync: bool) -> None:
        super().__init__(spec)
        self.path = path
        self.fsync = fsync
        self._name = f"file:{path.resolve()}"  # asked for at every commit: resolved once
        self._fd: int | None = None
        self._offset = 0

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> FileSink:
        spec.reject_unknown({"fsync"})
        if not spec.path:
            raise SinkConfigError(f"sink {spec.display}: needs a path, e.g. file:out/events.ndjson")
        return cls(spec, Path(spec.path), spec.bool_param("fsync", True))

    @property
    def name(self) -> str:
        return self._name

    def open(self) -> None:
        if self._fd is not None:
            return
        try:
            # Event data: owner only (an existing file keeps the mode it was given).
            make_private_dirs(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SinkError(f"file {self.path}: cannot open ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SinkError(f"file {self.path}: another process is writing it") from None
        self._fd = fd
        self._offset = os.fstat(fd).st_size

    def restore(self, position: str | None) -> None:
        """Cut what was written after the last committed offset (a batch whose commit the
        crash prevented). A different inode means the file was rotated: keep it whole."""
        self.open()
        assert self._fd is not None
        if not position:
            return
        inode_text, _, offset_text = position.partition(":")
        stat = os.fstat(self._fd)
        committed = int(offset_text)
        if int(inode_text) == stat.st_ino and committed < stat.st_size:
            os.ftruncate(self._fd, committed)
            os.fsync(self._fd)
            self._offset = committed

    def position(self) -> str | None:
        if self._fd is None:
            return None
        return f"{os.fstat(self._fd).st_ino}:{self._offset}"

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        self.open()
        assert self._fd is not None
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        lines, rejections = encode_each(
            records, lambda r: r.line or dumps(r.doc, option=newline), "JSON"
        )
        data = b"".join(lines)
        try:
            written = os.pwrite(self._fd, data, self._offset)
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], self._offset + written)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            # Leave the offset: the next attempt overwrites the partial write.
            raise SinkError(f"file {self.path}: write failed ({exc.strerror or exc})") from None
        self._offset += len(data)
        return rejections

    def check(self) -> str:
        self.open()
        return f"file {self.path}: writable, {self._offset} bytes"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
