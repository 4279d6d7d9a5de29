"""The objects of the S3 sink and their keys: gzip NDJSON per batch, Parquet per sealed spool
segment. Keys derive from the content (time span, count, a hash of the ids), so the same
events always land on the same key with the same bytes: a retry or a replay overwrites."""

from __future__ import annotations

import gzip
import hashlib
import io
import time
from collections.abc import Iterator, Sequence
from typing import Any

from forwarder.sinks.base import Record
from forwarder.sinks.s3.ocsf_arrow import SPOOL_ID, SPOOL_TIME, import_pyarrow

GZIP_LEVEL = 6
NDJSON_TYPE = "application/gzip"
PARQUET_TYPE = "application/vnd.apache.parquet"
DAY = 86_400


def _utc_stamp(seconds: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def content_name(ids: Sequence[str], first: int, last: int) -> str:
    """File name from the content: time span, count and a hash of the ids, so that the same
    records always land on the same key."""
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=8).hexdigest()
    return f"{_utc_stamp(first)}-{_utc_stamp(last)}-{len(ids)}-{digest}"


def _by_day(records: list[Record]) -> Iterator[tuple[int, list[Record]]]:
    """Consecutive runs of (sorted) records with the same UTC day number."""
    start = 0
    day = records[0].effective_at // DAY
    for i in range(1, len(records)):
        current = records[i].effective_at // DAY
        if current != day:
            yield day, records[start:i]
            start, day = i, current
    yield day, records[start:]


def _chunks(sizes: list[int], max_events: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """(start, end) slices with at most max_events records and max_bytes (a single larger
    record gets an object of its own)."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_events or total + size > max_bytes):
            yield start, i
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


def ndjson_objects(
    ordered: list[Record], lines: list[bytes], max_events: int, max_bytes: int
) -> Iterator[tuple[str, str, bytes]]:
    """(date, file name, body) of the gzip NDJSON objects of time-sorted records."""
    offset = 0
    for day, group in _by_day(ordered):
        dt = time.strftime("%Y-%m-%d", time.gmtime(day * DAY))
        group_lines = lines[offset : offset + len(group)]
        for start, end in _chunks([len(line) for line in group_lines], max_events, max_bytes):
            chunk = group[start:end]
            # mtime=0 and no file name: a retry produces identical bytes.
            body = gzip.compress(b"".join(group_lines[start:end]), GZIP_LEVEL, mtime=0)
            name = content_name(
                [r.id for r in chunk], chunk[0].effective_at, chunk[-1].effective_at
            )
            yield dt, f"{name}.ndjson.gz", body
        offset += len(group)


def parquet_bytes(table: Any) -> bytes:
    """One Parquet file of a table without the spool's columns: snappy (Parquet's default,
    which every reader takes), plain encoding (as AWS's own sources write), statistics for the
    top-level scalar columns (`time`, the ids) that queries filter on. zstd, dictionaries and
    statistics for each of the hundreds of nested columns took four times as long."""
    pa = import_pyarrow()
    table = table.drop_columns([SPOOL_ID, SPOOL_TIME])
    scalars = [f.name for f in table.schema if not pa.types.is_nested(f.type)]
    sink = io.BytesIO()
    pa.parquet.write_table(
        table, sink, compression="snappy", use_dictionary=False, write_statistics=scalars
    )
    return sink.getvalue()


def parquet_objects(
    table: Any, max_events: int, max_bytes: int
) -> Iterator[tuple[str, str, bytes]]:
    """(eventDay, file name, body) of the Parquet objects of a sealed spool segment: rows
    sorted by (effective_at, id), split by UTC day, at most max_events rows, halved while the
    file exceeds max_bytes (the split depends only on the content)."""
    pa = import_pyarrow()
    order = pa.compute.sort_indices(
        table, sort_keys=[(SPOOL_TIME, "ascending"), (SPOOL_ID, "ascending")]
    )
    if order.to_pylist() != list(range(table.num_rows)):  # a take of every column is not free
        table = table.take(order)
    times = table.column(SPOOL_TIME).to_pylist()
    start = 0
    while start < len(times):
        day = times[start] // DAY
        end = start
        while end < len(times) and times[end] // DAY == day:
            end += 1
        event_day = time.strftime("%Y%m%d", time.gmtime(day * DAY))
        for first in range(start, end, max_events):
            last = min(first + max_events, end)
            for part, body in _halved(table.slice(first, last - first), max_bytes):
                ids = part.column(SPOOL_ID).to_pylist()
                part_times = part.column(SPOOL_TIME)
                name = content_name(ids, part_times[0].as_py(), part_times[-1].as_py())
                yield event_day, f"{name}.parquet", body
        start = end


def _halved(table: Any, max_bytes: int) -> Iterator[tuple[Any, bytes]]:
    """(table, its Parquet file) whole, or in halves (recursively) while the file exceeds
    max_bytes: the size is known only once encoded, and halving keeps the split
    deterministic."""
    body = parquet_bytes(table)
    if table.num_rows <= 1 or len(body) <= max_bytes:
        yield table, body
        return
    middle = table.num_rows // 2
    yield from _halved(table.slice(0, middle), max_bytes)
    yield from _halved(table.slice(middle), max_bytes)
