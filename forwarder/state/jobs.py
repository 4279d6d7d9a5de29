"""Backfill jobs and their windows: a job is the plan of one `backfill` command (found again
by its arguments, so a rerun resumes it), its windows are pending or done, a dense window is
split into its delivered part and the pending rest. A finished job may hand over to the live
stream."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from forwarder.state.delivered import DeliveredIds, backfill_scope, live_scope
from forwarder.state.faults import reported


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end) in unix seconds."""

    start: int
    end: int


@dataclass(frozen=True)
class BackfillJob:
    job: str
    stream: str
    since: int
    until: int
    window: int
    finished_at: float | None


@dataclass(frozen=True)
class Handover:
    """A backfill that ran up to now becomes the start of the live stream: its watermark is the
    backfill's end, and the delivered ids from `keep_from` on (the overlap that the live
    stream re-reads first) move over, so the first live sweep neither repeats nor misses."""

    stream: str
    watermark: int
    keep_from: int


class BackfillJobs(DeliveredIds):
    @reported
    def find_job(self, job: str) -> BackfillJob | None:
        row = self.db.execute(
            "SELECT job, stream, since, until, window, finished_at FROM backfill_jobs WHERE job=?",
            (job,),
        ).fetchone()
        return None if row is None else BackfillJob(*row)

    def create_job(self, job: BackfillJob, args: str, windows: Iterable[Window]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO backfill_jobs(job, stream, args, since, until, window, created_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (job.job, job.stream, args, job.since, job.until, job.window, time.time()),
            )
            db.executemany(
                "INSERT INTO backfill_windows(job, start, end, status) VALUES (?,?,?,'pending')",
                [(job.job, w.start, w.end) for w in windows],
            )

    def delete_job(self, job: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM backfill_windows WHERE job=?", (job,))
            db.execute("DELETE FROM backfill_jobs WHERE job=?", (job,))
            self._forget_scope(db, backfill_scope(job))

    @reported
    def windows(self, job: str) -> list[tuple[Window, str, int]]:
        """(window, status, events) of a job, newest first."""
        rows = self.db.execute(
            "SELECT start, end, status, events FROM backfill_windows WHERE job=? "
            "ORDER BY start DESC",
            (job,),
        )
        return [(Window(start, end), status, events) for start, end, status, events in rows]

    def finish_job(
        self,
        job: str,
        handover: Handover | None = None,
        *,
        keep_ids: bool = False,
        partner_job: str | None = None,
    ) -> bool:
        """Mark the job finished and forget its ids, unless `keep_ids` (the tenant companion's
        job still has to skip them), and the ids `partner_job` kept for this one. With
        `handover`, a live stream that has no watermark yet starts where the job ended; returns
        whether that happened."""
        scope = backfill_scope(job)
        with self._transaction() as db:
            db.execute("UPDATE backfill_jobs SET finished_at=? WHERE job=?", (time.time(), job))
            handed_over = False
            if handover is not None:
                row = db.execute(
                    "SELECT 1 FROM streams WHERE stream=?", (handover.stream,)
                ).fetchone()
                if row is None:
                    self._hand_ids_over(db, scope, handover, keep_ids)
                    db.execute(
                        "INSERT INTO streams(stream, watermark, updated_at, ids_from) "
                        "VALUES (?,?,?,?)",
                        (handover.stream, handover.watermark, time.time(), handover.keep_from),
                    )
                    handed_over = True
            if not keep_ids:
                self._forget_scope(db, scope)
            if partner_job is not None:
                self._forget_scope(db, backfill_scope(partner_job))
        return handed_over

    @staticmethod
    def _hand_ids_over(
        db: sqlite3.Connection, scope: str, handover: Handover, keep_ids: bool
    ) -> None:
        """The job's ids from `handover.keep_from` on become the live stream's: moved, or
        copied when the job keeps its own."""
        live = live_scope(handover.stream)
        if keep_ids:
            db.execute(
                "INSERT OR IGNORE INTO delivered(scope, effective_at, id) "
                "SELECT ?, effective_at, id FROM delivered WHERE scope=? AND effective_at>=?",
                (live, scope, handover.keep_from),
            )
        else:
            db.execute(
                "UPDATE OR IGNORE delivered SET scope=? WHERE scope=? AND effective_at>=?",
                (live, scope, handover.keep_from),
            )

    def forget_job_ids(self, job: str) -> None:
        """Forget the ids a finished job kept for its tenant companion's job, which will not
        need them (the companion's listing refused, or not run)."""
        with self._transaction() as db:
            self._forget_scope(db, backfill_scope(job))

    @reported
    def jobs(self) -> list[tuple[str, str, int, int, float | None, int, int, int]]:
        """(job, stream, since, until, finished_at, windows, done, events) per job."""
        return list(
            self.db.execute(
                "SELECT j.job, j.stream, j.since, j.until, j.finished_at, count(w.job), "
                "coalesce(sum(w.status='done'), 0), coalesce(sum(w.events), 0) "
                "FROM backfill_jobs j LEFT JOIN backfill_windows w ON w.job=j.job "
                "GROUP BY j.job ORDER BY j.created_at"
            )
        )

    # Parts of a commit -------------------------------------------------------------------

    @classmethod
    def _window_done(
        cls,
        db: sqlite3.Connection,
        scope: str,
        done: tuple[str, Window, int],
        keep_ids_from: int | None,
        partner_scope: str | None,
    ) -> None:
        job, window, events = done
        db.execute(
            "UPDATE backfill_windows SET status='done', events=events+? "
            "WHERE job=? AND start=? AND end=?",
            (events, job, window.start, window.end),
        )
        # A finished window is never read again: its ids need not be remembered, which
        # keeps every later commit of a long backfill small.
        cls._forget_window_ids(db, scope, window, keep_ids_from, partner_scope)

    @classmethod
    def _window_split(
        cls,
        db: sqlite3.Connection,
        scope: str,
        split: tuple[str, Window, Window, int, list[Window]],
        keep_ids_from: int | None,
        partner_scope: str | None,
    ) -> None:
        job, old, done_part, done_events, rest = split
        cls._forget_window_ids(db, scope, done_part, keep_ids_from, partner_scope)
        db.execute(
            "DELETE FROM backfill_windows WHERE job=? AND start=? AND end=?",
            (job, old.start, old.end),
        )
        db.executemany(
            "INSERT INTO backfill_windows(job, start, end, status, events) VALUES (?,?,?,?,?)",
            [(job, done_part.start, done_part.end, "done", done_events)]
            + [(job, w.start, w.end, "pending", 0) for w in rest],
        )

    @classmethod
    def _forget_window_ids(
        cls,
        db: sqlite3.Connection,
        scope: str,
        window: Window,
        keep_from: int | None,
        partner_scope: str | None,
    ) -> None:
        end = window.end if keep_from is None else min(window.end, keep_from)
        cls._forget_ids(db, scope, window.start, end)
        if partner_scope is not None:  # what the companion's job has covered now
            cls._forget_ids(db, partner_scope, window.start, window.end)
