"""The durable local spool of the S3 sink's Security Lake (Parquet) mode: events wait here, per
OCSF class, until their segment is old or large enough to make an object Security Lake wants.
(A module of its own, outside the S3 package, so that `checkpoint show` reads it without
loading boto3.)

Layout, under the spool root (`spool/` beside the state database):

    <sink key>/sink.json                      the sink's name, for `checkpoint show`
    (the key is a hash of the destination: bucket, prefix, source, account, region, version)
    <sink key>/<class_uid>-<version>/open-<created ms>/chunks.arrows     the segment being filled
    <sink key>/<class_uid>-<version>/sealed-<created ms>/chunks.arrows   sealed, to be uploaded

A segment's file holds one chunk per write: its length, then an Arrow IPC stream (lz4) of a
record batch that may leave out fields no row of it has (read back as the union of them),
appended and fsync'ed before `write` returns, so the collector may commit its checkpoint then.
The sink's position (committed with the checkpoint) names each open segment and its length;
`restore` cuts what was written after the last commit (and open segments made after it), so a
batch that was not committed is not kept twice, and a chunk torn by a crash is gone.
Only committed chunks are ever sealed (at the start of a write, or in `flush` after a
commit), so a sealed segment never holds an event the
checkpoint does not cover; it is uploaded under keys derived from its content and deleted only
after every object is stored, so a crash at any point re-uploads the same bytes to the same
keys.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from forwarder.files import fsync_directory, make_private_dirs

DATA_FILE = "chunks.arrows"
_FRAME = 8  # each chunk: its length (8 bytes, little-endian), then an Arrow IPC stream
SINK_FILE = "sink.json"


def sink_directory(root: Path, destination: str) -> Path:
    """The spool of one destination (by a hash: URLs make poor directory names)."""
    return root / hashlib.blake2b(destination.encode(), digest_size=8).hexdigest()


def _created(segment: Path) -> float:
    """A segment's creation time (seconds), from its name."""
    return int(segment.name.split("-", 1)[1]) / 1000


def _size(segment: Path) -> int:
    """The committed-or-not bytes of a segment's chunks (0: none)."""
    try:
        return (segment / DATA_FILE).stat().st_size
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class Segment:
    """A sealed segment: its directory and its Arrow table (spool columns included)."""

    path: Path
    class_uid: int
    version: str
    table: Any


