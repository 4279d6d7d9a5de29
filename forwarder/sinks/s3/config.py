"""The parameters of an `s3://BUCKET/PREFIX` sink URL, checked when the sink is built: a bad
one is a `SinkConfigError` (exit 2) naming it, never a failure at the first write.

Security Lake (`format=parquet`) takes custom sources in OCSF up to 1.3 (AWS's custom-source
documentation, docs/sink-s3.md): its documents default to the newest of those, 1.3.0, and a
version it does not take is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from forwarder.sinks.base import SinkConfigError, SinkSpec
from forwarder.timeparse import parse_duration

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
    "flush_interval",
    "flush_bytes",
    "spool",
}
DEFAULT_MAX_EVENTS = 50_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_FLUSH_INTERVAL = 300.0  # Security Lake: objects every 5 minutes to 1 day
DEFAULT_FLUSH_BYTES = 64 * 1024 * 1024
# The OCSF versions Security Lake takes for custom sources, and the default (the newest).
LAKE_VERSIONS = ("1.1.0", "1.2.0", "1.3.0")
LAKE_DEFAULT_VERSION = LAKE_VERSIONS[-1]

# A Security Lake custom source name, optionally with `{class_uid}`.
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_.\-]*(\{class_uid\})?[A-Za-z0-9_.\-]*$")
# The `accountId=` partition: an AWS account id, or `external_<id>` for a source outside AWS.
_ACCOUNT_RE = re.compile(r"^(\d{12}|external_[A-Za-z0-9_.\-]+)$")
# S3 bucket names (3-63 lowercase letters, digits, dots, hyphens; older buckets may have more).
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]$")


@dataclass(frozen=True)
class S3Config:
    spec: SinkSpec
    bucket: str
    prefix: str
    format: str
    endpoint_url: str | None
    region: str | None
    put_extra: dict[str, str]
    max_events: int
    max_bytes: int
    source: str | None = None
    account_id: str | None = None
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    flush_bytes: int = DEFAULT_FLUSH_BYTES
    spool: Path | None = None


def parse(spec: SinkSpec, spool_root: Path | None) -> S3Config:
    spec.reject_unknown(KNOWN_PARAMS)
    netloc = urlsplit(spec.url).netloc  # keeps the bucket's case, unlike spec.host
    where = f"sink {spec.display}"
    if not netloc:
        raise SinkConfigError(f"{where}: needs a bucket (s3://BUCKET/PREFIX)")
    if "@" in netloc or ":" in netloc:
        raise SinkConfigError(
            f"{where}: no credentials or port in the URL; credentials come "
            "from the AWS chain, a custom endpoint from endpoint_url="
        )
    if not _BUCKET_RE.match(netloc):
        raise SinkConfigError(f"{where}: {netloc!r} is not a valid bucket name")
    fmt = spec.choice_param("format", "ndjson", ("ndjson", "parquet"))
    endpoint_url = spec.take("endpoint_url") or None
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise SinkConfigError(f"{where}: endpoint_url must be an http(s):// URL")
    sse = spec.take("sse") or None
    kms_key_id = spec.take("kms_key_id") or None
    if sse is not None and sse not in {"aws:kms", "AES256"}:
        raise SinkConfigError(f"{where}: sse={sse!r} is not one of aws:kms, AES256")
    if kms_key_id and sse != "aws:kms":
        raise SinkConfigError(f"{where}: kms_key_id needs sse=aws:kms")
    put_extra = {}
    if sse:
        put_extra["ServerSideEncryption"] = sse
    if kms_key_id:
        put_extra["SSEKMSKeyId"] = kms_key_id
    config = S3Config(
        spec=spec,
        bucket=netloc,
        prefix=spec.path.strip("/"),
        format=fmt,
        endpoint_url=endpoint_url,
        region=spec.take("region") or None,
        put_extra=put_extra,
        max_events=spec.int_param("max_events", DEFAULT_MAX_EVENTS, minimum=1),
        max_bytes=spec.int_param("max_bytes", DEFAULT_MAX_BYTES, minimum=1),
    )
    if fmt == "parquet":
        return _lake(config, spool_root)
    lake_only = {"source", "account_id", "flush_interval", "flush_bytes", "spool"}
    given = sorted(lake_only & set(spec.params))
    if given:
        raise SinkConfigError(f"{where}: {given[0]}= applies only to format=parquet")
    return config


def _lake(config: S3Config, spool_root: Path | None) -> S3Config:
    """The Security Lake settings of a format=parquet sink."""
    from forwarder.sinks.s3.ocsf_arrow import ParquetUnavailable, import_pyarrow

    spec = config.spec
    where = f"sink {spec.display}"
    if spec.schema != "ocsf":
        raise SinkConfigError(
            f"{where}: format=parquet writes OCSF; set schema=ocsf (not {spec.schema!r})"
        )
    try:
        import_pyarrow()
    except ParquetUnavailable as exc:
        raise SinkConfigError(f"{where}: {exc}") from None
    version = spec.ocsf_version or LAKE_DEFAULT_VERSION
    if version not in LAKE_VERSIONS:
        raise SinkConfigError(
            f"{where}: Security Lake takes OCSF {', '.join(LAKE_VERSIONS)} for custom "
            f"sources, not {version}; set ocsf_version={LAKE_DEFAULT_VERSION} on this sink"
        )
    source = spec.take("source")
    if not source or not _SOURCE_RE.match(source):
        raise SinkConfigError(
            f"{where}: format=parquet needs source=NAME, the Security Lake "
            "custom source name (letters, digits, - _ . and optionally {class_uid})"
        )
    account_id = spec.take("account_id")
    if not account_id or not _ACCOUNT_RE.match(account_id):
        raise SinkConfigError(
            f"{where}: format=parquet needs account_id=external_<id> (the external id of "
            "the custom source, e.g. external_<OpenAI org id>) or a 12-digit AWS account id"
        )
    if not config.region:
        raise SinkConfigError(
            f"{where}: format=parquet needs region= (part of the Security Lake path)"
        )
    raw_interval = spec.take("flush_interval")
    try:
        interval = DEFAULT_FLUSH_INTERVAL if raw_interval is None else parse_duration(raw_interval)
    except ValueError as exc:
        raise SinkConfigError(f"{where}: flush_interval: {exc}") from None
    if not 0 <= interval <= 86_400:
        raise SinkConfigError(f"{where}: flush_interval must be between 0s and 1d")
    spool = spec.take("spool")
    spool_dir = Path(spool) if spool else spool_root
    if spool_dir is None:
        raise SinkConfigError(f"{where}: format=parquet needs a spool directory (spool=DIR)")
    return replace(
        config,
        spec=replace(spec, ocsf_version=version),
        source=source,
        account_id=account_id,
        flush_interval=interval,
        flush_bytes=spec.int_param("flush_bytes", DEFAULT_FLUSH_BYTES, minimum=1),
        spool=spool_dir,
    )
