"""`stdout:` writes NDJSON (`format=json`, default) or a stream of msgpack maps
(`format=msgpack`) to standard output, for Fluentd `in_exec` and pipes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import msgpack
import orjson

from forwarder.sinks.base import Record, Rejection, Sink, SinkError, SinkSpec


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
            data = b"".join([dumps(record.doc, option=newline) for record in records])
        else:
            packer = msgpack.Packer(use_bin_type=True)
            data = b"".join([packer.pack(record.doc) for record in records])
        try:
            out = sys.stdout.buffer
            out.write(data)
            out.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SinkError(f"stdout: write failed ({exc.strerror or exc})") from None
        return ()

    def check(self) -> str:
        return f"stdout: {self.format}"
