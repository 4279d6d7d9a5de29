"""OCSF documents as Parquet for the S3 sink (Security Lake): one fixed Arrow schema for every
class, with a lossless split of each document into typed columns, JSON columns and a remainder.

The schema (documented in docs/sink-s3.md):
- OCSF scalar attributes of the IAM classes and API Activity as typed columns
  (integer_t -> int32, long_t/timestamp_t -> int64, boolean_t -> bool, strings -> string);
- `metadata` as a struct of its scalar attributes plus `product`;
- every other known object or array attribute (`actor`, `user`, `api`, `unmapped`, ...) as a
  JSON string column of the same name, because their shape varies with the event;
- `forwarder_extra`: a JSON object holding whatever the columns above cannot hold (an unknown
  attribute, a value of an unexpected type, an unknown key inside `metadata`), in the shape of
  the document, so that `documents_from_table` rebuilds every document exactly.

pyarrow is an optional dependency: it is imported only when Parquet output is used.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from types import ModuleType
from typing import Any

import orjson

EXTRA_COLUMN = "forwarder_extra"
PARQUET_EXTRA_HINT = "pip install 'openai-audit-forwarder[parquet]'"

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# Scalar kinds.
STR, I32, I64, BOOL, STR_LIST = "str", "i32", "i64", "bool", "str_list"

SCALAR_COLUMNS: dict[str, str] = {
    "class_uid": I32,
    "class_name": STR,
    "category_uid": I32,
    "category_name": STR,
    "activity_id": I32,
    "activity_name": STR,
    "type_uid": I64,
    "type_name": STR,
    "time": I64,
    "time_dt": STR,
    "severity_id": I32,
    "severity": STR,
    "status_id": I32,
    "status": STR,
    "status_code": STR,
    "status_detail": STR,
    "message": STR,
    "action_id": I32,
    "action": STR,
    "disposition_id": I32,
    "disposition": STR,
    "start_time": I64,
    "start_time_dt": STR,
    "end_time": I64,
    "end_time_dt": STR,
    "duration": I64,
    "count": I32,
    "timezone_offset": I32,
    "confidence_id": I32,
    "confidence": STR,
    "confidence_score": I32,
    "risk_level_id": I32,
    "risk_level": STR,
    "risk_score": I32,
    "risk_details": STR,
    "is_alert": BOOL,
    "is_mfa": BOOL,
    "is_remote": BOOL,
    "is_new_logon": BOOL,
    "is_cleartext": BOOL,
    "logon_type_id": I32,
    "logon_type": STR,
    "auth_protocol_id": I32,
    "auth_protocol": STR,
    "account_switch_type_id": I32,
    "account_switch_type": STR,
    "access_mask": I32,
    "comment": STR,
    "raw_data": STR,
    "raw_data_size": I64,
}

# `metadata` as a struct: its stable scalar attributes and the product object.
METADATA_FIELDS: dict[str, Any] = {
    "version": STR,
    "uid": STR,
    "original_event_uid": STR,
    "correlation_uid": STR,
    "event_code": STR,
    "tenant_uid": STR,
    "log_name": STR,
    "log_provider": STR,
    "log_source": STR,
    "log_format": STR,
    "log_version": STR,
    "log_level": STR,
    "logged_time": I64,
    "logged_time_dt": STR,
    "processed_time": I64,
    "processed_time_dt": STR,
    "modified_time": I64,
    "original_time": STR,
    "sequence": I64,
    "source": STR,
    "type": STR,
    "is_truncated": BOOL,
    "untruncated_size": I64,
    "profiles": STR_LIST,
    "labels": STR_LIST,
    "product": {
        "name": STR,
        "vendor_name": STR,
        "version": STR,
        "uid": STR,
        "lang": STR,
        "path": STR,
        "cpe_name": STR,
        "url_string": STR,
    },
}

# Objects and arrays whose shape varies by event: one JSON string column each.
JSON_COLUMNS: tuple[str, ...] = (
    "actor",
    "user",
    "user_result",
    "entity",
    "entity_result",
    "group",
    "subgroup",
    "resource",
    "resources",
    "api",
    "src_endpoint",
    "dst_endpoint",
    "http_request",
    "http_response",
    "session",
    "service",
    "cloud",
    "device",
    "policy",
    "policies",
    "privileges",
    "access_list",
    "auth_factors",
    "authentication_token",
    "authorizations",
    "certificate",
    "logon_process",
    "ai_model",
    "message_context",
    "trace",
    "observables",
    "enrichments",
    "attacks",
    "malware",
    "malware_scan_info",
    "firewall_rule",
    "osint",
    "raw_data_hash",
    "unmapped",
)
_JSON_SET = frozenset(JSON_COLUMNS)


class ParquetUnavailable(ImportError):
    """pyarrow is not installed."""


def import_pyarrow() -> tuple[ModuleType, ModuleType]:
    """Import pyarrow and pyarrow.parquet, or raise ParquetUnavailable naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ParquetUnavailable(
            f"format=parquet needs pyarrow, which is not installed ({PARQUET_EXTRA_HINT})"
        ) from exc
    return pyarrow, pyarrow.parquet