class Spool:
    """One sink's spool (see the module docstring). Not thread-safe: the delivery's batch
    lock serializes writes, flushes and restores."""

    def __init__(self, root: Path, destination: str, sink_name: str) -> None:
        self.directory = sink_directory(root, destination)
        self.sink_name = sink_name

    def _prepare(self) -> None:
        if not self.directory.exists():
            make_private_dirs(self.directory)
            fsync_directory(self.directory.parent)
        label = self.directory / SINK_FILE
        name = orjson.dumps({"sink": self.sink_name})
        if not label.exists() or label.read_bytes() != name:
            label.write_bytes(name)
            fsync_directory(self.directory)

    def _classes(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.iterdir() if p.is_dir())

    def _open_segment(self, class_dir: Path) -> Path | None:
        return next(iter(sorted(class_dir.glob("open-*"))), None)

    # -- writing ----------------------------------------------------------------------------

    def append(self, class_uid: int, version: str, batch: Any) -> None:
        """Add a record batch as a chunk of the class's open segment (made if none), durable
        when this returns."""
        import pyarrow.ipc

        pa = pyarrow

        self._prepare()
        class_dir = self.directory / f"{class_uid}-{version}"
        if not class_dir.exists():
            class_dir.mkdir(mode=0o700)
            fsync_directory(self.directory)
        segment = self._open_segment(class_dir)
        created = segment is None
        if segment is None:
            segment = class_dir / f"open-{int(time.time() * 1000)}"
            segment.mkdir(mode=0o700)
            fsync_directory(class_dir)
        # lz4: a tenth of zstd's time both ways; most of a chunk is the validity bitmaps of
        # columns the events leave empty, which any codec shrinks.
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        stream = pa.BufferOutputStream()
        with pa.ipc.new_stream(stream, batch.schema, options=options) as writer:
            writer.write_batch(batch)
        chunk = stream.getvalue()
        with open(segment / DATA_FILE, "ab") as out:
            out.write(len(chunk).to_bytes(_FRAME, "little"))
            out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if created:
            fsync_directory(segment)

    def position(self) -> str:
        """The open segments and their lengths: committed with the checkpoint."""
        state = {}
        for class_dir in self._classes():
            segment = self._open_segment(class_dir)
            if segment is not None:
                state[class_dir.name] = [segment.name, _size(segment)]
        return orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode()

    def restore(self, position: str | None) -> None:
        """Cut what was written after the committed `position`: the bytes past its length
        (chunks, or a chunk torn by a crash), and open segments it does not name (made after
        the commit). None (a sink the state has
        not seen: the collector commits its position before the first write) keeps all: what
        is here was committed under another sink URL of the same destination."""
        if position is None:
            return
        committed = orjson.loads(position)
        for class_dir in self._classes():
            segment = self._open_segment(class_dir)
            if segment is None:
                continue
            name, length = committed.get(class_dir.name, (None, 0))
            if segment.name != name:
                shutil.rmtree(segment)
                fsync_directory(class_dir)
            elif _size(segment) > length:
                with open(segment / DATA_FILE, "r+b") as data:
                    data.truncate(length)
                    os.fsync(data.fileno())

    # -- sealing and uploading --------------------------------------------------------------

    def seal_due(self, now: float, max_age: float, max_bytes: int) -> None:
        """Seal the open segments older than `max_age` or larger than `max_bytes`. Call only
        when every chunk is committed (see the module docstring)."""
        for class_dir in self._classes():
            segment = self._open_segment(class_dir)
            if segment is None:
                continue
            if not _size(segment):
                shutil.rmtree(segment)
            elif now - _created(segment) >= max_age or _size(segment) >= max_bytes:
                segment.rename(class_dir / segment.name.replace("open-", "sealed-", 1))
            else:
                continue
            fsync_directory(class_dir)

    def sealed(self) -> Iterator[Segment]:
        """The sealed segments, oldest first, each read back as one table."""
        import pyarrow.ipc

        pa = pyarrow

        for class_dir in self._classes():
            class_uid, version = class_dir.name.split("-", 1)
            for segment in sorted(class_dir.glob("sealed-*")):
                data = (segment / DATA_FILE).read_bytes() if _size(segment) else b""
                tables, offset = [], 0
                while offset + _FRAME <= len(data):
                    size = int.from_bytes(data[offset : offset + _FRAME], "little")
                    chunk = data[offset + _FRAME : offset + _FRAME + size]
                    tables.append(pa.ipc.open_stream(pa.py_buffer(chunk)).read_all())
                    offset += _FRAME + size
                # Chunks carry only the fields their rows have: the table has the union of them.
                table = pa.concat_tables(tables, promote_options="permissive") if tables else None
                yield Segment(segment, int(class_uid), version, table)

    def remove(self, segment: Segment) -> None:
        """Forget a segment whose objects are all stored."""
        shutil.rmtree(segment.path)
        fsync_directory(segment.path.parent)

    def status(self, now: float | None = None) -> dict[str, Any]:
        return spool_summary(self.directory, time.time() if now is None else now)

    def tally(self) -> Tally:
        """What the spool holds now, for the metrics: a few directory listings and a stat per
        segment (one open segment per class, and what waits for upload), no data read."""
        counts = {"open": [0, 0], "sealed": [0, 0]}
        oldest = None
        for segment, size in _segments(self.directory):
            count = counts["sealed" if segment.name.startswith("sealed-") else "open"]
            count[0] += 1
            count[1] += size
            created = _created(segment)
            oldest = created if oldest is None else min(oldest, created)
        return Tally(*counts["open"], *counts["sealed"], oldest)


@dataclass(frozen=True)
class Tally:
    """A spool's segments and bytes by state, and when its oldest segment was made."""

    open_segments: int
    open_bytes: int
    sealed_segments: int
    sealed_bytes: int
    oldest_created: float | None  # Unix time; None when the spool is empty


def _segments(directory: Path) -> list[tuple[Path, int]]:
    """Every segment of one sink's spool that holds a chunk, with its size."""
    class_dirs = sorted(p for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []
    found = []
    for class_dir in class_dirs:
        for segment in class_dir.iterdir():
            size = _size(segment) if segment.is_dir() else 0
            if size:
                found.append((segment, size))
    return found


def spool_summary(directory: Path, now: float) -> dict[str, Any]:
    """Segments, bytes and the age of the oldest segment of one sink's spool."""
    sizes = _segments(directory)
    segments = [segment for segment, _ in sizes]
    oldest = min((_created(s) for s in segments), default=None)
    return {
        "segments": len(segments),
        "sealed": sum(s.name.startswith("sealed-") for s in segments),
        "bytes": sum(size for _, size in sizes),
        "oldest_age_seconds": None if oldest is None else round(max(0.0, now - oldest), 1),
    }


def spool_status(root: Path, now: float | None = None) -> list[dict[str, Any]]:
    """Every sink's spool under `root` (for `checkpoint show`): its sink name and summary."""
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    rows = []
    for directory in sorted(p for p in root.iterdir() if (p / SINK_FILE).is_file()):
        name = orjson.loads((directory / SINK_FILE).read_bytes()).get("sink", directory.name)
        rows.append({"sink": name, **spool_summary(directory, now)})
    return rows
