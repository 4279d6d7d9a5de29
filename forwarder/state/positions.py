"""Each sink's committed position (a file sink's `inode:offset`, ...), written with every
commit so that a sink can cut what a crash left uncommitted."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping

from forwarder.state.database import Database
from forwarder.state.faults import reported


class SinkPositions(Database):
    @reported
    def sink_position(self, sink: str) -> str | None:
        row = self.db.execute(
            "SELECT position FROM sink_positions WHERE sink=?", (sink,)
        ).fetchone()
        return None if row is None else row[0]

    def sink_positions(self) -> list[tuple[str, str]]:
        """(sink, committed position) of every sink this state has seen."""
        return list(self.db.execute("SELECT sink, position FROM sink_positions"))

    def set_sink_positions(self, positions: Mapping[str, str | None]) -> None:
        with self._transaction() as db:
            self._write_positions(db, positions)

    @staticmethod
    def _write_positions(db: sqlite3.Connection, positions: Mapping[str, str | None]) -> None:
        now = time.time()
        db.executemany(
            "INSERT INTO sink_positions(sink, position, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(sink) DO UPDATE SET position=excluded.position, "
            "updated_at=excluded.updated_at",
            [(sink, pos, now) for sink, pos in positions.items() if pos is not None],
        )
