"""OCSF documents as typed Arrow rows for Security Lake: one Arrow schema per OCSF class and
version, derived from the official class schema, and the conversion of documents into it.

The schema (docs/sink-s3.md, "Parquet schema"):
- every attribute of the class as a column of its own. An attribute that only a profile adds
  gets one where OCSF 1.8.0 (what the mapping renders) has it outright, since our documents
  may carry it (`actor` of Entity Management is a `host` profile attribute up to 1.4), and for
  the `datetime` profile (the `*_dt` timestamps AWS's sources write); the other profiles'
  attributes (`device`, `cloud`, `api`, `osint`, ...) are never in our documents, and would
  double the width;
- objects as structs and arrays as lists, expanded to MAX_OBJECT_DEPTH levels of objects
  (`actor` 1, `actor.user` 2; `actor.user.groups` would be 3), never expanding an object inside
  one of its own type (`process.parent_process`), and leaving out objects that end up with no
  field. That holds every attribute our documents use (a test checks it on the golden events)
  at a fixed width of a few hundred leaf columns;
- types as AWS's own Security Lake sources write them: integer_t (enum ids) int32, long_t
  int64 (`type_uid`), timestamp_t int64 epoch milliseconds (`time`), datetime_t (`*_dt`)
  timestamp[ms, UTC], float_t double, boolean_t bool, the string types string; json_t (and
  only json_t) JSON text; the free-form `unmapped` (and other schemaless objects)
  map<string, string>, flattened to dotted keys;
- no column outside OCSF: an attribute the schema leaves out (deeper than the depth limit, or
  a value of another type than declared) moves into `unmapped` under its dotted path, so
  nothing is lost.

Rows also carry `time_dt` (= `time`) and declare the `datetime` profile, as AWS's sources do,
so that Athena can filter on a timestamp. pyarrow is imported only when Parquet is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from types import ModuleType
from typing import Any

import orjson

from mappings.ocsf_versions import (
    NATIVE_VERSION,
    attribute_profiles,
    classes_by_uid,
    official_schema,
)

PARQUET_EXTRA_HINT = "pip install 'openai-audit-forwarder[parquet]'"
MAX_OBJECT_DEPTH = 2
# Columns only the spool holds (for keys and sorting), dropped before the Parquet file.
SPOOL_ID, SPOOL_TIME = "_spool_id", "_spool_effective_at"

# Kinds of values: scalars, JSON text, a flattened map; structs are dicts, lists are 1-tuples.
STR, I32, I64, F64, BOOL, TS, JSON, MAP = "str", "i32", "i64", "f64", "bool", "ts", "json", "map"
_BASE_KINDS = {
    "string_t": STR,
    "integer_t": I32,
    "long_t": I64,
    "timestamp_t": I64,
    "datetime_t": TS,
    "float_t": F64,
    "boolean_t": BOOL,
    "json_t": JSON,
}
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class ParquetUnavailable(ImportError):
    """pyarrow is not installed."""


def import_pyarrow() -> ModuleType:
    """pyarrow (with pyarrow.parquet loaded), or ParquetUnavailable naming the extra."""
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError as exc:
        raise ParquetUnavailable(
            f"format=parquet needs pyarrow, which is not installed ({PARQUET_EXTRA_HINT})"
        ) from exc
    return pyarrow


def _kind_of(type_name: str, types: dict[str, Any]) -> str:
    """The kind of a scalar OCSF type: its own, or that of the base type it refines."""
    kind = _BASE_KINDS.get(type_name)
    if kind is None:
        base = types.get(type_name, {}).get("type")
        kind = _BASE_KINDS.get(base or "", STR)
    return kind


def _kept(name: str, spec: dict[str, Any], native: dict[str, Any] | None) -> bool:
    """Whether an attribute gets a column: always, unless only a profile adds it; then where
    the native version (what documents are made in) has it outright, or for `datetime`."""
    profiles = attribute_profiles(spec)
    if not profiles or "datetime" in profiles:
        return True
    theirs = (native or {}).get(name)
    return theirs is not None and not attribute_profiles(theirs)


def _shape(
    attributes: dict[str, Any],
    native: dict[str, Any] | None,
    schema: dict[str, Any],
    depth: int,
    path: frozenset,
) -> dict:
    objects, types = schema["objects"], schema.get("types", {})
    native_objects = official_schema(NATIVE_VERSION)["objects"]
    shape: dict[str, Any] = {}
    for name, spec in sorted(attributes.items()):
        if not _kept(name, spec, native):
            continue
        if spec["type"] == "object_t":
            object_type = spec["object_type"]
            nested = objects[object_type].get("attributes")
            if not nested:
                kind: Any = MAP  # schemaless (`unmapped`, `xattributes`)
            elif depth >= MAX_OBJECT_DEPTH or object_type in path:
                continue
            else:
                theirs = native_objects.get(object_type, {}).get("attributes")
                kind = _shape(nested, theirs, schema, depth + 1, path | {object_type})
                if not kind:
                    continue
        else:
            kind = _kind_of(spec["type"], types)
        shape[name] = (kind,) if spec.get("is_array") else kind
    return shape


@cache
def class_shape(class_uid: int, version: str) -> dict[str, Any]:
    """The pruned attribute tree of a class (see the module docstring); KeyError for a class
    the version does not have."""
    cls = classes_by_uid(version)[class_uid]
    native = classes_by_uid(NATIVE_VERSION).get(class_uid, {}).get("attributes")
    return _shape(cls["attributes"], native, official_schema(version), 0, frozenset())


def _arrow_type(pa: ModuleType, kind: Any) -> Any:
    if isinstance(kind, dict):
        return pa.struct([pa.field(n, _arrow_type(pa, k)) for n, k in kind.items()])
    if isinstance(kind, tuple):
        return pa.list_(_arrow_type(pa, kind[0]))
    return {
        STR: pa.string(),
        I32: pa.int32(),
        I64: pa.int64(),
        F64: pa.float64(),
        BOOL: pa.bool_(),
        TS: pa.timestamp("ms", tz="UTC"),
        JSON: pa.string(),
        MAP: pa.map_(pa.string(), pa.string()),
    }[kind]


@cache
def arrow_schema(class_uid: int, version: str) -> Any:
    """The Arrow schema of every Parquet object of this class and OCSF version."""
    pa = import_pyarrow()
    shape = class_shape(class_uid, version)
    return pa.schema([pa.field(n, _arrow_type(pa, k)) for n, k in shape.items()])


@cache
def spool_schema(class_uid: int, version: str) -> Any:
    """`arrow_schema` plus the spool's own columns (the record id and its effective_at)."""
    pa = import_pyarrow()
    schema = arrow_schema(class_uid, version)
    return schema.append(pa.field(SPOOL_ID, pa.string())).append(pa.field(SPOOL_TIME, pa.int64()))


