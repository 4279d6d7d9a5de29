"""A RELP client (the Reliable Event Logging Protocol as rsyslog's imrelp speaks it): `open`,
windowed `syslog` commands each acknowledged by `rsp 200`, reconnect and resend of everything
unacknowledged, `close`. Written here because no maintained Python implementation exists."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from forwarder import __version__
from forwarder.sinks import waits
from forwarder.sinks.base import SinkError, short_reason
from forwarder.sinks.retrying import sink_retrying

MAX_TXNR = 999_999_999
MAX_BACKOFF = 5.0
SOFTWARE = f"openai-audit-forwarder,{__version__}"
_OFFERS = f"relp_version=0\nrelp_software={SOFTWARE}\ncommands=syslog".encode()
_QUICKACK = getattr(socket, "TCP_QUICKACK", 0)
_HEADER = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,32}) (\d{1,9})")


class RelpError(Exception):
    """The session broke (error response, protocol violation, server close)."""


class RelpSession:
    """One connected RELP session: framing, transaction numbers, response parsing. Each wait
    for the server lasts at most `timeout` seconds and wakes on `stop`."""

    def __init__(
        self, sock: socket.socket, stop: threading.Event | None = None, timeout: float = 10.0
    ) -> None:
        self.sock = sock
        self.stop = stop or threading.Event()
        self.timeout = timeout
        self._txnr = 0
        self._buf = b""
        self._quickack = bool(_QUICKACK) and sock.family in (socket.AF_INET, socket.AF_INET6)

    def next_txnr(self) -> int:
        self._txnr = 1 if self._txnr >= MAX_TXNR else self._txnr + 1
        return self._txnr

    def frames(self) -> list[tuple[int, bytes, bytes]]:
        """The complete frames received so far, after one more `recv` (blocking)."""
        chunk = waits.recv(self.sock, 262144, time.monotonic() + self.timeout, self.stop)
        if self._quickack:
            # librelp leaves Nagle on, so it holds each further small `rsp` until our ACK;
            # without quick ACKs the kernel delays that ACK ~40 ms and throughput collapses.
            self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        if not chunk:
            raise RelpError("connection closed by the server")
        buf = self._buf + chunk if self._buf else chunk
        pos, size = 0, len(buf)
        out: list[tuple[int, bytes, bytes]] = []
        while pos < size:
            match = _HEADER.match(buf, pos)
            if match is None or match.end() >= size:
                if size - pos > 64 or (match is None and b"\n" in buf[pos:]):
                    raise RelpError(
                        f"malformed RELP frame from the server: {buf[pos : pos + 40]!r}"
                    )
                break
            txnr, command, datalen = int(match[1]), match[2], int(match[3])
            end = match.end()
            if datalen == 0:
                if buf[end : end + 1] == b"\n":
                    trailer = end
                elif buf[end : end + 2] == b" \n":
                    trailer = end + 1
                elif size - end < 2:
                    break
                else:
                    raise RelpError("malformed RELP frame trailer from the server")
                data = b""
            else:
                trailer = end + 1 + datalen
                if trailer >= size:
                    break
                if buf[end : end + 1] != b" " or buf[trailer : trailer + 1] != b"\n":
                    raise RelpError("malformed RELP frame from the server")
                data = buf[end + 1 : trailer]
            pos = trailer + 1
            out.append((txnr, command, data))
        self._buf = buf[pos:]
        return out

    def send(self, data: bytes) -> None:
        waits.send_all(self.sock, data, time.monotonic() + self.timeout, self.stop)

    def request(self, command: bytes, data: bytes) -> bytes:
        """Send one command and wait for its response; return the response data."""
        txnr = self.next_txnr()
        if data:
            self.send(b"%d %s %d %s\n" % (txnr, command, len(data), data))
        else:
            self.send(b"%d %s 0\n" % (txnr, command))
        while True:
            for got, cmd, payload in self.frames():
                if cmd == b"rsp" and got == txnr:
                    return payload
                if cmd == b"serverclose":
                    raise RelpError("server closed the session")


class _Unacknowledged:
    """What a batch still owes, carried from one attempt to the next: the messages not yet
    sent (`todo`, in order) and those sent but not acknowledged (`inflight`, by txnr)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.todo: deque[int] = deque(range(count))
        self.inflight: dict[int, int] = {}  # txnr -> index into the messages
        self.acknowledged = 0

    def __len__(self) -> int:
        return len(self.todo) + len(self.inflight)

    def resend(self) -> None:
        """The session broke: everything unacknowledged goes out again, in order."""
        self.todo = deque(sorted([*self.inflight.values(), *self.todo]))
        self.inflight.clear()


