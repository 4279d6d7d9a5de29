"""The Forward protocol's transport for the Fluentd sink: the connection (TCP or TLS), the
HELO/PING/PONG shared-key handshake, sending chunks with at most `MAX_IN_FLIGHT` unacknowledged
and reading their acks, and naming a protocol mismatch (TLS on one side only, a shared key on
one side only) instead of timing out. Every wait lasts at most its timeout and wakes on the
stop signal (`forwarder.sinks.waits`). Failures: `Fatal` (retrying cannot help), `Retryable`
(a reconnect may cure it), or an `OSError` from the socket."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from forwarder.errors import one_line
from forwarder.sinks import waits

MAX_IN_FLIGHT = 64
# Real in_forward answers a TLS ClientHello and sends HELO at once. Waiting longer than this
# for either means a protocol mismatch is likely: a second connection then asks the server
# what it speaks, so the error names the cause instead of timing out and retrying.
FIRST_REPLY_WAIT = 1.5
# OpenSSL's reasons when the "TLS server" answered with something that is not TLS.
NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
NOT_TLS = "server does not speak TLS (no <transport tls>); use fluentd://"
SPEAKS_TLS = "server speaks TLS; use fluentd+tls://"
NO_SECURITY = "server has no <security>; drop shared_key_env"
WANTS_KEY = "the server requires shared-key authentication (set shared_key_env)"


class Retryable(Exception):
    """The attempt failed in a way a reconnect may cure (timeout, disconnect, bad ack)."""


class ReplyTimeout(Retryable):
    """No reply within the deadline."""


class Fatal(Exception):
    """Retrying will not help (certificate rejected, shared key rejected)."""


def sha512_hex(*parts: bytes | str) -> str:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise Retryable(f"invalid HELO field {type(value).__name__}")


def is_helo(message: Any) -> bool:
    return (
        isinstance(message, list)
        and len(message) == 2
        and message[0] == "HELO"
        and isinstance(message[1], dict)
    )


def new_chunk_id() -> str:
    """A chunk id; it stays the same when the chunk is resent, so a receiver can de-duplicate."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


@dataclass(slots=True)
class Chunk:
    """One Forward message with its chunk id, acknowledged by the receiver as a whole."""

    chunk_id: str
    message: bytes


