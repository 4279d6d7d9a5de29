"""What the state holds per live stream: its watermark (and where the ids it keeps begin), the
span of a sweep in progress, and the last refusal of its tenant listing."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from forwarder.errors import ForwarderError
from forwarder.state.delivered import DeliveredIds, live_scope
from forwarder.state.faults import reported
from forwarder.timeparse import out_of_range


@dataclass(frozen=True)
class LiveSpan:
    """A live sweep's span [start, end) in progress: the listing runs newest first, so the
    part [done_from, end) is delivered while the watermark still stands at `start`. A rerun
    after a crash lists only [start, done_from) before moving the watermark to `end`."""

    start: int
    end: int
    done_from: int


def watermark_problem(watermark: int) -> str | None:
    """Why a stored watermark is out of range, or None. (A file stream's watermark is one
    past its newest event, which may be up to a day ahead: hence the second.)"""
    return out_of_range(watermark, time.time() + 1)


class StreamRows(DeliveredIds):
    # Watermarks --------------------------------------------------------------------------

    @reported
    def watermark(self, stream: str) -> int | None:
        """The committed watermark. One outside 2020 .. now + 1 day (an older version could
        store the time of an absurd event) stops the stream with how to repair it."""
        row = self.db.execute("SELECT watermark FROM streams WHERE stream=?", (stream,)).fetchone()
        if row is None:
            return None
        problem = watermark_problem(int(row[0]))
        if problem:
            raise ForwarderError(
                f"stream {stream}: the stored watermark {problem}; set a good one with "
                f"'checkpoint set WHEN --stream {stream}'"
            )
        return int(row[0])

    @reported
    def streams(self) -> list[tuple[str, int, float]]:
        return list(self.db.execute("SELECT stream, watermark, updated_at FROM streams"))

    def set_watermark(self, stream: str, watermark: int | None) -> None:
        """`checkpoint set` / `checkpoint reset`: also forgets the stream's delivered ids."""
        with self._transaction() as db:
            self._forget_scope(db, live_scope(stream))
            db.execute("DELETE FROM live_spans WHERE stream=?", (stream,))
            if watermark is None:
                db.execute("DELETE FROM streams WHERE stream=?", (stream,))
            else:
                db.execute(
                    "INSERT INTO streams(stream, watermark, updated_at) VALUES (?,?,?) "
                    "ON CONFLICT(stream) DO UPDATE SET watermark=excluded.watermark, "
                    "updated_at=excluded.updated_at, ids_from=NULL",
                    (stream, watermark, time.time()),
                )

    @staticmethod
    def _move_watermark(
        db: sqlite3.Connection, stream: str, watermark: int, ids_from: int | None
    ) -> None:
        # ids_from: where the delivered ids this stream keeps begin (see ids_kept_from).
        db.execute(
            "INSERT INTO streams(stream, watermark, updated_at, ids_from) VALUES (?,?,?,?) "
            "ON CONFLICT(stream) DO UPDATE SET watermark=excluded.watermark, "
            "updated_at=excluded.updated_at, "
            "ids_from=coalesce(excluded.ids_from, streams.ids_from)",
            (stream, watermark, time.time(), ids_from),
        )

    @reported
    def ids_kept_from(self, stream: str) -> int | None:
        """Where the delivered ids this stream remembers begin (its last prune point), if
        recorded: a re-read that starts earlier finds no ids there, and repeats its events."""
        row = self.db.execute("SELECT ids_from FROM streams WHERE stream=?", (stream,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # Live spans in progress and refused tenant listings --------------------------------

    @reported
    def live_span(self, stream: str) -> LiveSpan | None:
        row = self.db.execute(
            "SELECT start, end, done_from FROM live_spans WHERE stream=?", (stream,)
        ).fetchone()
        return None if row is None else LiveSpan(*row)

    def set_live_span(self, stream: str, span: LiveSpan | None) -> None:
        values = None if span is None else (span.start, span.end, span.done_from, time.time())
        self._set_row("live_spans", ("start", "end", "done_from", "updated_at"), stream, values)

    @reported
    def tenant_refusal(self, stream: str) -> tuple[float, str] | None:
        """(when, the API's message) of the last refusal of this stream's tenant listing."""
        row = self.db.execute(
            "SELECT refused_at, message FROM tenant_refusals WHERE stream=?", (stream,)
        ).fetchone()
        return None if row is None else (float(row[0]), str(row[1]))

    @reported
    def tenant_refusals(self) -> list[tuple[str, float, str]]:
        return list(self.db.execute("SELECT stream, refused_at, message FROM tenant_refusals"))

    def set_tenant_refusal(self, stream: str, message: str | None) -> None:
        values = None if message is None else (time.time(), message)
        self._set_row("tenant_refusals", ("refused_at", "message"), stream, values)

    def _set_row(
        self, table: str, columns: tuple[str, ...], stream: str, values: tuple[Any, ...] | None
    ) -> None:
        """Write the stream's row of `table` (a table of this module), or delete it (None)."""
        with self._transaction() as db:
            if values is None:
                db.execute(f"DELETE FROM {table} WHERE stream=?", (stream,))
                return
            updates = ", ".join(f"{column}=excluded.{column}" for column in columns)
            db.execute(
                f"INSERT INTO {table}(stream, {', '.join(columns)}) "
                f"VALUES (?{',?' * len(columns)}) "
                f"ON CONFLICT(stream) DO UPDATE SET {updates}",
                (stream, *values),
            )
