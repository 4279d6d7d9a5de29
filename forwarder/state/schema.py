"""The layout of the state database and how it is opened: WAL, mode 0600 (tightened if an
older file was looser), `PRAGMA user_version` checked (a state of a newer version is refused),
columns and tables added by later versions added, the first `delivered` layout rewritten once,
and every table and column this version uses checked to be there."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

from forwarder.errors import ConfigError
from forwarder.files import make_private_dirs
from forwarder.logs import get_logger
from forwarder.state.faults import state_unusable

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


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) the state at `path` in this version's layout. The caller holds the
    process-wide opening lock: the umask is process-wide, and a new database's switch to WAL
    needs it to itself."""
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
