"""`stdout:` writes NDJSON (`format=json`, default) or a stream of msgpack maps
(`format=msgpack`) to standard output, for Fluentd `in_exec` and pipes.

Every byte of a batch goes to file descriptor 1 before `write` returns: a write to a pipe may
take only part of the data (a signal arrives, the reader is slow, the pipe is non-blocking),
so the rest is written until none is left. A reader that went away (a broken pipe) is a
permanent failure, reported at once: retrying cannot bring it back."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
from collections.abc import Sequence

import msgpack
import orjson

from forwarder.sinks.base import Record, Rejection, Sink, SinkError, SinkSpec, encode_each

STDOUT_FD = 1


class StdoutSink(Sink):
    def __init__(self, spec: SinkSpec, fmt: str) -> None:
        super().__init__(spec)
        self.format = fmt

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> StdoutSink:
        spec.reject_unknown({"format"})
        return cls(spec, spec.choice_param("format", "json", ("json", "msgpack")))

    @property
    def name(self) -> str:
        return "stdout:"

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        if self.format == "json":
            dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
            parts, rejections = encode_each(records, lambda r: dumps(r.doc, option=newline), "JSON")
        else:
            packer = msgpack.Packer(use_bin_type=True)

            def pack(record: Record) -> bytes:
                try:
                    return packer.pack(record.doc)
                except BaseException:
                    packer.reset()  # drop what a failed pack left in the buffer
                    raise

            parts, rejections = encode_each(records, pack, "msgpack")
        if sys.__stdout__ is None:  # fd 1 was closed at start: it may name another file now
            raise SinkError("stdout is closed: nothing to write to", permanent=True)
        write_all(STDOUT_FD, b"".join(parts))
        return rejections

    def check(self) -> str:
        if sys.__stdout__ is None:
            raise SinkError("stdout is closed: nothing to write to", permanent=True)
        return f"stdout: {self.format}"


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`, however many writes it takes; `SinkError` if not
    (permanent for a reader that went away)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()  # anything Python buffered goes first, in order
    view = memoryview(data)
    try:
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:  # a non-blocking pipe that is full: wait for room
                select.select([], [fd], [])
                continue
            view = view[written:]
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET):
            raise SinkError(
                "the reader of stdout went away (broken pipe); what it did not read is not "
                "committed",
                permanent=True,
            ) from None
        if exc.errno == errno.EBADF:
            raise SinkError("stdout is closed: nothing to write to", permanent=True) from None
        raise SinkError(f"stdout: write failed ({exc.strerror or exc})") from None
