"""The Fluentd sink's encoding: records to PackedForward chunks, `[tag, entries, option]` with
`[EventTime, doc]` entries (gzip-compressed with `compress=gzip`), each at most `chunk_bytes`
of entries and carrying the chunk id the receiver acknowledges. No sockets."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import Any

import msgpack
from fluent.sender import EventTime

from forwarder.sinks.base import Record, Rejection, encode_each
from forwarder.sinks.fluentd.transport import Chunk, new_chunk_id


class ChunkEncoder:
    """Cuts batches into chunks for one tag."""

    def __init__(self, tag: str, *, compress: bool, chunk_bytes: int) -> None:
        self.tag = tag
        self.compress = compress
        self.chunk_bytes = chunk_bytes
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, records: Sequence[Record]) -> tuple[list[Chunk], list[Rejection]]:
        """Pack `[EventTime, doc]` entries (`encode_each`: a record msgpack cannot encode is
        rejected alone) and cut them into chunks of at most `chunk_bytes`."""
        packer = self._packer
        pack = packer.pack
        times: dict[Any, EventTime] = {}

        def entry(record: Record) -> bytes:
            ts = record.effective_at
            event_time = times.get(ts)
            if event_time is None:
                event_time = times[ts] = event_time_of(ts)
            try:
                return pack((event_time, record.doc))
            except BaseException:
                packer.reset()  # drop what a failed pack left in the buffer
                raise

        entries, rejections = encode_each(records, entry, "msgpack")
        chunks: list[Chunk] = []
        parts: list[bytes] = []
        size = 0
        for packed in entries:
            if parts and size + len(packed) > self.chunk_bytes:
                chunks.append(self._chunk(parts))
                parts, size = [], 0
            parts.append(packed)
            size += len(packed)
        if parts:
            chunks.append(self._chunk(parts))
        return chunks, rejections

    def _chunk(self, parts: list[bytes]) -> Chunk:
        entries = b"".join(parts)
        chunk_id = new_chunk_id()
        option: dict[str, Any] = {"size": len(parts), "chunk": chunk_id}
        if self.compress:
            entries = gzip.compress(entries, compresslevel=1, mtime=0)
            option["compressed"] = "gzip"
        message = self._packer.pack([self.tag, entries, option])
        return Chunk(chunk_id, message)


def event_time_of(ts: Any) -> EventTime:
    """Fluentd's EventTime (seconds, nanoseconds) of a timestamp in seconds."""
    if isinstance(ts, int):
        return EventTime(ts, 0)
    seconds = int(ts)
    return EventTime(seconds, min(round((ts - seconds) * 1e9), 999_999_999))
