"""The per-stream lock that keeps two processes from delivering the same stream: a `flock`
on a file beside the state's real path, released by the kernel even on SIGKILL."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from pathlib import Path

from forwarder.errors import ConfigError, StateLockedError, StorageError
from forwarder.files import make_private_dirs
from forwarder.state.faults import is_passing_fault


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
