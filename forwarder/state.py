"""The checkpoint: one SQLite database (WAL, mode 0600) holding watermarks per stream, the ids
delivered in the overlap region, backfill jobs and windows, and sink positions; plus the
per-stream lock that keeps two processes from delivering the same stream."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from forwarder.errors import ConfigError, ForwarderError, StateLockedError, StorageError
from forwarder.files import make_private_dirs
from forwarder.logs import get_logger
from forwarder.timeparse import out_of_range

_OPENING = threading.Lock()
T = TypeVar("T")

# `PRAGMA user_version` of the state this version writes. A state of a higher one was written
# by a newer version and is refused: its layout or meaning may differ. (0: written before the
# version was recorded; read and upgraded.)
SCHEMA_VERSION = 1
# Columns added after the first layout, with their declaration: added to an older state.
ADDED_COLUMNS = {("streams", "ids_from"): "INTEGER"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    watermark INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    ids_from INTEGER
);
CREATE TABLE IF NOT EXISTS delivered (
    scope TEXT NOT NULL,
    effective_at INTEGER NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (scope, effective_at, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sink_positions (
    sink TEXT PRIMARY KEY,
    position TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS backfill_jobs (
    job TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    args TEXT NOT NULL,
    since INTEGER NOT NULL,
    until INTEGER NOT NULL,
    window INTEGER NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS live_spans (
    stream TEXT PRIMARY KEY,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    done_from INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tenant_refusals (
    stream TEXT PRIMARY KEY,
    refused_at REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS backfill_windows (
    job TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    status TEXT NOT NULL,
    events INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, start, end)
);
"""


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


@dataclass(frozen=True)
class LiveSpan:
    """A live sweep's span [start, end) in progress: the listing runs newest first, so the
    part [done_from, end) is delivered while the watermark still stands at `start`. A rerun
    after a crash lists only [start, done_from) before moving the watermark to `end`."""

    start: int
    end: int
    done_from: int


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


