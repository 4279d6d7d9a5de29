"""The `s3://BUCKET/PREFIX` sink: each batch becomes gzip NDJSON (or OCSF Parquet in the
Security Lake layout) objects under keys derived from their content, so a retry overwrites.

write() returns only after every PutObject succeeded; it never holds records across calls
(batching by size and age is the collector's batch size and sweep interval, see
docs/sink-s3.md).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from forwarder.sinks.base import (
    ENCODE_ERRORS,
    Record,
    Rejection,
    Sink,
    SinkConfigError,
    SinkError,
    SinkSpec,
)

KNOWN_PARAMS = {
    "endpoint_url",
    "region",
    "sse",
    "kms_key_id",
    "format",
    "max_events",
    "max_bytes",
    "source",
    "account_id",
}
DEFAULT_MAX_EVENTS = 50_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
GZIP_LEVEL = 6
# A Security Lake custom source name, optionally with `{class_uid}`.
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_.\-]*(\{class_uid\})?[A-Za-z0-9_.\-]*$")
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
# S3 bucket names (3-63 lowercase letters, digits, dots, hyphens; older buckets may have more).
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]$")
# Codes that retrying will not fix: the sweep fails at once (SinkError.permanent).
_PERMANENT = {
    "NoSuchBucket": "the bucket does not exist",
    "404": "the bucket does not exist",
    "AccessDenied": "access denied by the bucket or IAM policy",
    "403": "access denied by the bucket or IAM policy",
    "InvalidAccessKeyId": "the access key is not known",
    "SignatureDoesNotMatch": "the secret key does not match",
    "KMS.NotFoundException": "the KMS key does not exist",
}


def _utc_stamp(seconds: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def _content_name(records: Sequence[Record]) -> str:
    """File name from the content: time span, count and a hash of the ids, so that the same
    records always land on the same key."""
    digest = hashlib.blake2b(
        "\n".join(record.id for record in records).encode(), digest_size=8
    ).hexdigest()
    first, last = records[0].effective_at, records[-1].effective_at
    return f"{_utc_stamp(first)}-{_utc_stamp(last)}-{len(records)}-{digest}"


def _by_day(records: list[Record]) -> Iterator[tuple[int, list[Record]]]:
    """Consecutive runs of (sorted) records with the same UTC day number."""
    start = 0
    day = records[0].effective_at // 86400
    for i in range(1, len(records)):
        current = records[i].effective_at // 86400
        if current != day:
            yield day, records[start:i]
            start, day = i, current
    yield day, records[start:]


def _chunks(
    records: list[Record], sizes: list[int], max_events: int, max_bytes: int
) -> Iterator[tuple[int, int]]:
    """(start, end) slices with at most max_events records and max_bytes (a single larger
    record gets an object of its own)."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_events or total + size > max_bytes):
            yield start, i
            start, total = i, 0
        total += size
    if start < len(records):
        yield start, len(records)


def _serializable(records: list[Record]) -> tuple[list[Record], list[bytes], list[Rejection]]:
    """Slow path after a failed bulk dump: keep the records orjson can serialize (with their
    lines), reject the others (a lone surrogate, a non-JSON type) so they go to dead letters."""
    good: list[Record] = []
    lines: list[bytes] = []
    rejections: list[Rejection] = []
    for record in records:
        try:
            lines.append(orjson.dumps(record.doc, option=orjson.OPT_APPEND_NEWLINE))
        except ENCODE_ERRORS as exc:  # orjson.JSONEncodeError is a TypeError
            rejections.append(Rejection(record, f"document is not serializable as JSON: {exc}"))
        else:
            good.append(record)
    return good, lines, rejections


def _arrow_encodable(records: list[Record]) -> tuple[list[Record], list[Rejection]]:
    """Slow path after a failed Parquet encoding: the records that make an Arrow table on
    their own, and a rejection for each other one."""
    from forwarder.sinks.parquet import build_table

    good: list[Record] = []
    rejections: list[Rejection] = []
    for record in records:
        try:
            build_table([record.doc])
        except ENCODE_ERRORS as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            rejections.append(Rejection(record, f"cannot encode as Parquet: {reason}"))
        else:
            good.append(record)
    return good, rejections