def flatten(value: Any, prefix: str, into: dict[str, str]) -> None:
    """`unmapped` as map<string, string>: each leaf under its dotted path (`a.b`, list items
    `a[0]`), strings as they are, other values as JSON (`12`, `true`, `null`, `{}`)."""
    if type(value) is dict and value:
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}" if prefix else str(key), into)
    elif type(value) is list and value:
        for i, item in enumerate(value):
            flatten(item, f"{prefix}[{i}]", into)
    elif type(value) is str:
        into[prefix] = value
    else:
        into[prefix] = orjson.dumps(value).decode()


_PY_TYPES = {STR: (str,), I32: (int,), I64: (int,), TS: (int,), F64: (float, int), BOOL: (bool,)}
_RANGES = {I32: _INT32, I64: _INT64, TS: _INT64, F64: _INT64}
_LIST_TYPES = {kind: set(types) for kind, types in _PY_TYPES.items()}


def _fits(kind: str, value: Any) -> bool:
    if type(value) not in _PY_TYPES[kind]:
        return False
    bounds = _RANGES.get(kind)
    return bounds is None or type(value) is float or bounds[0] <= value <= bounds[1]


def _all_fit(kind: str, items: list) -> bool:
    """`_fits` for every item, with the type checks done by C loops (lists are hot: every
    document has `metadata.profiles`)."""
    types = set(map(type, items))
    if not types <= _LIST_TYPES[kind]:
        return False
    bounds = _RANGES.get(kind)
    if bounds is None or int not in types:
        return True
    ints = items if float not in types else [item for item in items if type(item) is int]
    return bounds[0] <= min(ints) and max(ints) <= bounds[1]


# How the walk treats a field: a scalar of one Python type (and range), a number, JSON text,
# a flattened map, a struct, a list.
_SCALAR, _NUMBER, _JSON, _MAP, _STRUCT, _LIST = range(6)


