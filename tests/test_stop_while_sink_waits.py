"""SIGTERM while a sink waits for its receiver: the process exits at once with code 0 and
commits nothing, also when the receiver holds the batch without acknowledging it (a Fluentd
that never acks, a RELP peer that never answers, or answers the session but no message).
Every wait of a sink wakes on the stop signal (forwarder/sinks/waits.py), within a slice."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forwarder.errors import Stopped
from forwarder.sinks import Record, open_sink
from tests.conftest import CliResult, cli_env, recent_events, sigterm_run, write_jsonl
from tests.fakes.forward_server import ForwardServer

# The sinks wait up to 30 s for an ack here; a stop must not wait for that. SLICE is 0.25 s,
# the rest is the interpreter starting to exit on a loaded machine.
STOP_WITHIN = 3.0
LONG_WAIT = "30"


class RelpPeer:
    """A RELP peer on loopback that holds what it gets: with `open_session`, it opens the
    session (`rsp 200` with the syslog command) and then acknowledges no message; without,
    it answers nothing at all. `bytes_after_open` counts what came after the open."""

    def __init__(self, *, open_session: bool) -> None:
        self.open_session = open_session
        self.opened = 0
        self.bytes_after_open = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while self.open_session and b"open" not in buffer.split(b"\n", 1)[0]:
                buffer += conn.recv(65536)
            if self.open_session:
                # `1 open LEN DATA\n`: the offers hold newlines, so read by length.
                txnr, _, length = buffer.split(b" ", 3)[:3]
                end = len(b"%s open %s " % (txnr, length)) + int(length) + 1
                while len(buffer) < end:
                    buffer += conn.recv(65536)
                offers = b"200 OK\nrelp_version=0\ncommands=syslog"
                conn.sendall(b"%s rsp %d %s\n" % (txnr, len(offers), offers))
                self.opened += 1
                self.bytes_after_open += len(buffer) - end
            while chunk := conn.recv(65536):
                self.bytes_after_open += len(chunk)

    def close(self) -> None:
        self.listener.close()
        for conn in self._conns:
            conn.close()


def state_commits(tmp_path: Path) -> tuple[list, list]:
    """The watermarks and delivered ids in the state: empty when nothing was committed."""
    db = tmp_path / "s.db"
    if not db.exists():
        return [], []
    with sqlite3.connect(db) as conn:
        return (
            conn.execute("SELECT * FROM streams").fetchall(),
            conn.execute("SELECT * FROM delivered").fetchall(),
        )


def sigterm_while(
    tmp_path: Path, sink_url: str, waiting: Callable[[], bool], *command: str
) -> tuple[CliResult, float]:
    """Run the CLI over a file of events into `sink_url`; once `waiting()` holds (the sink
    sent its batch, or is opening its session, and now waits), send SIGTERM. The result and
    the seconds from the signal to the exit."""
    events = write_jsonl(tmp_path / "in.jsonl", recent_events(40, hours=1, seed=71))
    args = ["run", *command, "--input", str(events), "--sink", sink_url, "--schema", "raw"]
    return sigterm_run(
        *args, "--state", str(tmp_path / "s.db"), cwd=tmp_path, env=cli_env(), ready=waiting
    )


def assert_stopped_cleanly(result: CliResult, took: float, tmp_path: Path) -> None:
    assert took < STOP_WITHIN, f"stopped {took:.1f}s after SIGTERM"
    assert result.code == 0, result.stderr
    assert "received SIGTERM" in result.stderr
    assert "stopped; the batch in flight was not committed" in result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    assert state_commits(tmp_path) == ([], [])


@pytest.fixture
def withholding_fluentd() -> Iterator[ForwardServer]:
    with ForwardServer(require_ack=False) as server:
        yield server


@pytest.mark.parametrize("command", [["--once"], ["--interval", "1s"]], ids=["once", "daemon"])
def test_sigterm_while_fluentd_withholds_the_ack_exits_at_once_committing_nothing(
    tmp_path: Path, withholding_fluentd: ForwardServer, command: list[str]
) -> None:
    url = withholding_fluentd.url(ack_timeout=LONG_WAIT, backoff=LONG_WAIT)
    result, took = sigterm_while(
        tmp_path, url, lambda: len(withholding_fluentd.received_chunks) > 0, *command
    )
    assert_stopped_cleanly(result, took, tmp_path)
    assert withholding_fluentd.acked_chunks == []


@pytest.mark.parametrize("open_session", [False, True], ids=["silent-peer", "no-acks"])
def test_sigterm_while_a_relp_peer_never_answers_exits_at_once_committing_nothing(
    tmp_path: Path, open_session: bool
) -> None:
    peer = RelpPeer(open_session=open_session)
    try:
        url = f"syslog+relp://127.0.0.1:{peer.port}?timeout={LONG_WAIT}"
        # Silent: the sink waits for the answer to its `open`; else for the acks of the batch.
        waiting = (lambda: peer.bytes_after_open > 0) if open_session else (lambda: peer._conns)
        result, took = sigterm_while(tmp_path, url, waiting, "--once")
    finally:
        peer.close()
    assert_stopped_cleanly(result, took, tmp_path)
    assert peer.opened == (1 if open_session else 0)


def test_a_tcp_syslog_write_into_a_full_window_wakes_on_stop() -> None:
    """A receiver that accepts and never reads: the send blocks once the socket buffers are
    full; the stop signal ends it with `Stopped` (nothing is retried, the stream is closed)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    sink = open_sink(f"syslog+tcp://127.0.0.1:{listener.getsockname()[1]}?timeout={LONG_WAIT}")
    stop = threading.Event()
    sink.bind_stop(stop)
    big = "x" * 60_000
    records = [Record(f"evt_{i}", "login.failed", 1, {"i": i, "pad": big}) for i in range(400)]
    try:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(Stopped):
            sink.write(records)  # 24 MB: far more than loopback buffers hold
        assert time.monotonic() - started < STOP_WITHIN
    finally:
        sink.close()
        listener.close()
        for conn in accepted:
            conn.close()