class S3Sink(Sink):
    """Writes each batch as objects to S3 (or an S3-compatible endpoint) through boto3."""

    def __init__(
        self,
        spec: SinkSpec,
        *,
        bucket: str,
        prefix: str,
        fmt: str,
        endpoint_url: str | None,
        region: str | None,
        sse: str | None,
        kms_key_id: str | None,
        max_events: int,
        max_bytes: int,
        source: str | None,
        account_id: str | None,
    ) -> None:
        super().__init__(spec)
        self.bucket = bucket
        self.prefix = prefix
        self.format = fmt
        self.endpoint_url = endpoint_url
        self.region = region
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.source = source
        self.account_id = account_id
        self._put_extra: dict[str, str] = {}
        if sse:
            self._put_extra["ServerSideEncryption"] = sse
        if kms_key_id:
            self._put_extra["SSEKMSKeyId"] = kms_key_id
        self._client: Any = None

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> S3Sink:
        spec.reject_unknown(KNOWN_PARAMS)
        netloc = urlsplit(spec.url).netloc  # keeps the bucket's case, unlike spec.host
        if not netloc:
            raise SinkConfigError(f"sink {spec.display}: needs a bucket (s3://BUCKET/PREFIX)")
        if "@" in netloc or ":" in netloc:
            raise SinkConfigError(
                f"sink {spec.display}: no credentials or port in the URL; credentials come "
                "from the AWS chain, a custom endpoint from endpoint_url="
            )
        if not _BUCKET_RE.match(netloc):
            raise SinkConfigError(f"sink {spec.display}: {netloc!r} is not a valid bucket name")
        fmt = spec.choice_param("format", "ndjson", ("ndjson", "parquet"))
        endpoint_url = spec.take("endpoint_url") or None
        if endpoint_url is not None:
            parts = urlsplit(endpoint_url)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise SinkConfigError(
                    f"sink {spec.display}: endpoint_url must be an http(s):// URL"
                )
        sse = spec.take("sse") or None
        kms_key_id = spec.take("kms_key_id") or None
        if sse is not None and sse not in {"aws:kms", "AES256"}:
            raise SinkConfigError(f"sink {spec.display}: sse={sse!r} is not one of aws:kms, AES256")
        if kms_key_id and sse != "aws:kms":
            raise SinkConfigError(f"sink {spec.display}: kms_key_id needs sse=aws:kms")
        region = spec.take("region") or None
        source = spec.take("source")
        account_id = spec.take("account_id")
        if fmt == "parquet":
            from forwarder.sinks.parquet import ParquetUnavailable, import_pyarrow

            if spec.schema != "ocsf":
                raise SinkConfigError(
                    f"sink {spec.display}: format=parquet writes OCSF; "
                    f"set schema=ocsf (not {spec.schema!r})"
                )
            try:
                import_pyarrow()
            except ParquetUnavailable as exc:
                raise SinkConfigError(f"sink {spec.display}: {exc}") from None
            if not source or not _SOURCE_RE.match(source):
                raise SinkConfigError(
                    f"sink {spec.display}: format=parquet needs source=NAME, the Security Lake "
                    "custom source name (letters, digits, - _ . and optionally {class_uid})"
                )
            if not account_id or not _ACCOUNT_RE.match(account_id):
                raise SinkConfigError(
                    f"sink {spec.display}: format=parquet needs account_id= (the AWS account "
                    "id or external id of the custom source)"
                )
            if not region:
                raise SinkConfigError(
                    f"sink {spec.display}: format=parquet needs region= (part of the "
                    "Security Lake path)"
                )
        elif source is not None or account_id is not None:
            raise SinkConfigError(
                f"sink {spec.display}: source= and account_id= apply only to format=parquet"
            )
        return cls(
            spec,
            bucket=netloc,
            prefix=spec.path.strip("/"),
            fmt=fmt,
            endpoint_url=endpoint_url,
            region=region,
            sse=sse,
            kms_key_id=kms_key_id,
            max_events=spec.int_param("max_events", DEFAULT_MAX_EVENTS, minimum=1),
            max_bytes=spec.int_param("max_bytes", DEFAULT_MAX_BYTES, minimum=1),
            source=source,
            account_id=account_id,
        )

    # -- connection -------------------------------------------------------------------------

    def open(self) -> None:
        if self._client is not None:
            return
        config = Config(
            # One attempt per request: `Delivery` retries the batch (its keys are derived from
            # its content, so a retry overwrites) with the one policy, whose sleep wakes on the
            # stop signal; botocore's own retries would multiply that and sleep through SIGTERM.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="openai-audit-forwarder",
        )
        try:
            self._client = boto3.session.Session().client(
                "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        except BotoCoreError as exc:
            raise self._error("CreateClient", exc) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _where(self) -> str:
        if self._client is None:
            return f"region {self.region or 'default'}, endpoint {self.endpoint_url or 'AWS'}"
        return f"region {self._client.meta.region_name}, endpoint {self._client.meta.endpoint_url}"

    def _error(self, operation: str, exc: Exception) -> SinkError:
        """One line naming bucket, operation and cause; never credentials."""
        head = f"s3 bucket {self.bucket}: {operation} failed"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            reason = _PERMANENT.get(code)
            text = f"{head}: {code} (HTTP {status})"
            if reason:
                text += f": {reason}; retrying will not help until that is fixed"
            return SinkError(text, permanent=reason is not None)
        if isinstance(exc, NoCredentialsError):
            return SinkError(
                f"{head}: no AWS credentials found (environment, shared config/SSO, or "
                "instance/container role)",
                permanent=True,
            )
        if isinstance(exc, EndpointConnectionError):
            return SinkError(f"{head}: cannot connect ({self._where()})")
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return SinkError(f"{head}: {type(exc).__name__}: {first_line} ({self._where()})")

    def _call(self, operation: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        self.open()
        try:
            return method(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(operation, exc) from exc

    def check(self) -> str:
        self.open()
        self._call("HeadBucket", self._client.head_bucket, Bucket=self.bucket)
        layout = (
            f"Security Lake parquet under {self._lake_root()}"
            if self.format == "parquet"
            else f"gzip NDJSON under {self._join(self.schema)}/"
        )
        return f"s3://{self.bucket}: bucket reachable ({self._where()}); {layout}"

    # -- writing ----------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        if not records:
            return []
        self.open()
        # Sorted by time then id: objects and keys do not depend on arrival order, and
        # Security Lake asks for time-sorted objects.
        ordered = sorted(records, key=lambda r: (r.effective_at, r.id))
        if self.format == "parquet":
            try:
                rejections, objects = self._parquet_objects(ordered, [])
            except ENCODE_ERRORS:  # a document JSON/Arrow cannot encode: reject it alone
                good, rejections = _arrow_encodable(ordered)
                rejections, objects = self._parquet_objects(good, rejections)
        else:
            try:
                newline = orjson.OPT_APPEND_NEWLINE
                rejections, lines = [], [orjson.dumps(r.doc, option=newline) for r in ordered]
            except ENCODE_ERRORS:
                ordered, lines, rejections = _serializable(ordered)
            objects = self._ndjson_objects(ordered, lines) if ordered else []
        for key, body, content_type in objects:
            self._call(
                "PutObject",
                self._client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                **self._put_extra,
            )
        return rejections

    def _join(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _ndjson_objects(
        self, ordered: list[Record], lines: list[bytes]
    ) -> list[tuple[str, bytes, str]]:
        sizes = [len(line) for line in lines]
        objects: list[tuple[str, bytes, str]] = []
        offset = 0
        for day, group in _by_day(ordered):
            dt = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
            group_sizes = sizes[offset : offset + len(group)]
            for start, end in _chunks(group, group_sizes, self.max_events, self.max_bytes):
                chunk = group[start:end]
                body = b"".join(lines[offset + start : offset + end])
                # mtime=0 and no file name: a retry produces identical bytes.
                data = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
                key = self._join(self.schema, f"dt={dt}", f"{_content_name(chunk)}.ndjson.gz")
                objects.append((key, data, "application/gzip"))
            offset += len(group)
        return objects

    def _lake_root(self) -> str:
        return self._join("ext", self._source_name("{class_uid}")) + "/"

    def _source_name(self, class_uid: str) -> str:
        assert self.source is not None
        if "{class_uid}" in self.source:
            return self.source.replace("{class_uid}", class_uid)
        return f"{self.source}-{class_uid}"

    def _parquet_objects(
        self, ordered: list[Record], rejections: list[Rejection]
    ) -> tuple[list[Rejection], list[tuple[str, bytes, str]]]:
        groups: dict[tuple[int, int], list[Record]] = {}
        for record in ordered:
            class_uid = record.doc.get("class_uid")
            if type(class_uid) is not int:
                rejections.append(
                    Rejection(record, "OCSF document has no integer class_uid (Parquet needs one)")
                )
                continue
            groups.setdefault((class_uid, record.effective_at // 86400), []).append(record)
        objects: list[tuple[str, bytes, str]] = []
        for (class_uid, day), group in sorted(groups.items()):
            event_day = time.strftime("%Y%m%d", time.gmtime(day * 86400))
            for start in range(0, len(group), self.max_events):
                for chunk, body in self._bounded_parquet(group[start : start + self.max_events]):
                    key = self._join(
                        "ext",
                        self._source_name(str(class_uid)),
                        f"region={self.region}",
                        f"accountId={self.account_id}",
                        f"eventDay={event_day}",
                        f"{_content_name(chunk)}.parquet",
                    )
                    objects.append((key, body, "application/vnd.apache.parquet"))
        return rejections, objects

    def _bounded_parquet(self, chunk: list[Record]) -> Iterator[tuple[list[Record], bytes]]:
        """Encode `chunk`; halve it while the file exceeds max_bytes (the size of a Parquet
        file is known only once encoded; halving keeps the split deterministic)."""
        from forwarder.sinks.parquet import to_parquet_bytes

        body = to_parquet_bytes([record.doc for record in chunk])
        if len(body) <= self.max_bytes or len(chunk) == 1:
            yield chunk, body
            return
        middle = len(chunk) // 2
        yield from self._bounded_parquet(chunk[:middle])
        yield from self._bounded_parquet(chunk[middle:])