def _arrow_type(pa: ModuleType, kind: Any) -> Any:
    if isinstance(kind, dict):
        return pa.struct([pa.field(name, _arrow_type(pa, sub)) for name, sub in kind.items()])
    return {
        STR: pa.string(),
        I32: pa.int32(),
        I64: pa.int64(),
        BOOL: pa.bool_(),
        STR_LIST: pa.list_(pa.string()),
    }[kind]


@cache
def arrow_schema() -> Any:
    """The one Arrow schema every Parquet object has (same columns for every OCSF class)."""
    pa, _ = import_pyarrow()
    fields = [pa.field(name, _arrow_type(pa, kind)) for name, kind in SCALAR_COLUMNS.items()]
    fields.append(pa.field("metadata", _arrow_type(pa, METADATA_FIELDS)))
    fields.extend(pa.field(name, pa.string()) for name in JSON_COLUMNS)
    fields.append(pa.field(EXTRA_COLUMN, pa.string()))
    return pa.schema(fields)


def _fits(kind: str, value: Any) -> bool:
    if kind == STR:
        return type(value) is str
    if kind == I32:
        return type(value) is int and _INT32_MIN <= value <= _INT32_MAX
    if kind == I64:
        return type(value) is int and _INT64_MIN <= value <= _INT64_MAX
    if kind == BOOL:
        return type(value) is bool
    if kind == STR_LIST:
        return type(value) is list and all(type(item) is str for item in value)
    return False


# Top-level scalar checks without a call per attribute: name -> (type, min, max).
_PY_TYPES = {STR: str, I32: int, I64: int, BOOL: bool}
_BOUNDS = {I32: (_INT32_MIN, _INT32_MAX), I64: (_INT64_MIN, _INT64_MAX)}
_SCALAR_CHECKS: dict[str, tuple[type, int | None, int | None]] = {
    name: (_PY_TYPES[kind], *_BOUNDS.get(kind, (None, None)))
    for name, kind in SCALAR_COLUMNS.items()
}


def _conform(value: Any, fields: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
    """Split an object into the part the struct holds and the remainder (None when empty)."""
    if type(value) is not dict:
        return None, value
    kept: dict[str, Any] = {}
    left: dict[str, Any] = {}
    for key, item in value.items():
        kind = fields.get(key)
        if item is None:
            continue
        if kind is None:
            left[key] = item
        elif isinstance(kind, dict):
            sub_kept, sub_left = _conform(item, kind)
            if sub_kept is not None:
                kept[key] = sub_kept
            if sub_left is not None:
                left[key] = sub_left
        elif _fits(kind, item):
            kept[key] = item
        else:
            left[key] = item
    return kept, (left or None)


def build_table(docs: Sequence[dict[str, Any]]) -> Any:
    """Arrow table of `docs` in the fixed schema; nothing in a document is dropped, except
    attributes whose value is null (null and absent read back the same)."""
    pa, _ = import_pyarrow()
    schema = arrow_schema()
    n = len(docs)
    scalars: dict[str, list[Any]] = {name: [None] * n for name in SCALAR_COLUMNS}
    objects: dict[str, list[Any]] = {name: [None] * n for name in JSON_COLUMNS}
    metadata: list[Any] = [None] * n
    extras: list[Any] = [None] * n
    dumps = orjson.dumps  # UTF-8 bytes: Arrow takes them as they are for string columns
    for i, doc in enumerate(docs):
        extra: dict[str, Any] | None = None
        for key, value in doc.items():
            if value is None:
                continue
            check = _SCALAR_CHECKS.get(key)
            if (
                check is not None
                and type(value) is check[0]
                and (check[1] is None or check[1] <= value <= check[2])  # type: ignore[operator]
            ):
                scalars[key][i] = value
                continue
            if key in _JSON_SET:
                objects[key][i] = dumps(value)
                continue
            if key == "metadata":
                kept, left = _conform(value, METADATA_FIELDS)
                metadata[i] = kept
                if left is None:
                    continue
                value = left
            if extra is None:
                extra = {}
            extra[key] = value
        if extra is not None:
            extras[i] = dumps(extra)
    arrays: list[Any] = [pa.array(scalars[name], type=schema.field(name).type) for name in scalars]
    arrays.append(pa.array(metadata, type=schema.field("metadata").type))
    arrays.extend(pa.array(objects[name], type=pa.string()) for name in JSON_COLUMNS)
    arrays.append(pa.array(extras, type=pa.string()))
    return pa.Table.from_arrays(arrays, schema=schema)


def to_parquet_bytes(docs: Sequence[dict[str, Any]]) -> bytes:
    """One Parquet file (zstd) holding `docs` in order."""
    _, pq = import_pyarrow()
    sink = io.BytesIO()
    pq.write_table(build_table(docs), sink, compression="zstd")
    return sink.getvalue()


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        current = into.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value)
        else:
            into[key] = value


def documents_from_table(table: Any) -> list[dict[str, Any]]:
    """Rebuild the documents from a table written by `build_table` (for readers and replay)."""
    docs: list[dict[str, Any]] = []
    for row in table.to_pylist():
        doc: dict[str, Any] = {}
        extra = row.pop(EXTRA_COLUMN, None)
        for key, value in row.items():
            if value is None:
                continue
            if key in _JSON_SET:
                doc[key] = orjson.loads(value)
            elif key == "metadata":
                doc[key] = _drop_nulls(value)
            else:
                doc[key] = value
        if extra is not None:
            _merge(doc, orjson.loads(extra))
        docs.append(doc)
    return docs