class RelpClient:
    """Delivers batches of syslog messages over RELP with up to `window` unacknowledged in
    flight; on any failure reconnects and resends what is unacknowledged (so a receiver may
    see a message twice, never zero times), giving up after `retries` + 1 attempts in a row
    that got no message acknowledged (the policy of `forwarder.retry`). Every wait lasts at
    most `timeout` and wakes on `stop`."""

    def __init__(
        self,
        connect: Callable[[], socket.socket],
        *,
        label: str,
        window: int = 128,
        retries: int = 3,
        backoff: float = 0.25,
        timeout: float = 10.0,
    ) -> None:
        self._connect = connect
        self._label = label
        self._window = window
        self._retries = retries
        self._backoff = backoff
        self._timeout = timeout
        self._session: RelpSession | None = None
        self.stop = threading.Event()
        self.server_software = ""

    def open(self) -> None:
        if self._session is not None:
            return
        session = RelpSession(self._connect(), self.stop, self._timeout)
        try:
            answer = session.request(b"open", _OFFERS)
        except BaseException:
            session.sock.close()
            raise
        status, _, offers = answer.partition(b"\n")
        if not status.startswith(b"200"):
            session.sock.close()
            raise RelpError(f"server refused the RELP session: {status.decode(errors='replace')}")
        fields = dict(
            line.split(b"=", 1) if b"=" in line else (line, b"") for line in offers.split(b"\n")
        )
        if b"syslog" not in fields.get(b"commands", b"").split(b","):
            session.sock.close()
            raise RelpError("server does not offer the RELP syslog command")
        self.server_software = fields.get(b"relp_software", b"").decode(errors="replace")
        self._session = session

    def send(self, messages: Sequence[bytes]) -> None:
        """Return once the server acknowledged every message; SinkError after the last
        attempt (each after a backoff, all of them carrying what is still unacknowledged)."""
        owed = _Unacknowledged(len(messages))
        sink_retrying(
            stop=self.stop,
            what=self._label,
            attempts=self._retries + 1,
            backoff=self._backoff,
            cap=MAX_BACKOFF,
            give_up=lambda exc, attempts: SinkError(
                f"{exc} ({len(owed)} of {owed.count} messages not acknowledged after "
                f"{attempts} attempts)"
            ),
            progress=lambda: owed.acknowledged,
        )(self._attempt, messages, owed)

    def _attempt(self, messages: Sequence[bytes], owed: _Unacknowledged) -> None:
        """Send and collect acks until nothing is owed; a broken session is a `SinkError`,
        raised after everything unacknowledged was put back to be resent."""
        try:
            self._exchange(messages, owed)
        except SinkError:
            self._drop()
            owed.resend()
            raise
        except (OSError, RelpError) as exc:
            self._drop()
            owed.resend()
            raise SinkError(f"{self._label}: {short_reason(exc)}") from None
        except BaseException:
            self._drop()  # stopped mid-exchange: never reuse this session
            raise

    def _exchange(self, messages: Sequence[bytes], owed: _Unacknowledged) -> None:
        todo, inflight = owed.todo, owed.inflight
        window, refill = self._window, max(1, self._window // 4)
        while todo or inflight:
            if self._session is None:
                self.open()
            session = self._session
            assert session is not None
            room = window - len(inflight)
            if todo and (not inflight or room >= min(refill, len(todo))):
                parts: list[bytes] = []
                while todo and room:
                    index = todo.popleft()
                    txnr = session.next_txnr()
                    inflight[txnr] = index
                    message = messages[index]
                    parts.append(b"%d syslog %d " % (txnr, len(message)))
                    parts.append(message)
                    parts.append(b"\n")
                    room -= 1
                session.send(b"".join(parts))
            for txnr, command, data in session.frames():
                if command == b"rsp":
                    if txnr not in inflight:
                        raise RelpError(f"response for unknown transaction {txnr}")
                    if not data.startswith(b"200"):
                        text = data.decode(errors="replace").splitlines()[0][:200]
                        raise RelpError(f"server answered {text!r}")
                    del inflight[txnr]
                    owed.acknowledged += 1
                elif command == b"serverclose":
                    raise RelpError("server closed the session")
                else:
                    raise RelpError(f"unexpected RELP command {command!r} from the server")

    def close(self) -> None:
        """Say `close` and wait briefly for the answer; errors here lose nothing."""
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.timeout = 2.0
            session.request(b"close", b"")
        except (OSError, RelpError):
            pass
        finally:
            session.sock.close()

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.sock.close()
