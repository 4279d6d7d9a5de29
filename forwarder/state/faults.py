"""What a fault of the state database means: a passing fault of the machine (disk full,
read-only, I/O error, no permission yet) is a `StorageError` and a retry; a corrupt state or
one of another layout is one line naming the state (exit 2), never an internal error."""

from __future__ import annotations

import errno
import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from forwarder.errors import ConfigError, StorageError

T = TypeVar("T")

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


def reported(method: Callable[..., T]) -> Callable[..., T]:
    """A read of the state that meets a corrupt page (or a state of another layout) ends with
    one line naming the state, not an internal error; a passing fault is a StorageError."""

    @functools.wraps(method)
    def read(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and is_passing_fault(exc):
                raise StorageError(f"state {self.path}: cannot read ({exc})") from None
            raise state_unusable(self.path, exc) from None

    return read
