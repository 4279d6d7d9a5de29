"""`file:PATH`: appends NDJSON, crash-safe and following logrotate.

Crash safety: the byte offset after each acknowledged batch is committed with the state
(`inode:offset`), and on start any uncommitted tail is cut, so after a crash no line is
duplicated or torn.

Rotation: before each batch the sink looks at what its path names now. Another file (renamed
away by logrotate `create`, deleted, replaced) is reopened and written at its end; a shorter
file (logrotate `copytruncate`) is written at its real end, never at the old offset (which
would leave NUL bytes). SIGHUP (`request_reopen`) makes every file sink reopen before its next
batch. A moved position is reported by `follow` so that it is committed before the batch is
written into the new place. While `PATH.rotating` exists (logrotate's prerotate creates it,
postrotate removes it) no batch is written: a batch holds `flock` on the file from its write
until it is committed (`committed`) or cut (`restore`), and the prerotate takes that lock once
after creating the marker, so logrotate never copies, renames or truncates the file between a
batch's write and its commit or roll-back: a batch that fails (another sink down) is cut
before a rotation can keep it, and is not repeated (`packaging/logrotate/`).

One process per file: an open-file-description lock (`F_OFD_SETLK`) held as long as the sink
is open refuses a second writer (`flock` stays free for the rotation handshake). The target
must be a regular file: a FIFO, a directory or a device is refused, and so is a symbolic link
unless `follow_symlinks=true`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from forwarder.files import make_private_dirs
from forwarder.logs import get_logger
from forwarder.sinks.base import (
    Record,
    Rejection,
    Sink,
    SinkConfigError,
    SinkError,
    SinkSpec,
    encode_each,
)

ROTATING_SUFFIX = ".rotating"
# A marker older than this was left by a rotation that failed before its postrotate: ignored.
STALE_MARKER_SECONDS = 600.0

# Bumped by SIGHUP (runtime.install_stop_handlers): every sink reopens before its next batch.
_reopen_generation = [0]


def request_reopen() -> None:
    """Ask every file sink of this process to reopen its file before its next batch (SIGHUP).
    Safe in a signal handler: it only counts."""
    _reopen_generation[0] += 1


class FileSink(Sink):
    ndjson_lines = True

    def __init__(
        self, spec: SinkSpec, path: Path, fsync: bool, follow_symlinks: bool = False
    ) -> None:
        super().__init__(spec)
        self.path = path
        self.fsync = fsync
        self.follow_symlinks = follow_symlinks
        self.marker = Path(f"{path}{ROTATING_SUFFIX}")
        self._name = f"file:{path.resolve()}"  # asked for at every commit: resolved once
        self._fd: int | None = None
        self._opened = 0
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._offset = 0
        self._generation = _reopen_generation[0]
        self._told_stale = False
        # `_opened` of the file whose flock a batch written and not yet committed or cut keeps
        # (None: no such batch): a rotation waits for it.
        self._held: int | None = None
        self._restored = False  # the tail a crash may have left was looked at
        self._lock = threading.Lock()  # the sink is shared by the streams of one process

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> FileSink:
        spec.reject_unknown({"fsync", "follow_symlinks"})
        if not spec.path:
            raise SinkConfigError(f"sink {spec.display}: needs a path, e.g. file:out/events.ndjson")
        path = Path(spec.path)
        follow = spec.bool_param("follow_symlinks", False)
        problem = target_problem(path, follow)
        if problem:
            raise SinkConfigError(f"sink {spec.display}: {problem}")
        return cls(spec, path, spec.bool_param("fsync", True), follow)

    @property
    def name(self) -> str:
        return self._name

    # Opening ---------------------------------------------------------------------------

    def open(self) -> None:
        if self._fd is None:
            self._open_path()

    def _open_path(self) -> None:
        try:
            # Event data: owner only (an existing file keeps the mode it was given).
            make_private_dirs(self.path.parent)
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            if not self.follow_symlinks:
                flags |= os.O_NOFOLLOW
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                problem = target_problem(self.path, self.follow_symlinks) or exc.strerror
                raise SinkError(f"file {self.path}: {problem}", permanent=True) from None
            raise SinkError(f"file {self.path}: cannot open ({exc.strerror or exc})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            problem = target_problem(self.path, True) or "not a regular file"
            raise SinkError(f"file {self.path}: {problem}", permanent=True)
        if not _lock_for_life(fd):
            os.close(fd)
            raise SinkError(f"file {self.path}: another process is writing it")
        self._fd = fd
        self._opened += 1  # file descriptor numbers are reused: this tells opens apart
        self._identity = (info.st_dev, info.st_ino)
        self._offset = info.st_size
        self._generation = _reopen_generation[0]

    def _reopen(self, why: str) -> None:
        old_fd, old_identity, old_offset = self._fd, self._identity, self._offset
        self._fd = None
        if old_fd is not None:
            os.close(old_fd)
        self._open_path()
        if self._identity == old_identity:
            self._offset = old_offset  # the same file: a partial write is still overwritten
        get_logger().info(
            "file %s: reopened (%s); writing at byte %d", self.path, why, self._offset
        )

    # The committed position ------------------------------------------------------------

    def restore(self, position: str | None) -> None:
        """Cut what was written after the last committed offset: at start, a batch whose
        commit a crash prevented; later, a batch that failed (another sink down, the state not
        writable), still under the lock it was written with, so no rotation took it meanwhile.
        At start, not while a rotation runs (`SinkError`, retried). A different inode means
        the file was rotated: keep it whole."""
        with self._lock:
            self.open()
            if self._holding():
                try:
                    self._cut(position)
                finally:
                    self._release()
                return
            self._held = None
            if self._restored:
                return  # nothing written since the last commit: nothing to cut
            with self._write_window():
                self._cut(position)
            self._restored = True

    def committed(self) -> None:
        """The batch written last is committed: a rotation may go on."""
        with self._lock:
            self._release()

    def _holding(self) -> bool:
        return self._held is not None and self._held == self._opened

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and held == self._opened and self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _cut(self, position: str | None) -> None:
        assert self._fd is not None
        if not position:
            return
        inode_text, _, offset_text = position.partition(":")
        info = os.fstat(self._fd)
        committed = int(offset_text)
        if int(inode_text) == info.st_ino and committed < info.st_size:
            os.ftruncate(self._fd, committed)
            os.fsync(self._fd)
            self._offset = committed

    def position(self) -> str | None:
        if self._fd is None:
            return None
        return f"{os.fstat(self._fd).st_ino}:{self._offset}"

    # Following rotation ----------------------------------------------------------------

    def follow(self) -> bool:
        """Point at what the path names now (see the module docstring); True when the
        position moved, so that the caller commits it before the batch is written there."""
        with self._lock:
            self.open()
            before = self.position()
            with self._write_window():
                pass
            return self.position() != before

    @contextlib.contextmanager
    def _write_window(self) -> Iterator[int]:
        """Hold `flock` on the file the path names now, with no rotation in progress (else
        `SinkError`, retried), the offset at its real end if it was truncated; yields the
        file descriptor to write."""
        while True:
            assert self._fd is not None
            fd, opened = self._fd, self._opened
            try:
                # Not waiting here: logrotate's prerotate holds it for an instant, and the
                # retry of the batch waits; a writer that holds it for long is refused.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SinkError(
                    f"file {self.path}: locked by another process (a rotation in progress, or "
                    "another writer); retried"
                ) from None
            except OSError as exc:
                raise SinkError(f"file {self.path}: cannot lock ({exc.strerror or exc})") from None
            try:
                # A batch not yet committed keeps the lock: a rotation is waiting for it, and
                # the batch's retry goes on in the file it began in.
                if not self._holding():
                    self._refuse_while_rotating()
                self._follow()
            except BaseException:
                self._unlock(fd, opened)
                raise
            if self._opened == opened:
                break
            # Reopened: closing the old file dropped its lock; lock the new one, look again.
        try:
            yield fd
        finally:
            self._unlock(fd, opened)

    def _unlock(self, fd: int, opened: int) -> None:
        if self._held == opened:
            return  # kept for the batch until it is committed or cut
        if self._opened == opened and fd == self._fd:  # else closed already: lock gone
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _follow(self) -> None:
        assert self._fd is not None
        try:
            now = os.stat(self.path, follow_symlinks=self.follow_symlinks)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != self._identity:
            self._reopen("the path names another file: rotated, moved or deleted")
        elif self._generation != _reopen_generation[0] and not self._holding():
            self._reopen("SIGHUP")  # (after the batch in flight: it keeps its file)
        else:
            size = os.fstat(self._fd).st_size
            if size < self._offset:
                get_logger().info(
                    "file %s: truncated under us (copytruncate) from %d to %d bytes; writing "
                    "at its end",
                    self.path,
                    self._offset,
                    size,
                )
                self._offset = size

    def _refuse_while_rotating(self) -> None:
        try:
            age = time.time() - self.marker.stat().st_mtime
        except FileNotFoundError:
            return
        if age < STALE_MARKER_SECONDS:
            raise SinkError(f"file {self.path}: being rotated ({self.marker} exists); retried")
        if not self._told_stale:
            self._told_stale = True
            get_logger().warning(
                "file %s: ignoring %s, left %ds ago by a rotation that did not finish",
                self.path,
                self.marker,
                int(age),
            )

    # Writing ---------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        lines, rejections = encode_each(
            records, lambda r: r.line or dumps(r.doc, option=newline), "JSON"
        )
        data = b"".join(lines)
        with self._lock:
            self.open()
            # Follows a rotation too, normally a no-op: `follow` ran (and its move was
            # committed) just before.
            with self._write_window() as fd:
                self._held = self._opened  # until committed or cut: see the module docstring
                try:
                    written = os.pwrite(fd, data, self._offset)
                    while written < len(data):
                        written += os.pwrite(fd, data[written:], self._offset + written)
                    if self.fsync:
                        os.fsync(fd)
                except OSError as exc:
                    # Leave the offset: the next attempt overwrites the partial write.
                    raise SinkError(
                        f"file {self.path}: write failed ({exc.strerror or exc})"
                    ) from None
                self._offset += len(data)
        return rejections

    def check(self) -> str:
        self.open()
        return f"file {self.path}: writable, {self._offset} bytes"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; an uncommitted tail is cut at next start
            self._fd = None
            self._held = None


def target_problem(path: Path, follow_symlinks: bool) -> str | None:
    """Why `path` cannot be a file sink's target, if it exists and is not a regular file (or
    is a symbolic link and `follow_symlinks` is off)."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None  # missing (created at open) or unreadable (open reports it)
    if stat.S_ISLNK(info.st_mode):
        if not follow_symlinks:
            return (
                "is a symbolic link; refused, as it may point at a file that is not ours "
                "(give the real path, or follow_symlinks=true)"
            )
        try:
            info = os.stat(path)
        except OSError:
            return None
    if stat.S_ISREG(info.st_mode):
        return None
    kind = (
        "a directory"
        if stat.S_ISDIR(info.st_mode)
        else "a FIFO"
        if stat.S_ISFIFO(info.st_mode)
        else "a socket"
        if stat.S_ISSOCK(info.st_mode)
        else "a device"
    )
    return f"is {kind}, not a regular file (for a pipe use stdout:)"


_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)


def _lock_for_life(fd: int) -> bool:
    """Lock the open file for as long as it stays open; False if another open file holds it.
    An open-file-description lock, so that `flock` stays free for the rotation handshake."""
    try:
        if _OFD_SETLK is not None:
            # struct flock: l_type, l_whence, l_start, l_len (0: to the end), l_pid (0).
            fcntl.fcntl(fd, _OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
        else:  # not Linux: a process-wide record lock
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise SinkError(f"cannot lock the file ({exc.strerror or exc})") from None
    return True
