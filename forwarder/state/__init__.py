"""The checkpoint: one SQLite database (WAL, mode 0600) holding watermarks per stream, the ids
delivered in the overlap region, backfill jobs and windows, and sink positions; plus the
per-stream lock that keeps two processes from delivering the same stream.

Each module holds one part: `schema` (layout, migrations, version check), `database` (the
connection and its transactions), `faults` (what an error of the database means),
`streams` (watermarks, live spans, tenant refusals), `delivered` (delivered ids), `jobs`
(backfill jobs and windows), `positions` (sink positions) and `locks` (the stream lock).
`State` joins them; `State.commit` writes everything one batch changes in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from forwarder.state.database import Database
from forwarder.state.delivered import DeliveredIds, backfill_scope, live_scope
from forwarder.state.faults import is_passing_fault, state_unusable
from forwarder.state.jobs import BackfillJob, BackfillJobs, Handover, Window
from forwarder.state.locks import StreamLock
from forwarder.state.positions import SinkPositions
from forwarder.state.schema import SCHEMA, SCHEMA_VERSION
from forwarder.state.streams import LiveSpan, StreamRows, watermark_problem

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "BackfillJob",
    "Commit",
    "Database",
    "DeliveredIds",
    "Handover",
    "LiveSpan",
    "State",
    "StreamLock",
    "Window",
    "backfill_scope",
    "is_passing_fault",
    "live_scope",
    "state_unusable",
    "watermark_problem",
]


@dataclass
class Commit:
    """Everything one batch changes, written in one transaction after every sink acked."""

    scope: str
    delivered: list[tuple[str, int]]
    sink_positions: Mapping[str, str | None]
    watermark: tuple[str, int] | None = None  # (stream, new watermark)
    prune_before: int | None = None  # forget delivered ids of `scope` older than this
    window_done: tuple[str, Window, int] | None = None  # (job, window, events)
    # (job, old window, its delivered part, events in it so far, the pending rest)
    window_split: tuple[str, Window, Window, int, list[Window]] | None = None
    keep_ids_from: int | None = None  # a finished window keeps its ids from here on (Handover)
    # A companion's job: the scope of its stream's job, whose ids kept for it are forgotten
    # in each window (or delivered part) this one finishes.
    partner_scope: str | None = None


class State(StreamRows, BackfillJobs, SinkPositions):
    """Access to the state database. Not shared across threads: one connection per State."""

    def commit(self, commit: Commit) -> None:
        scope = commit.scope
        with self._transaction() as db:
            if commit.delivered:
                self._insert_ids(db, scope, commit.delivered)
            self._write_positions(db, commit.sink_positions)
            if commit.watermark is not None:
                stream, watermark = commit.watermark
                self._move_watermark(db, stream, watermark, commit.prune_before)
            if commit.prune_before is not None:
                self._forget_ids_before(db, scope, commit.prune_before)
            if commit.window_done is not None:
                self._window_done(
                    db, scope, commit.window_done, commit.keep_ids_from, commit.partner_scope
                )
            if commit.window_split is not None:
                self._window_split(
                    db, scope, commit.window_split, commit.keep_ids_from, commit.partner_scope
                )
