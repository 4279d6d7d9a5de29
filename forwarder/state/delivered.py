"""The ids of delivered events, kept per scope (a live stream's overlap, a backfill job's
unfinished windows) and keyed by time, so that re-reading a time range skips what it
delivered before, and forgetting a time range deletes adjacent rows."""

from __future__ import annotations

import sqlite3

import orjson

from forwarder.state.database import Database
from forwarder.state.faults import reported


def live_scope(stream: str) -> str:
    return f"live:{stream}"


def backfill_scope(job: str) -> str:
    return f"backfill:{job}"


class DeliveredIds(Database):
    @reported
    def delivered_ids(self, scope: str, start: int, end: int | None = None) -> set[str]:
        if end is None:
            rows = self.db.execute(
                "SELECT id FROM delivered WHERE scope=? AND effective_at>=?", (scope, start)
            )
        else:
            rows = self.db.execute(
                "SELECT id FROM delivered WHERE scope=? AND effective_at>=? AND effective_at<?",
                (scope, start, end),
            )
        return {row[0] for row in rows}

    @reported
    def count_delivered(self, scope: str) -> int:
        return self.db.execute("SELECT count(*) FROM delivered WHERE scope=?", (scope,)).fetchone()[
            0
        ]

    @staticmethod
    def _insert_ids(db: sqlite3.Connection, scope: str, delivered: list[tuple[str, int]]) -> None:
        # One JSON array bound once: SQLite unpacks it faster than Python binds rows.
        db.execute(
            "INSERT OR IGNORE INTO delivered(scope, effective_at, id) SELECT ?, "
            "json_extract(value, '$[1]'), json_extract(value, '$[0]') FROM json_each(?)",
            (scope, orjson.dumps(delivered)),
        )

    @staticmethod
    def _forget_ids_before(db: sqlite3.Connection, scope: str, before: int) -> None:
        db.execute("DELETE FROM delivered WHERE scope=? AND effective_at<?", (scope, before))

    @staticmethod
    def _forget_ids(db: sqlite3.Connection, scope: str, start: int, end: int) -> None:
        if end > start:
            db.execute(
                "DELETE FROM delivered WHERE scope=? AND effective_at>=? AND effective_at<?",
                (scope, start, end),
            )

    @staticmethod
    def _forget_scope(db: sqlite3.Connection, scope: str) -> None:
        db.execute("DELETE FROM delivered WHERE scope=?", (scope,))
