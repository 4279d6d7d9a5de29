"""Runs the SQL that pySigma-backend-sqlite makes of our rules over mapped documents: loads ECS or
OCSF documents into an in-memory SQLite table, one column per dotted field. A list matches when
any of its values does, as in Elasticsearch or Splunk: a document with lists in the columns the
rules read becomes one row per combination of their values, every row carrying the document's
id, and the backend is told that id is the event id, so correlations count each event once."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from mappings.sigma import ID_FIELD, TIME_FIELD, field_names

TABLE = "logs"


def backend_options(schema: str) -> dict[str, Any]:
    """What pySigma-backend-sqlite must know about the table: time and id columns."""
    options: dict[str, Any] = {
        "table": TABLE,
        "timestamp_field": TIME_FIELD[schema],
        "event_id_field": ID_FIELD[schema],
    }
    if schema == "ocsf":
        options["timestamp_format"] = "unix_ms"  # OCSF `time` is epoch milliseconds
    return options


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, value) of every leaf; a list of objects gives one list per leaf key."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaves(inner, f"{prefix}{key}.")
        return
    name = prefix[:-1]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        merged: dict[str, list[Any]] = {}
        for item in value:
            for leaf, inner in _leaves(item, prefix):
                values = inner if isinstance(inner, list) else [inner]
                merged.setdefault(leaf, []).extend(values)
        yield from merged.items()
        return
    yield name, value


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def rows(doc: dict[str, Any], exploded: set[str]) -> list[dict[str, Any]]:
    """The table rows of one document: one per combination of the values of its list fields
    in `exploded` (other lists are stored as JSON text)."""
    flat = dict(_leaves(doc))
    lists = sorted(k for k, v in flat.items() if k in exploded and isinstance(v, list) and v)
    base = {k: _scalar(v) for k, v in flat.items() if k not in lists}
    if not lists:
        return [base]
    combos = itertools.product(*(flat[k] for k in lists))
    return [
        {**base, **{k: _scalar(v) for k, v in zip(lists, combo, strict=True)}} for combo in combos
    ]


def rule_columns(schema: str) -> set[str]:
    """The document fields the rules read in `schema`."""
    return {name for names in field_names(schema, "sqlite").values() for name in names}


def load(
    docs: Iterable[dict[str, Any]], schema: str, exploded: set[str] | None = None
) -> sqlite3.Connection:
    """An in-memory database with the documents in table `logs`, one row per combination of
    the values of their lists in `exploded` (default: the fields the rules read)."""
    exploded = rule_columns(schema) if exploded is None else exploded
    wire = (orjson.loads(orjson.dumps(doc)) for doc in docs)  # what a receiver gets
    table = [row for doc in wire for row in rows(doc, exploded)]
    columns = sorted({c for row in table for c in row} | exploded | {TIME_FIELD[schema]})
    db = sqlite3.connect(":memory:")
    # No declared type: numbers stay numbers (a rate limit compared with >=); text compares
    # without case, as Sigma's string matching does.
    spec = ", ".join(f"{_quote(c)} COLLATE NOCASE" for c in columns)
    db.execute(f"CREATE TABLE {TABLE} ({spec})")
    marks = ", ".join("?" for _ in columns)
    db.executemany(
        f"INSERT INTO {TABLE} VALUES ({marks})", [[r.get(c) for c in columns] for r in table]
    )
    return db


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def matches(db: sqlite3.Connection, query: str) -> list[dict[str, Any]]:
    """The rows a converted rule returns (alerts for a correlation, events otherwise)."""
    cursor = db.execute(query)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]
