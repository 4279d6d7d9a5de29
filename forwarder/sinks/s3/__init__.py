"""The `s3://BUCKET/PREFIX` sink: gzip NDJSON objects per batch, or OCSF Parquet in the Amazon
Security Lake custom-source layout (`format=parquet`), under keys derived from their content
so that a retry overwrites.

NDJSON: `write` returns once every PutObject of the batch succeeded. Parquet: `write` returns
once the batch is in the durable local spool (spool.py), where events of each OCSF class wait
until their segment is `flush_interval` old or `flush_bytes` large; segments due are uploaded
at the start of the next write and by `flush`, which the collector calls after each sweep.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson

from forwarder import metrics
from forwarder.sinks.base import (
    ENCODE_ERRORS,
    Record,
    Rejection,
    Sink,
    SinkError,
    SinkSpec,
    encode_each,
)
from forwarder.sinks.s3 import config as s3config
from forwarder.sinks.s3.objects import (
    NDJSON_TYPE,
    PARQUET_TYPE,
    ndjson_objects,
    parquet_objects,
)
from forwarder.sinks.s3.transport import S3Transport

__all__ = ["S3Sink"]


class S3Sink(Sink):
    """Writes each batch as objects to S3 (or an S3-compatible endpoint) through boto3."""

    def __init__(self, config: s3config.S3Config) -> None:
        super().__init__(config.spec)
        self.config = config
        self.format = config.format
        self.transport = S3Transport(
            config.bucket, config.region, config.endpoint_url, config.put_extra
        )
        self.spool: Any = None
        if config.spool is not None:
            from forwarder.sinks.spool import Spool

            # Keyed by where its objects go, not by the whole URL: a changed flush_interval
            # or max_events must find the events spooled (and committed) before.
            destination = (
                f"s3://{config.bucket}/{config.prefix}?source={config.source}"
                f"&account_id={config.account_id}&region={config.region}"
                f"&endpoint_url={config.endpoint_url or ''}&ocsf_version={self.spec.ocsf_version}"
            )
            self.spool = Spool(config.spool, destination, self.name)
            self.spool_metrics = metrics.spool_metrics(self.name, config.flush_interval)

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> S3Sink:
        return cls(s3config.parse(spec, spec.spool_root))

    # -- connection -------------------------------------------------------------------------

    def open(self) -> None:
        self.transport.open()

    def close(self) -> None:
        self.transport.close()

    def check(self) -> str:
        self.transport.head_bucket()
        if self.format == "parquet":
            layout = (
                f"Security Lake parquet (OCSF {self.spec.ocsf_version}) under {self._lake_root()}"
            )
        else:
            layout = f"gzip NDJSON under {self._join(self.schema)}/"
        return f"s3://{self.config.bucket}: bucket reachable ({self.transport.where()}); {layout}"

    # -- position (the Parquet spool) -------------------------------------------------------

    def position(self) -> str | None:
        return self.spool.position() if self.spool is not None else None

    def restore(self, position: str | None) -> None:
        if self.spool is not None:
            try:
                self.spool.restore(position)
            finally:
                self._export_spool()

    def flush(self) -> None:
        if self.spool is not None:
            try:
                self._upload_due()
            finally:
                self._export_spool()

    def status(self) -> dict[str, Any] | None:
        if self.spool is None:
            return None
        return {**self.spool.status(), "flush_interval_seconds": self.config.flush_interval}

    # -- writing ----------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        if not records:
            return []
        # Sorted by time then id: objects and keys do not depend on arrival order, and
        # Security Lake asks for time-sorted objects.
        ordered = sorted(records, key=lambda r: (r.effective_at, r.id))
        if self.format == "parquet":
            return self._spool_write(ordered)
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        lines, rejections = encode_each(ordered, lambda r: dumps(r.doc, option=newline), "JSON")
        if rejections:
            refused = {id(rejection.record) for rejection in rejections}
            ordered = [record for record in ordered if id(record) not in refused]
        if ordered:
            cfg = self.config
            for dt, name, body in ndjson_objects(ordered, lines, cfg.max_events, cfg.max_bytes):
                self.transport.put(self._join(self.schema, f"dt={dt}", name), body, NDJSON_TYPE)
        return rejections

    def _join(self, *parts: str) -> str:
        return "/".join(p for p in (self.config.prefix, *parts) if p)

    def _lake_root(self) -> str:
        return self._join("ext", self._source_name("{class_uid}")) + "/"

    def _source_name(self, class_uid: str) -> str:
        source = self.config.source
        assert source is not None
        if "{class_uid}" in source:
            return source.replace("{class_uid}", class_uid)
        return f"{source}-{class_uid}"

    def _spool_write(self, ordered: list[Record]) -> list[Rejection]:
        try:
            return self._spool_batch(ordered)
        finally:
            self._export_spool()

    def _spool_batch(self, ordered: list[Record]) -> list[Rejection]:
        """Spool the batch, per class; before that, upload the segments that are due (their
        chunks are all committed: a write comes after the previous one's commit or restore)."""
        from forwarder.sinks.s3.ocsf_arrow import record_batch

        self._upload_due()
        rejections: list[Rejection] = []
        groups: dict[int, list[Record]] = {}
        for record in ordered:
            class_uid = record.doc.get("class_uid")
            if type(class_uid) is not int:
                reason = "OCSF document has no integer class_uid (Parquet needs one)"
                rejections.append(Rejection(record, reason))
                continue
            groups.setdefault(class_uid, []).append(record)
        version = self.spec.ocsf_version
        assert version is not None
        start = self.spool.position()
        try:
            for class_uid, group in sorted(groups.items()):
                try:
                    batch = record_batch(
                        [r.doc for r in group],
                        [r.id for r in group],
                        [r.effective_at for r in group],
                        class_uid,
                        version,
                    )
                except KeyError:
                    reason = f"OCSF {version} has no class {class_uid}"
                    rejections.extend(Rejection(record, reason) for record in group)
                    continue
                except ENCODE_ERRORS:  # one document Arrow cannot take: reject it alone
                    batch = self._encodable(group, class_uid, version, rejections)
                    if batch is None:
                        continue
                self.spool.append(class_uid, version, batch)
        except OSError as exc:
            self.spool.restore(start)  # a retried write must not find half the batch
            raise SinkError(f"spool {self.spool.directory}: {exc.strerror or exc}") from None
        return rejections

    def _encodable(
        self, group: list[Record], class_uid: int, version: str, rejections: list[Rejection]
    ) -> Any:
        """The record batch of the records that encode on their own (None if none do); a
        rejection for each other one."""
        from forwarder.sinks.s3.ocsf_arrow import record_batch

        good: list[Record] = []
        for record in group:
            try:
                record_batch([record.doc], [record.id], [record.effective_at], class_uid, version)
            except ENCODE_ERRORS as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                rejections.append(Rejection(record, f"cannot encode as Parquet: {reason}"))
            else:
                good.append(record)
        if not good:
            return None
        return record_batch(
            [r.doc for r in good],
            [r.id for r in good],
            [r.effective_at for r in good],
            class_uid,
            version,
        )

    def _upload_due(self) -> None:
        """Seal the segments that are old or large enough, upload every sealed one, and
        forget it once all its objects are stored. Each object is uploaded by a thread of its
        own while the next one is encoded (Parquet encoding leaves the GIL): one upload in
        flight at most."""
        cfg = self.config
        self.spool.seal_due(time.time(), cfg.flush_interval, cfg.flush_bytes)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-upload") as uploads:
            for segment in self.spool.sealed():
                stored: list[Future[None]] = []
                for key, body in self._segment_objects(segment):
                    if stored:
                        stored[-1].result()  # raises its SinkError: the segment stays
                    stored.append(uploads.submit(self._store, key, body))
                for upload in stored:
                    upload.result()
                self.spool.remove(segment)

    def _store(self, key: str, body: bytes) -> None:
        """Upload one object of the spool, counted as stored or failed."""
        counted = self.spool_metrics
        try:
            self.transport.put(key, body, PARQUET_TYPE)
        except Exception:
            counted.failures.inc()
            raise
        counted.objects.inc()
        counted.uploaded_bytes.inc(len(body))

    def _export_spool(self) -> None:
        """The spool's state into its metrics: once per restore, write and flush."""
        try:
            tally = self.spool.tally()
        except OSError:  # the metrics never fail a write; what failed is reported by it
            return
        self.spool_metrics.export(
            tally.open_segments,
            tally.open_bytes,
            tally.sealed_segments,
            tally.sealed_bytes,
            tally.oldest_created,
        )

    def _segment_objects(self, segment: Any) -> Iterator[tuple[str, bytes]]:
        """(key, body) of the Parquet objects of a sealed segment, encoded as they are asked
        for."""
        from forwarder.sinks.s3.ocsf_arrow import full_table

        if segment.table is None or not segment.table.num_rows:
            return
        cfg = self.config
        source = self._source_name(str(segment.class_uid))
        table = full_table(segment.table, segment.class_uid, segment.version)
        for event_day, name, body in parquet_objects(table, cfg.max_events, cfg.max_bytes):
            key = self._join(
                "ext",
                source,
                f"region={cfg.region}",
                f"accountId={cfg.account_id}",
                f"eventDay={event_day}",
                name,
            )
            yield key, body