def _reported(method: Callable[..., T]) -> Callable[..., T]:
    """A read of the state that meets a corrupt page (or a state of another layout) ends with
    one line naming the state, not an internal error; a passing fault is a StorageError."""

    @functools.wraps(method)
    def read(self: State, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and is_passing_fault(exc):
                raise StorageError(f"state {self.path}: cannot read ({exc})") from None
            raise state_unusable(self.path, exc) from None

    return read


class State:
    """Access to the state database. Not shared across threads: one connection per State."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # One opening at a time in this process: the umask is process-wide, and switching
            # a new database to WAL needs it to itself.
            with _OPENING:
                self.db = self._connect(path)
        except (OSError, sqlite3.Error) as exc:
            if is_passing_fault(exc):
                raise StorageError(f"state {path}: cannot open ({exc})") from None
            if isinstance(exc, sqlite3.DatabaseError):
                raise state_unusable(path, exc) from None
            raise ConfigError(f"invalid setting state: cannot open {path} ({exc})") from None

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        if path.is_dir():
            raise ConfigError(f"invalid setting state: {path} is a directory, not a file")
        make_private_dirs(path.parent)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        _tighten(path)
        old_umask = os.umask(0o077)  # the -wal and -shm files too
        try:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            deadline = time.monotonic() + 30
            while True:
                try:
                    # The switch to WAL does not wait on SQLite's busy handler: another
                    # process opening the same new database at once makes it fail; retry.
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        db.close()
                        raise
                    time.sleep(0.05)
            try:
                db.execute("PRAGMA synchronous=FULL")
                _check_version(db, path)
                db.executescript(SCHEMA)
                _migrate_delivered(db)
                _add_columns(db)
                _check_layout(db, path)
                if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                db.close()
                raise
            return db
        finally:
            os.umask(old_umask)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            # Disk full, a read-only or failing disk: nothing was committed, and the next
            # sweep (or run) repeats the batch. A corrupt page: one line, and a stop.
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and is_passing_fault(exc):
                raise StorageError(f"state {self.path}: cannot commit ({exc})") from None
            raise state_unusable(self.path, exc) from None

    # Watermarks --------------------------------------------------------------------------

    @_reported
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

    @_reported
    def streams(self) -> list[tuple[str, int, float]]:
        return list(self.db.execute("SELECT stream, watermark, updated_at FROM streams"))

    def set_watermark(self, stream: str, watermark: int | None) -> None:
        """`checkpoint set` / `checkpoint reset`: also forgets the stream's delivered ids."""
        with self._transaction() as db:
            db.execute("DELETE FROM delivered WHERE scope=?", (live_scope(stream),))
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

    @_reported
    def ids_kept_from(self, stream: str) -> int | None:
        """Where the delivered ids this stream remembers begin (its last prune point), if
        recorded: a re-read that starts earlier finds no ids there, and repeats its events."""
        row = self.db.execute("SELECT ids_from FROM streams WHERE stream=?", (stream,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # Live spans in progress and refused tenant listings --------------------------------

    @_reported
    def live_span(self, stream: str) -> LiveSpan | None:
        row = self.db.execute(
            "SELECT start, end, done_from FROM live_spans WHERE stream=?", (stream,)
        ).fetchone()
        return None if row is None else LiveSpan(*row)

    def set_live_span(self, stream: str, span: LiveSpan | None) -> None:
        with self._transaction() as db:
            if span is None:
                db.execute("DELETE FROM live_spans WHERE stream=?", (stream,))
            else:
                db.execute(
                    "INSERT INTO live_spans(stream, start, end, done_from, updated_at) "
                    "VALUES (?,?,?,?,?) ON CONFLICT(stream) DO UPDATE SET start=excluded.start, "
                    "end=excluded.end, done_from=excluded.done_from, "
                    "updated_at=excluded.updated_at",
                    (stream, span.start, span.end, span.done_from, time.time()),
                )

    @_reported
    def tenant_refusal(self, stream: str) -> tuple[float, str] | None:
        """(when, the API's message) of the last refusal of this stream's tenant listing."""
        row = self.db.execute(
            "SELECT refused_at, message FROM tenant_refusals WHERE stream=?", (stream,)
        ).fetchone()
        return None if row is None else (float(row[0]), str(row[1]))

    @_reported
    def tenant_refusals(self) -> list[tuple[str, float, str]]:
        return list(self.db.execute("SELECT stream, refused_at, message FROM tenant_refusals"))

    def set_tenant_refusal(self, stream: str, message: str | None) -> None:
        with self._transaction() as db:
            if message is None:
                db.execute("DELETE FROM tenant_refusals WHERE stream=?", (stream,))
            else:
                db.execute(
                    "INSERT INTO tenant_refusals(stream, refused_at, message) VALUES (?,?,?) "
                    "ON CONFLICT(stream) DO UPDATE SET refused_at=excluded.refused_at, "
                    "message=excluded.message",
                    (stream, time.time(), message),
                )

    # Delivered ids -----------------------------------------------------------------------

    @_reported
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

    @_reported
    def count_delivered(self, scope: str) -> int:
        return self.db.execute("SELECT count(*) FROM delivered WHERE scope=?", (scope,)).fetchone()[
            0
        ]

    # Sinks -------------------------------------------------------------------------------

    @_reported
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

    # The commit --------------------------------------------------------------------------

    def commit(self, commit: Commit) -> None:
        scope = commit.scope
        with self._transaction() as db:
            if commit.delivered:
                # One JSON array bound once: SQLite unpacks it faster than Python binds rows.
                db.execute(
                    "INSERT OR IGNORE INTO delivered(scope, effective_at, id) SELECT ?, "
                    "json_extract(value, '$[1]'), json_extract(value, '$[0]') FROM json_each(?)",
                    (scope, orjson.dumps(commit.delivered)),
                )
            self._write_positions(db, commit.sink_positions)
            if commit.watermark is not None:
                stream, watermark = commit.watermark
                # ids_from: where the delivered ids this stream keeps begin (see ids_kept_from).
                db.execute(
                    "INSERT INTO streams(stream, watermark, updated_at, ids_from) VALUES (?,?,?,?) "
                    "ON CONFLICT(stream) DO UPDATE SET watermark=excluded.watermark, "
                    "updated_at=excluded.updated_at, "
                    "ids_from=coalesce(excluded.ids_from, streams.ids_from)",
                    (stream, watermark, time.time(), commit.prune_before),
                )
            if commit.prune_before is not None:
                db.execute(
                    "DELETE FROM delivered WHERE scope=? AND effective_at<?",
                    (commit.scope, commit.prune_before),
                )
            if commit.window_done is not None:
                job, window, events = commit.window_done
                db.execute(
                    "UPDATE backfill_windows SET status='done', events=events+? "
                    "WHERE job=? AND start=? AND end=?",
                    (events, job, window.start, window.end),
                )
                # A finished window is never read again: its ids need not be remembered,
                # which keeps every later commit of a long backfill small.
                self._forget_ids(db, commit.scope, window, commit.keep_ids_from)
            if commit.window_split is not None:
                job, old, done_part, done_events, rest = commit.window_split
                self._forget_ids(db, commit.scope, done_part, commit.keep_ids_from)
                db.execute(
                    "DELETE FROM backfill_windows WHERE job=? AND start=? AND end=?",
                    (job, old.start, old.end),
                )
                db.executemany(
                    "INSERT INTO backfill_windows(job, start, end, status, events) "
                    "VALUES (?,?,?,?,?)",
                    [(job, done_part.start, done_part.end, "done", done_events)]
                    + [(job, w.start, w.end, "pending", 0) for w in rest],
                )

    @staticmethod
    def _forget_ids(
        db: sqlite3.Connection, scope: str, window: Window, keep_from: int | None = None
    ) -> None:
        end = window.end if keep_from is None else min(window.end, keep_from)
        if end > window.start:
            db.execute(
                "DELETE FROM delivered WHERE scope=? AND effective_at>=? AND effective_at<?",
                (scope, window.start, end),
            )

    # Backfill ----------------------------------------------------------------------------

    @_reported
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
            db.execute("DELETE FROM delivered WHERE scope=?", (backfill_scope(job),))

    @_reported
    def windows(self, job: str) -> list[tuple[Window, str, int]]:
        """(window, status, events) of a job, newest first."""
        rows = self.db.execute(
            "SELECT start, end, status, events FROM backfill_windows WHERE job=? "
            "ORDER BY start DESC",
            (job,),
        )
        return [(Window(start, end), status, events) for start, end, status, events in rows]

    def finish_job(self, job: str, handover: Handover | None = None) -> bool:
        """Mark the job finished and forget its ids. With `handover`, a live stream that has no
        watermark yet starts where the job ended; returns whether that happened."""
        scope = backfill_scope(job)
        with self._transaction() as db:
            db.execute("UPDATE backfill_jobs SET finished_at=? WHERE job=?", (time.time(), job))
            handed_over = False
            if handover is not None:
                row = db.execute(
                    "SELECT 1 FROM streams WHERE stream=?", (handover.stream,)
                ).fetchone()
                if row is None:
                    db.execute(
                        "UPDATE OR IGNORE delivered SET scope=? WHERE scope=? AND effective_at>=?",
                        (live_scope(handover.stream), scope, handover.keep_from),
                    )
                    db.execute(
                        "INSERT INTO streams(stream, watermark, updated_at, ids_from) "
                        "VALUES (?,?,?,?)",
                        (handover.stream, handover.watermark, time.time(), handover.keep_from),
                    )
                    handed_over = True
            db.execute("DELETE FROM delivered WHERE scope=?", (scope,))
        return handed_over

    @_reported
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


_PASSING_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}
_PASSING_SQLITE = ("disk is full", "disk i/o", "readonly database", "unable to open", "locked")


def is_passing_fault(exc: BaseException) -> bool:
    """A fault of the machine rather than of the setting: disk full, read-only, I/O error, no
    permission (yet). Exit 1 and a retry, not exit 2, which keeps systemd from restarting."""
    if isinstance(exc, OSError):
        return exc.errno in _PASSING_ERRNOS
    return isinstance(exc, sqlite3.OperationalError) and any(
        text in str(exc).lower() for text in _PASSING_SQLITE
    )


def _tighten(path: Path) -> None:
    """The state holds what was delivered: owner only. A looser file (from an older version,
    or copied in) is tightened, with a warning; its -wal and -shm too."""
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = part.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            get_logger().warning(
                "state file %s had mode %04o; tightened to 0600 (it lists delivered events)",
                part,
                mode,
            )
            os.chmod(part, 0o600)


def watermark_problem(watermark: int) -> str | None:
    """Why a stored watermark is out of range, or None. (A file stream's watermark is one
    past its newest event, which may be up to a day ahead: hence the second.)"""
    return out_of_range(watermark, time.time() + 1)


def state_unusable(path: Path, exc: sqlite3.DatabaseError) -> ConfigError:
    """The one line for a state this version cannot use: corrupt, or of another layout."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError | sqlite3.IntegrityError) and any(
        mark in text for mark in ("no such column", "no such table", "has no column", "NOT NULL")
    ):
        return ConfigError(
            f"invalid setting state: {path} does not have the layout this version writes "
            f"({text}): written by another version, or altered; restore it from a backup, or "
            "move it away and start over with 'checkpoint set WHEN'"
        )
    return ConfigError(
        f"invalid setting state: {path} is corrupt ({text}): restore it from a backup, or "
        "move it away and start over with 'checkpoint set WHEN'"
    )


def _check_version(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"invalid setting state: {path} was written by a newer version of "
            f"openai-audit-forwarder (state schema {version}, this version reads up to "
            f"{SCHEMA_VERSION}): upgrade, or use another --state"
        )


def _add_columns(db: sqlite3.Connection) -> None:
    """Columns later versions added, added to a state of an earlier one (once)."""
    for (table, column), declaration in ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _check_layout(db: sqlite3.Connection, path: Path) -> None:
    """Every table and column this version uses is there (a state of another layout fails
    here with one line, not later with an internal error)."""
    expected = sqlite3.connect(":memory:")
    try:
        expected.executescript(SCHEMA)
        tables = [
            row[0] for row in expected.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            want = {row[1] for row in expected.execute(f"PRAGMA table_info({table})")}
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            missing = sorted(want - have)
            if missing:
                raise state_unusable(
                    path, sqlite3.OperationalError(f"table {table} has no column {missing[0]}")
                )
    finally:
        expected.close()


def _migrate_delivered(db: sqlite3.Connection) -> None:
    """Rewrite a `delivered` table of the first layout (keyed by id, with a second index by
    time) into the time-ordered one, once. Keyed by time, a batch of inserts fills a few
    adjacent pages instead of one random page per id, and forgetting a time range deletes
    adjacent rows; nothing looks an id up on its own."""
    old = "SELECT 1 FROM sqlite_master WHERE type='index' AND name='delivered_by_time'"
    if db.execute(old).fetchone() is None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute(old).fetchone() is not None:  # not done by another process meanwhile
            db.execute(
                "CREATE TABLE delivered_new (scope TEXT NOT NULL, effective_at INTEGER NOT NULL, "
                "id TEXT NOT NULL, PRIMARY KEY (scope, effective_at, id)) WITHOUT ROWID"
            )
            db.execute(
                "INSERT OR IGNORE INTO delivered_new(scope, effective_at, id) "
                "SELECT scope, effective_at, id FROM delivered"
            )
            db.execute("DROP TABLE delivered")
            db.execute("ALTER TABLE delivered_new RENAME TO delivered")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def live_scope(stream: str) -> str:
    return f"live:{stream}"


def backfill_scope(job: str) -> str:
    return f"backfill:{job}"


class StreamLock:
    """An exclusive, process-wide lock on one stream (flock: released by the kernel even on
    SIGKILL). The lock file says who holds it, so the refusal can name the holder.

    One lock file per state file and stream, however they are named: beside the state's real
    path (a symbolic link to it, or another spelling of its path, takes the same lock), named
    after a hash of the stream's exact name (`org:1` and `org_1` are two streams)."""

    def __init__(self, state_path: Path, name: str) -> None:
        real = state_path.resolve()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        self.path = real.with_name(f"{real.name}.{safe}-{digest}.lock")
        self.name = name
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        try:
            self._acquire(command)
        except OSError as exc:
            if is_passing_fault(exc):
                raise StorageError(f"lock {self.path}: {exc.strerror or exc}") from None
            raise ConfigError(f"invalid setting state: lock {self.path}: {exc}") from None

    def _acquire(self, command: str) -> None:
        make_private_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise StateLockedError(
                f"{self.name} is locked by another process ({holder}); "
                "stop it or use another --state/--stream"
            ) from None
        self._fd = fd
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # The note only names the holder: on a full disk the lock holds without it, and the
        # state's own open or commit reports the fault.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(
                fd,
                f"pid {os.getpid()} on {socket.gethostname()}, {command}, since {started}".encode(),
                0,
            )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