class Connection:
    """One established connection: socket, the stream decoder for replies, and HELO keepalive."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self.keepalive = True
        self.reused = False
        self.received = False  # any byte from the server yet

    def read(self, deadline: float, waiting_for: str, timeout: float) -> Any:
        """The next message from the server; `ReplyTimeout` once `deadline` passes."""
        while True:
            try:
                return self.unpacker.unpack()
            except msgpack.OutOfData:
                pass
            except (ValueError, msgpack.UnpackException) as exc:
                raise Retryable(
                    f"invalid msgpack from the server while waiting for {waiting_for}: "
                    f"{one_line(str(exc))[:80]}"
                ) from None
            try:
                data = waits.recv(self.sock, 65536, deadline, self.stop)
            except TimeoutError:
                raise ReplyTimeout(f"no {waiting_for} within {timeout:g}s") from None
            if not data:
                raise Retryable(f"connection closed by the server while waiting for {waiting_for}")
            self.received = True
            self.unpacker.feed(data)

    def send(self, data: bytes, timeout: float) -> None:
        waits.send_all(self.sock, data, time.monotonic() + timeout, self.stop)

    def close(self) -> None:
        waits.close_socket(self.sock)


class ForwardTransport:
    """Connections to one Forward receiver as the sink is configured."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tag: str,
        ssl_context: ssl.SSLContext | None,
        shared_key: str | None,
        username: str,
        password: str,
        self_hostname: str,
        connect_timeout: float,
        ack_timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self.tag = tag
        self._ssl_context = ssl_context
        self._shared_key = shared_key
        self._username = username
        self._password = password
        self.self_hostname = self_hostname
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.stop = threading.Event()
        self._packer = msgpack.Packer(use_bin_type=True)

    @property
    def tls(self) -> bool:
        return self._ssl_context is not None

    @property
    def shared_key(self) -> bool:
        """Whether connections authenticate with a shared key (HELO/PING/PONG)."""
        return self._shared_key is not None

    @property
    def user_auth(self) -> bool:
        return bool(self._username)

    def connect(self) -> Connection:
        """A new connection, TLS and shared-key handshakes done."""
        sock = waits.connect(self.host, self.port, self.connect_timeout, self.stop)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(
                    sock, server_hostname=self.host, do_handshake_on_connect=False
                )
                self._tls_handshake(sock)
            conn = Connection(sock, self.stop)
            if self._shared_key is not None:
                self._handshake(conn, self._shared_key)
        except BaseException:
            waits.close_socket(sock)
            raise
        return conn

    def _tls_handshake(self, sock: ssl.SSLSocket) -> None:
        started = time.monotonic()
        deadline = started + self.connect_timeout
        first = started + min(FIRST_REPLY_WAIT, self.connect_timeout)
        try:
            try:
                waits.sliced(sock, sock.do_handshake, first, self.stop)
            except TimeoutError:
                # No ServerHello yet: a plain in_forward without <security> stays silent
                # forever. Ask it on a second connection; else go on waiting (a slow server).
                if self._probe(tls=False) in ("helo", "ack"):
                    raise Fatal(NOT_TLS) from None
                waits.sliced(sock, sock.do_handshake, max(deadline, first), self.stop)
        except ssl.SSLCertVerificationError as exc:
            raise Fatal(
                f"TLS certificate verification failed: {one_line(exc.verify_message or str(exc))}"
            ) from None
        except ssl.SSLError as exc:
            # A plain receiver that closed on our ClientHello fails like a broken TLS one.
            if exc.reason in NOT_TLS_REASONS or self._probe(tls=False) in ("helo", "ack"):
                raise Fatal(NOT_TLS) from None
            raise Retryable(f"TLS handshake failed: {one_line(exc.reason or str(exc))}") from None
        except TimeoutError:
            raise ReplyTimeout(f"no TLS handshake within {self.connect_timeout:g}s") from None
        except OSError:
            if self._probe(tls=False) in ("helo", "ack"):
                raise Fatal(NOT_TLS) from None
            raise

    # -- diagnosis of a protocol mismatch --------------------------------------------------------

    def _probe(self, *, tls: bool) -> str:
        """What the server answers on a fresh connection (plain TCP or this sink's TLS) that
        sends nothing but an empty Forward message with a chunk id: "helo" (it wants a shared
        key), "ack" (it accepts events without one) or "" (anything else). An empty message
        emits no event in Fluentd."""
        wait = min(FIRST_REPLY_WAIT, self.connect_timeout)
        sock: socket.socket | None = None
        try:
            sock = waits.connect(self.host, self.port, wait, self.stop)
            if tls:
                assert self._ssl_context is not None
                sock = self._ssl_context.wrap_socket(
                    sock, server_hostname=self.host, do_handshake_on_connect=False
                )
                waits.sliced(sock, sock.do_handshake, time.monotonic() + wait, self.stop)
            conn = Connection(sock, self.stop)
            with contextlib.suppress(ReplyTimeout):
                first = conn.read(time.monotonic() + min(0.3, wait), "HELO", wait)
                return "helo" if is_helo(first) else ""
            chunk_id = new_chunk_id()
            conn.send(msgpack.packb([self.tag, [], {"chunk": chunk_id}]), wait)
            reply = conn.read(time.monotonic() + wait, "ack", wait)
            if is_helo(reply):
                return "helo"
            return "ack" if isinstance(reply, dict) and reply.get("ack") == chunk_id else ""
        except (Retryable, OSError, ValueError):
            return ""
        finally:
            if sock is not None:
                waits.close_socket(sock)

    def _speaks_tls(self) -> bool:
        """True when the server completes a TLS handshake (certificate not checked here)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        wait = min(FIRST_REPLY_WAIT, self.connect_timeout)
        try:
            with waits.connect(self.host, self.port, wait, self.stop) as raw:
                sock = context.wrap_socket(
                    raw, server_hostname=self.host, do_handshake_on_connect=False
                )
                waits.sliced(sock, sock.do_handshake, time.monotonic() + wait, self.stop)
                waits.close_socket(sock)
                return True
        except (OSError, ValueError):
            return False

    def mismatch_of(self, conn: Connection | None, exc: Exception) -> str | None:
        """After a new connection was closed on us before any byte came back: the protocol
        mismatch behind it, if any (a TLS server resets a plain client's first message). A
        timeout is a slow receiver, not a mismatch."""
        if (
            conn is None
            or conn.reused
            or conn.received
            or isinstance(exc, ReplyTimeout | TimeoutError)
        ):
            return None
        return self._mismatch_after_silence()

    def _mismatch_after_silence(self) -> str | None:
        """The cause when a plain connection got no reply at all (closed or silent)."""
        if self._ssl_context is None and self._speaks_tls():
            return SPEAKS_TLS
        return None

    # -- shared-key handshake ---------------------------------------------------------------------

    def _handshake(self, conn: Connection, shared_key: str) -> None:
        deadline = time.monotonic() + self.connect_timeout
        first_wait = min(FIRST_REPLY_WAIT, self.connect_timeout)
        try:
            helo = conn.read(time.monotonic() + first_wait, "HELO", self.connect_timeout)
        except ReplyTimeout:
            # in_forward sends HELO as soon as a connection opens; silence means either no
            # <security> there, or a TLS server waiting for our ClientHello.
            if self._probe(tls=self._ssl_context is not None) == "ack":
                raise Fatal(NO_SECURITY) from None
            if cause := self._mismatch_after_silence():
                raise Fatal(cause) from None
            helo = conn.read(deadline, "HELO", self.connect_timeout)
        except Retryable:
            if not conn.received and (cause := self._mismatch_after_silence()):
                raise Fatal(cause) from None
            raise
        if not is_helo(helo) or "nonce" not in helo[1]:
            if isinstance(helo, dict) and "ack" in helo:
                raise Fatal(NO_SECURITY)
            raise Fatal("expected a HELO from the server (is shared-key auth enabled there?)")
        options = helo[1]
        nonce = _as_bytes(options["nonce"])
        auth_salt = _as_bytes(options.get("auth") or b"")
        conn.keepalive = bool(options.get("keepalive", True))
        salt = os.urandom(16).hex()
        # in_forward always sends an `auth` salt with <security>, also with `user_auth false`;
        # like Fluentd's out_forward, answer with the user name ('' without one) and its digest.
        ping = [
            "PING",
            self.self_hostname,
            salt,
            sha512_hex(salt, self.self_hostname, nonce, shared_key),
            self._username,
            sha512_hex(auth_salt, self._username, self._password) if auth_salt else "",
        ]
        conn.send(self._packer.pack(ping), max(deadline - time.monotonic(), 0.001))
        pong = conn.read(deadline, "PONG", self.connect_timeout)
        if not (isinstance(pong, list) and len(pong) == 5 and pong[0] == "PONG"):
            raise Fatal("invalid PONG from the server")
        _, ok, reason, server_hostname, server_digest = pong
        if ok is not True:
            reason = one_line(str(reason))[:200] or "no reason"
            if "password" in reason or "username" in reason:
                raise Fatal(f"user name or password rejected by the server ({reason})")
            if "shared_key" in reason:
                raise Fatal(f"shared key rejected by the server ({reason})")
            raise Fatal(f"authentication rejected by the server ({reason})")
        expected = sha512_hex(salt, _as_bytes(server_hostname), nonce, shared_key)
        if not isinstance(server_digest, str) or not hmac.compare_digest(server_digest, expected):
            raise Fatal("the server failed shared-key verification (it does not know the key)")

    def check_without_key(self, conn: Connection) -> None:
        """Send an empty Forward message and want its ack: proves the receiver takes events
        from us as configured (a HELO means it wants a shared key)."""
        chunk_id = new_chunk_id()
        conn.send(self._packer.pack([self.tag, [], {"chunk": chunk_id}]), self.ack_timeout)
        self._read_ack(conn, {chunk_id: Chunk(chunk_id, b"")})

    def send_and_wait(self, conn: Connection, pending: dict[str, Chunk]) -> None:
        """Send the pending chunks (at most MAX_IN_FLIGHT unacked at a time, so that unread
        acks cannot stall the server), then collect the acks; acked chunks leave `pending`."""
        in_flight = 0
        for chunk in list(pending.values()):
            conn.send(chunk.message, self.ack_timeout)
            in_flight += 1
            if in_flight > MAX_IN_FLIGHT:
                self._read_ack(conn, pending)
                in_flight -= 1
        while pending:
            self._read_ack(conn, pending)

    def _read_ack(self, conn: Connection, pending: dict[str, Chunk]) -> None:
        reply = conn.read(time.monotonic() + self.ack_timeout, "ack", self.ack_timeout)
        if isinstance(reply, dict) and "ack" in reply:
            if pending.pop(reply["ack"], None) is None:
                raise Retryable(f"ack for an unknown chunk {str(reply['ack'])[:40]!r}")
        elif is_helo(reply):
            raise Fatal(WANTS_KEY)
        else:
            raise Retryable(f"unexpected reply instead of an ack: {str(reply)[:60]!r}")
