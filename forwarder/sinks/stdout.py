"""`stdout:` writes NDJSON (`format=json`, default) or a stream of msgpack maps
(`format=msgpack`) to standard output, for Fluentd `in_exec` and pipes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import msgpack
import orjson

from forwarder.sinks.base import Record, Rejection, Sink, SinkError, SinkSpec, encode_each


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
        data = b"".join(parts)
        try:
            out = sys.stdout.buffer
            out.write(data)
            out.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SinkError(f"stdout: write failed ({exc.strerror or exc})") from None
        return rejections

    def check(self) -> str:
        return f"stdout: {self.format}"