class _Node:
    """A struct of the shape, compiled for the walk: per field name a tuple (how, slot, then
    what `how` needs, the dotted name); `slot` numbers the columns of a batch."""

    __slots__ = ("fields", "prefix", "slot")

    def __init__(self, shape: dict[str, Any], path: tuple[str, ...], slots: dict) -> None:
        self.slot = slots.setdefault(path, len(slots))
        self.prefix = "".join(f"{name}." for name in path)
        self.fields: dict[str, tuple] = {}
        for name, kind in shape.items():
            where = (*path, name)
            dotted = ".".join(where)
            if type(kind) is dict:
                self.fields[name] = (_STRUCT, 0, _Node(kind, where, slots), None, None, dotted)
                continue
            slot = slots.setdefault(where, len(slots))
            if type(kind) is tuple:
                entry: tuple = (_LIST, slot, kind[0], None, None, dotted)
            elif kind == JSON:
                entry = (_JSON, slot, None, None, None, dotted)
            elif kind == MAP:
                entry = (_MAP, slot, None, None, None, dotted)
            elif kind == F64:
                entry = (_NUMBER, slot, None, *_INT64, dotted)
            else:
                bounds = _RANGES.get(kind, (None, None))
                entry = (_SCALAR, slot, _PY_TYPES[kind][0], *bounds, dotted)
            self.fields[name] = entry


@cache
def _compiled(class_uid: int, version: str) -> tuple[_Node, dict[tuple[str, ...], int]]:
    slots: dict[tuple[str, ...], int] = {}
    return _Node(class_shape(class_uid, version), (), slots), slots


def _walk(value: dict[str, Any], node: _Node, i: int, n: int, columns: list, left: dict) -> None:
    """Put row `i`'s part of `value` that the node holds into `columns` (by slot: a list of
    values, or for a struct of which rows have it); the rest into `left` under its dotted
    path. Hot: one call per object of every document."""
    rows = columns[node.slot]
    if rows is None:
        rows = columns[node.slot] = [False] * n
    rows[i] = True
    fields = node.fields
    for key, item in value.items():
        if item is None:
            continue
        field = fields.get(key)
        if field is None:
            left[node.prefix + key] = item
            continue
        how = field[0]
        if how == _SCALAR:
            if type(item) is not field[2] or (
                field[3] is not None and not field[3] <= item <= field[4]
            ):
                left[field[5]] = item
                continue
        elif how == _STRUCT:
            if type(item) is dict:
                _walk(item, field[2], i, n, columns, left)
            else:
                left[field[5]] = item
            continue
        elif how == _JSON:
            item = orjson.dumps(item).decode()
        elif how == _MAP:
            if type(item) is not dict:
                left[field[5]] = item
                continue
            flat: dict[str, str] = {}
            flatten(item, "", flat)
            item = flat
        elif how == _NUMBER:
            if type(item) is not float and (
                type(item) is not int or not field[3] <= item <= field[4]
            ):
                left[field[5]] = item
                continue
        else:
            item = _conform_list(item, field[2], field[5], left)
            if item is None:
                continue
        column = columns[field[1]]
        if column is None:
            column = columns[field[1]] = [None] * n
        column[i] = item


def _column(columns: list, slot: int, n: int, empty: Any = None) -> list:
    """The batch's column (list of n values) at `slot`, made on first use."""
    column = columns[slot]
    if column is None:
        column = columns[slot] = [empty] * n
    return column


def _array(
    pa: ModuleType, kind: Any, arrow_type: Any, path: tuple, n: int, columns: list, slots: dict
) -> Any:
    """The Arrow array of the column (or struct of columns) at `path`, without the fields no
    row has (a struct keeps at least one, for its length); None when no row has it."""
    values = columns[slots[path]]
    if values is None:
        return None
    if type(kind) is dict:
        fields, children = [], []
        for name, sub in kind.items():
            field = arrow_type.field(name)
            child = _array(pa, sub, field.type, (*path, name), n, columns, slots)
            if child is not None:
                fields.append(field.with_type(child.type))
                children.append(child)
        if not children:
            fields, children = [arrow_type.field(0)], [pa.nulls(n, arrow_type.field(0).type)]
        absent = pa.compute.invert(pa.array(values, type=pa.bool_()))
        return pa.StructArray.from_arrays(children, fields=fields, mask=absent)
    if kind == MAP:
        return _map_array(pa, values, arrow_type)
    return pa.array(values, type=arrow_type)


def _map_array(pa: ModuleType, rows: list, arrow_type: Any) -> Any:
    """A map<string, string> column from its rows' flat dicts (None: null), built from one
    list of keys and one of values: half the time pyarrow takes to convert the dicts."""
    keys: list[str] = []
    items: list[str] = []
    offsets = [0]
    for row in rows:
        if row is not None:
            keys.extend(row)
            items.extend(row.values())
        offsets.append(len(keys))
    absent = [row is None for row in rows]
    return pa.MapArray.from_arrays(
        pa.array(offsets, type=pa.int32()),
        pa.array(keys, type=pa.string()),
        pa.array(items, type=pa.string()),
        type=arrow_type,
        mask=pa.array(absent, type=pa.bool_()) if any(absent) else None,
    )


