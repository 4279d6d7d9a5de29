"""A TCP syslog peer that accepts and closes at once (issue 15, item 5): plain TCP has no acks,
but a close the sink can see before the commit fails the batch. Such a peer gets nothing and
nothing is committed; once the peer reads, a rerun delivers every event exactly once."""

from __future__ import annotations

import contextlib
import re
import socket
import sqlite3
import threading
from collections import Counter
from pathlib import Path

from forwarder.sinks import open_sink
from forwarder.sinks.base import SinkError
from tests.conftest import REPO, run_cli
from tests.waiting import wait_for

SAMPLE = REPO / "samples" / "audit-log.jsonl"
ERROR = "openai-audit-forwarder: error: "


class TcpPeer:
    """A TCP listener on loopback: `closing` accepts and closes every connection at once;
    otherwise it reads everything sent to it."""

    def __init__(self, closing: bool) -> None:
        self.closing = closing
        self.connections = 0
        self.open_connections = 0
        self.received = bytearray()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self.open_connections += 0 if self.closing else 1
            if self.closing:
                conn.close()
            else:
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            while chunk := conn.recv(65536):
                with self._lock:
                    self.received += chunk
        with self._lock:
            self.open_connections -= 1

    def idle(self) -> bool:
        """Every connection was closed by the sender: all it sent has been read."""
        with self._lock:
            return self.connections > 0 and self.open_connections == 0

    def close(self) -> None:
        self._server.close()


def committed(tmp_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db:
        return db.execute("SELECT count(*) FROM delivered").fetchone()[0]


def run_to(tmp_path: Path, peer: TcpPeer) -> object:
    return run_cli(
        "run", "--once", "--input", str(SAMPLE), "--stream", "sample",
        "--sink", f"syslog+tcp://127.0.0.1:{peer.port}", "--schema", "raw",
        "--batch-size", "20", "--sink-retry-timeout", "2s",
        "--state", str(tmp_path / "s.db"), "--dead-letter", str(tmp_path / "dl"),
        cwd=tmp_path,
    )  # fmt: skip


def test_a_peer_that_accepts_and_closes_gets_nothing_and_nothing_is_committed(
    tmp_path: Path,
) -> None:
    sample_ids = [line.split('"id":"', 1)[1].split('"', 1)[0] for line in SAMPLE.open()]
    closing = TcpPeer(closing=True)
    try:
        failed = run_to(tmp_path, closing)
    finally:
        closing.close()
    assert failed.code == 1  # type: ignore[attr-defined]
    errors = [line for line in failed.stderr.splitlines() if line.startswith(ERROR)]  # type: ignore[attr-defined]
    assert len(errors) == 1
    assert re.fullmatch(
        rf"{ERROR}sink syslog\+tcp://127\.0\.0\.1:{closing.port}: the peer closed the "
        r"connection at once \(after \d+ attempts\)"
        r"( \(gave up after \d+ attempts\))?",
        errors[0],
    ), errors[0]
    assert closing.connections >= 2 and closing.received == b""
    assert committed(tmp_path) == 0  # 209 in, 0 delivered, 0 committed

    reading = TcpPeer(closing=False)  # the receiver is fixed: the same command, twice
    try:
        for _ in range(2):
            again = run_to(tmp_path, reading)
            assert again.code == 0, again.stderr  # type: ignore[attr-defined]
            assert wait_for(reading.idle, 10)  # the process is gone: all it sent is read
    finally:
        reading.close()
    found = Counter(re.findall(rb'"id":"(audit_log-[0-9a-f]+)"', bytes(reading.received)))
    assert found == Counter(i.encode() for i in sample_ids)  # 209, each once


def test_check_fails_on_a_peer_that_accepts_and_closes() -> None:
    closing = TcpPeer(closing=True)
    try:
        sink = open_sink(f"syslog+tcp://127.0.0.1:{closing.port}")
        try:
            sink.check()
        except SinkError as exc:
            assert "the peer closed the connection at once" in str(exc)
        else:
            raise AssertionError("check passed")
    finally:
        closing.close()
