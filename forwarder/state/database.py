"""The connection every part of the state works through: opened once per `State` (not shared
across threads), and one `BEGIN IMMEDIATE` transaction per change, rolled back whole on any
failure."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from forwarder.errors import ConfigError, StorageError
from forwarder.state.faults import is_passing_fault, state_unusable
from forwarder.state.schema import connect

_OPENING = threading.Lock()


class Database:
    """Access to the state database. Not shared across threads: one connection per object."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # One opening at a time in this process: the umask is process-wide, and switching
            # a new database to WAL needs it to itself.
            with _OPENING:
                self.db = connect(path)
        except (OSError, sqlite3.Error) as exc:
            if is_passing_fault(exc):
                raise StorageError(f"state {path}: cannot open ({exc})") from None
            if isinstance(exc, sqlite3.DatabaseError):
                raise state_unusable(path, exc) from None
            raise ConfigError(f"invalid setting state: cannot open {path} ({exc})") from None

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