def _conform_list(items: Any, kind: Any, where: str, left: dict) -> list | None:
    """The items of an array attribute as the list column takes them, or None (and the
    whole array in `left`) when it is not an array of what the column holds."""
    if type(items) is not list:
        left[where] = items
        return None
    if type(kind) is dict:
        if all(type(item) is dict for item in items):
            return [_conform(item, kind, f"{where}[{i}].", left) for i, item in enumerate(items)]
    elif kind == JSON:
        return [orjson.dumps(item).decode() for item in items]
    elif kind != MAP and _all_fit(kind, items):
        return items
    left[where] = items
    return None


def _conform(value: dict[str, Any], shape: dict[str, Any], prefix: str, left: dict) -> dict:
    """An object inside an array, as its list<struct> column takes it (a copy); what the shape
    does not hold goes to `left` under its dotted path."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = shape.get(key)
        if item is None:
            continue
        if kind is None:
            left[prefix + key] = item
        elif type(kind) is dict:
            if type(item) is dict:
                out[key] = _conform(item, kind, f"{prefix}{key}.", left)
            else:
                left[prefix + key] = item
        elif type(kind) is tuple:
            items = _conform_list(item, kind[0], prefix + key, left)
            if items is not None:
                out[key] = items
        elif kind == JSON:
            out[key] = orjson.dumps(item).decode()
        elif kind == MAP and type(item) is dict:
            flat: dict[str, str] = {}
            flatten(item, "", flat)
            out[key] = flat
        elif kind != MAP and _fits(kind, item):
            out[key] = item
        else:
            left[prefix + key] = item
    return out


def record_batch(
    docs: Sequence[dict[str, Any]],
    ids: Sequence[str],
    times: Sequence[int],
    class_uid: int,
    version: str,
) -> Any:
    """The spool's record batch of documents of one class: each a row of `arrow_schema` with
    `time_dt` and the `datetime` profile, and what the schema leaves out flattened into
    `unmapped` (ENCODE_ERRORS when a document cannot be encoded: a lone surrogate, say).
    The batch has only the fields its rows have (the schema is a few hundred mostly empty
    leaves: null columns were most of the spool's bytes and time); `full_table` restores the
    others."""
    pa = import_pyarrow()
    shape = class_shape(class_uid, version)
    schema = spool_schema(class_uid, version)
    root, slots = _compiled(class_uid, version)
    n = len(docs)
    columns: list[Any] = [None] * len(slots)
    unmapped_slot = slots.get(("unmapped",))
    time_slot, time_dt_slot = slots.get(("time",)), slots.get(("time_dt",))
    profiles_slot = slots.get(("metadata", "profiles"))
    metadata_slot = slots.get(("metadata",))
    with_dt = time_slot is not None and time_dt_slot is not None and profiles_slot is not None
    for i, doc in enumerate(docs):
        left: dict[str, Any] = {}
        _walk(doc, root, i, n, columns, left)
        if left:
            if unmapped_slot is None:
                raise ValueError(f"OCSF {version} class {class_uid} has no unmapped attribute")
            unmapped = columns[unmapped_slot]
            if unmapped is None:
                unmapped = columns[unmapped_slot] = [None] * n
            flat = dict(unmapped[i]) if unmapped[i] else {}
            for where, value in left.items():
                flatten(value, where, flat)
            unmapped[i] = flat
        if with_dt and "time_dt" not in doc:
            times_ms = columns[time_slot]
            if times_ms is not None and times_ms[i] is not None:
                _column(columns, time_dt_slot, n)[i] = times_ms[i]
                # The profiles the row has (None when they were not a list of strings: they
                # went to `unmapped`), and `datetime`.
                profiles = _column(columns, profiles_slot, n)
                if not profiles[i] or "datetime" not in profiles[i]:
                    profiles[i] = sorted([*(profiles[i] or ()), "datetime"])
                    _column(columns, metadata_slot, n, False)[i] = True
    fields, arrays = [], []
    for name, kind in shape.items():
        array = _array(pa, kind, schema.field(name).type, (name,), n, columns, slots)
        if array is not None:
            fields.append(schema.field(name).with_type(array.type))
            arrays.append(array)
    fields += [schema.field(SPOOL_ID), schema.field(SPOOL_TIME)]
    arrays.append(pa.array(ids, type=pa.string()))
    arrays.append(pa.array(times, type=pa.int64()))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def full_table(table: Any, class_uid: int, version: str) -> Any:
    """A table of spooled chunks (each with only the fields its rows have, see `record_batch`)
    with every column of the spool schema, in its order: missing fields as nulls."""
    pa = import_pyarrow()
    schema = spool_schema(class_uid, version)
    if table.schema == schema:
        return table
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
