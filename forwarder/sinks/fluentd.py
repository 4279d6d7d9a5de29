"""Fluentd sink: speaks the Forward protocol v1 itself (PackedForward chunks, each acknowledged by
the receiver), with optional gzip, TLS and the HELO/PING/PONG shared-key handshake."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import hmac
import os
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from fluent.sender import EventTime

from forwarder.retry import sink_retrying
from forwarder.sinks import waits
from forwarder.sinks.base import Record, Rejection, Sink, SinkConfigError, SinkError, SinkSpec

KNOWN_PARAMS = {
    "tag",
    "ca_file",
    "verify",
    "shared_key_env",
    "shared_key_file",
    "username_env",
    "password_env",
    "self_hostname",
    "compress",
    "ack_timeout",
    "timeout",
    "retries",
    "backoff",
    "chunk_bytes",
}
MAX_BACKOFF = 10.0
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


class _Retryable(Exception):
    """The attempt failed in a way a reconnect may cure (timeout, disconnect, bad ack)."""


class _Timeout(_Retryable):
    """No reply within the deadline."""


class _Fatal(Exception):
    """Retrying will not help (certificate rejected, shared key rejected)."""


def _sha512_hex(*parts: bytes | str) -> str:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise _Retryable(f"invalid HELO field {type(value).__name__}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by the server"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _one_line(str(exc)) or type(exc).__name__


@dataclass(slots=True)
class _Chunk:
    chunk_id: str
    message: bytes
    size: int


class _Connection:
    """One established connection: socket, the stream decoder for replies, and HELO keepalive."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self.keepalive = True
        self.reused = False
        self.received = False  # any byte from the server yet

    def read(self, deadline: float, waiting_for: str, timeout: float) -> Any:
        """The next message from the server; `_Timeout` once `deadline` passes."""
        while True:
            try:
                return self.unpacker.unpack()
            except msgpack.OutOfData:
                pass
            except (ValueError, msgpack.UnpackException) as exc:
                raise _Retryable(
                    f"invalid msgpack from the server while waiting for {waiting_for}: "
                    f"{_one_line(str(exc))[:80]}"
                ) from None
            try:
                data = waits.recv(self.sock, 65536, deadline, self.stop)
            except TimeoutError:
                raise _Timeout(f"no {waiting_for} within {timeout:g}s") from None
            if not data:
                raise _Retryable(f"connection closed by the server while waiting for {waiting_for}")
            self.received = True
            self.unpacker.feed(data)

    def send(self, data: bytes, timeout: float) -> None:
        waits.send_all(self.sock, data, time.monotonic() + timeout, self.stop)

    def close(self) -> None:
        _close(self.sock)


def _close(sock: socket.socket) -> None:
    """Close; a TLS socket first says close_notify, so the receiver sees a clean end of stream
    (without it Fluentd logs `unexpected eof while reading` for every connection)."""
    if isinstance(sock, ssl.SSLSocket):
        with contextlib.suppress(OSError, ValueError):
            sock.settimeout(1.0)
            sock.unwrap()
    with contextlib.suppress(OSError):
        sock.close()


class FluentdSink(Sink):
    """`fluentd://HOST:PORT?tag=openai.audit` and `fluentd+tls://...`; see docs/sink-fluentd.md."""

    def __init__(
        self,
        spec: SinkSpec,
        *,
        host: str,
        port: int,
        tag: str,
        ssl_context: ssl.SSLContext | None,
        shared_key: str | None,
        username: str,
        password: str,
        self_hostname: str,
        compress: bool,
        ack_timeout: float,
        connect_timeout: float,
        retries: int,
        backoff: float,
        chunk_bytes: int,
    ) -> None:
        super().__init__(spec)
        self.host = host
        self.port = port
        self.tag = tag
        self._ssl_context = ssl_context
        self._shared_key = shared_key
        self._username = username
        self._password = password
        self.self_hostname = self_hostname
        self.compress = compress
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.chunk_bytes = chunk_bytes
        self._conn: _Connection | None = None
        self._packer = msgpack.Packer(use_bin_type=True)
        self._prefix = f"fluentd [{host}]:{port}" if ":" in host else f"fluentd {host}:{port}"

    def __repr__(self) -> str:
        return f"FluentdSink({self.spec.display!r})"

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> FluentdSink:
        spec.reject_unknown(KNOWN_PARAMS)
        host, port = spec.require_host_port()
        tls = spec.scheme == "fluentd+tls"
        tag = spec.take("tag", "openai.audit") or ""
        if not tag:
            raise SinkConfigError(f"sink {spec.display}: tag must not be empty")
        ssl_context = None
        if tls:
            ssl_context = _make_ssl_context(spec)
        elif "ca_file" in spec.params or "verify" in spec.params:
            raise SinkConfigError(
                f"sink {spec.display}: ca_file and verify apply to fluentd+tls:// only"
            )
        shared_key = _env_secret(spec, "shared_key_env")
        if spec.take("shared_key_file") is not None:
            if shared_key is not None:
                raise SinkConfigError(
                    f"sink {spec.display}: give shared_key_env or shared_key_file, not both"
                )
            shared_key = _file_secret(spec, "shared_key_file")
        username = _env_secret(spec, "username_env")
        password = _env_secret(spec, "password_env")
        if (username is None) != (password is None):
            raise SinkConfigError(f"sink {spec.display}: username_env and password_env go together")
        if username is not None and shared_key is None:
            raise SinkConfigError(
                f"sink {spec.display}: user authentication needs shared_key_env as well"
            )
        return cls(
            spec,
            host=host,
            port=port,
            tag=tag,
            ssl_context=ssl_context,
            shared_key=shared_key,
            username=username or "",
            password=password or "",
            self_hostname=spec.take("self_hostname") or socket.gethostname(),
            compress=spec.choice_param("compress", "none", ("none", "gzip")) == "gzip",
            ack_timeout=spec.float_param("ack_timeout", 30.0, minimum=0.001),
            connect_timeout=spec.float_param("timeout", 10.0, minimum=0.001),
            retries=spec.int_param("retries", 3, minimum=1),
            backoff=spec.float_param("backoff", 0.5),
            chunk_bytes=spec.int_param("chunk_bytes", 4 << 20, minimum=1024),
        )

    # -- interface -----------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        if not records:
            return []
        chunks, rejections = self._encode(records)
        pending = {chunk.chunk_id: chunk for chunk in chunks}
        if pending:
            # Attempts carry `pending` over: a chunk acked once is not sent again.
            sink_retrying(
                stop=self.stop,
                what=self._prefix,
                attempts=self.retries,
                backoff=self.backoff,
                cap=MAX_BACKOFF,
                give_up=lambda exc, attempts: SinkError(
                    f"{exc} ({attempts} attempt{'s' if attempts > 1 else ''}, "
                    f"{len(pending)} chunk(s) unacknowledged)"
                ),
            )(self._attempt, pending)
        if self._conn is not None and not self._conn.keepalive:
            self._disconnect()
        return rejections

    def _attempt(self, pending: dict[str, _Chunk]) -> None:
        """Send what is pending and collect its acks; a failure is a `SinkError` (permanent
        when retrying cannot help)."""
        conn = None
        try:
            conn = self._connect_once()
            self._send_and_wait(conn, pending)
        except _Fatal as exc:
            self._disconnect()
            raise SinkError(f"{self._prefix}: {exc}", permanent=True) from None
        except (_Retryable, OSError) as exc:
            self._disconnect()
            if cause := self._mismatch_of(conn, exc):
                raise SinkError(f"{self._prefix}: {cause}", permanent=True) from None
            if conn is not None and conn.reused:
                # The idle connection died (e.g. the receiver restarted): reconnect at once,
                # which is no backoff; the new connection is not reused, so this happens once.
                return self._attempt(pending)
            reason = str(exc) if isinstance(exc, _Retryable) else _describe(exc)
            raise SinkError(f"{self._prefix}: {_one_line(reason)}") from None
        except BaseException:
            self._disconnect()  # interrupted mid-message: never reuse this stream
            raise

    def check(self) -> str:
        self._disconnect()
        conn = None
        try:
            conn = self._connect_once()
            if self._shared_key is None:
                self._check_without_key(conn)
        except _Fatal as exc:
            raise SinkError(f"{self._prefix}: {exc}", permanent=True) from None
        except (_Retryable, OSError) as exc:
            self._disconnect()
            if cause := self._mismatch_of(conn, exc):
                raise SinkError(f"{self._prefix}: {cause}", permanent=True) from None
            reason = str(exc) if isinstance(exc, _Retryable) else _describe(exc)
            raise SinkError(f"{self._prefix}: {_one_line(reason)}") from None
        finally:
            self._disconnect()
        parts = ["tls" if self._ssl_context is not None else "tcp"]
        if self._shared_key is not None:
            parts.append("shared key ok")
        if self._username:
            parts.append("user auth ok")
        return f"{self.spec.scheme}://{self.host}:{self.port}: connected ({', '.join(parts)})"

    def close(self) -> None:
        self._disconnect()

    # -- encoding ------------------------------------------------------------------------------

    def _encode(self, records: Sequence[Record]) -> tuple[list[_Chunk], list[Rejection]]:
        """Pack `[EventTime, doc]` entries and cut them into chunks of at most `chunk_bytes`."""
        pack = self._packer.pack
        times: dict[Any, EventTime] = {}
        rejections: list[Rejection] = []
        chunks: list[_Chunk] = []
        parts: list[bytes] = []
        size = 0
        for record in records:
            ts = record.effective_at
            event_time = times.get(ts)
            if event_time is None:
                event_time = times[ts] = _event_time(ts)
            try:
                entry = pack((event_time, record.doc))
            except (TypeError, ValueError, OverflowError) as exc:
                self._packer.reset()
                rejections.append(
                    Rejection(record, f"cannot encode as msgpack: {_one_line(str(exc))}")
                )
                continue
            if parts and size + len(entry) > self.chunk_bytes:
                chunks.append(self._chunk(parts, size))
                parts, size = [], 0
            parts.append(entry)
            size += len(entry)
        if parts:
            chunks.append(self._chunk(parts, size))
        return chunks, rejections

    def _chunk(self, parts: list[bytes], size: int) -> _Chunk:
        entries = b"".join(parts)
        # The id stays the same when the chunk is resent, so a receiver can de-duplicate.
        chunk_id = base64.b64encode(os.urandom(16)).decode("ascii")
        option: dict[str, Any] = {"size": len(parts), "chunk": chunk_id}
        if self.compress:
            entries = gzip.compress(entries, compresslevel=1, mtime=0)
            option["compressed"] = "gzip"
        message = self._packer.pack([self.tag, entries, option])
        return _Chunk(chunk_id, message, len(parts))

    # -- connection ------------------------------------------------------------------------------

    def _connect_once(self) -> _Connection:
        if self._conn is not None:
            self._conn.reused = True
            return self._conn
        sock = waits.connect(self.host, self.port, self.connect_timeout, self.stop)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(
                    sock, server_hostname=self.host, do_handshake_on_connect=False
                )
                self._tls_handshake(sock)
            conn = _Connection(sock, self.stop)
            if self._shared_key is not None:
                self._handshake(conn, self._shared_key)
        except BaseException:
            _close(sock)
            raise
        self._conn = conn
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
                    raise _Fatal(NOT_TLS) from None
                waits.sliced(sock, sock.do_handshake, max(deadline, first), self.stop)
        except ssl.SSLCertVerificationError as exc:
            raise _Fatal(
                f"TLS certificate verification failed: {_one_line(exc.verify_message or str(exc))}"
            ) from None
        except ssl.SSLError as exc:
            # A plain receiver that closed on our ClientHello fails like a broken TLS one.
            if exc.reason in NOT_TLS_REASONS or self._probe(tls=False) in ("helo", "ack"):
                raise _Fatal(NOT_TLS) from None
            raise _Retryable(f"TLS handshake failed: {_one_line(exc.reason or str(exc))}") from None
        except TimeoutError:
            raise _Timeout(f"no TLS handshake within {self.connect_timeout:g}s") from None
        except OSError:
            if self._probe(tls=False) in ("helo", "ack"):
                raise _Fatal(NOT_TLS) from None
            raise

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

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
            conn = _Connection(sock, self.stop)
            with contextlib.suppress(_Timeout):
                first = conn.read(time.monotonic() + min(0.3, wait), "HELO", wait)
                return "helo" if _is_helo(first) else ""
            chunk_id = base64.b64encode(os.urandom(16)).decode("ascii")
            conn.send(msgpack.packb([self.tag, [], {"chunk": chunk_id}]), wait)
            reply = conn.read(time.monotonic() + wait, "ack", wait)
            if _is_helo(reply):
                return "helo"
            return "ack" if isinstance(reply, dict) and reply.get("ack") == chunk_id else ""
        except (_Retryable, OSError, ValueError):
            return ""
        finally:
            if sock is not None:
                _close(sock)

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
                _close(sock)
                return True
        except (OSError, ValueError):
            return False

    def _mismatch_of(self, conn: _Connection | None, exc: Exception) -> str | None:
        """After a new connection was closed on us before any byte came back: the protocol
        mismatch behind it, if any (a TLS server resets a plain client's first message). A
        timeout is a slow receiver, not a mismatch."""
        if conn is None or conn.reused or conn.received or isinstance(exc, _Timeout | TimeoutError):
            return None
        return self._mismatch_after_silence()

    def _mismatch_after_silence(self) -> str | None:
        """The cause when a plain connection got no reply at all (closed or silent)."""
        if self._ssl_context is None and self._speaks_tls():
            return SPEAKS_TLS
        return None

    # -- shared-key handshake ---------------------------------------------------------------------

    def _handshake(self, conn: _Connection, shared_key: str) -> None:
        deadline = time.monotonic() + self.connect_timeout
        first_wait = min(FIRST_REPLY_WAIT, self.connect_timeout)
        try:
            helo = conn.read(time.monotonic() + first_wait, "HELO", self.connect_timeout)
        except _Timeout:
            # in_forward sends HELO as soon as a connection opens; silence means either no
            # <security> there, or a TLS server waiting for our ClientHello.
            if self._probe(tls=self._ssl_context is not None) == "ack":
                raise _Fatal(NO_SECURITY) from None
            if cause := self._mismatch_after_silence():
                raise _Fatal(cause) from None
            helo = conn.read(deadline, "HELO", self.connect_timeout)
        except _Retryable:
            if not conn.received and (cause := self._mismatch_after_silence()):
                raise _Fatal(cause) from None
            raise
        if not _is_helo(helo) or "nonce" not in helo[1]:
            if isinstance(helo, dict) and "ack" in helo:
                raise _Fatal(NO_SECURITY)
            raise _Fatal("expected a HELO from the server (is shared-key auth enabled there?)")
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
            _sha512_hex(salt, self.self_hostname, nonce, shared_key),
            self._username,
            _sha512_hex(auth_salt, self._username, self._password) if auth_salt else "",
        ]
        conn.send(self._packer.pack(ping), max(deadline - time.monotonic(), 0.001))
        pong = conn.read(deadline, "PONG", self.connect_timeout)
        if not (isinstance(pong, list) and len(pong) == 5 and pong[0] == "PONG"):
            raise _Fatal("invalid PONG from the server")
        _, ok, reason, server_hostname, server_digest = pong
        if ok is not True:
            reason = _one_line(str(reason))[:200] or "no reason"
            if "password" in reason or "username" in reason:
                raise _Fatal(f"user name or password rejected by the server ({reason})")
            if "shared_key" in reason:
                raise _Fatal(f"shared key rejected by the server ({reason})")
            raise _Fatal(f"authentication rejected by the server ({reason})")
        expected = _sha512_hex(salt, _as_bytes(server_hostname), nonce, shared_key)
        if not isinstance(server_digest, str) or not hmac.compare_digest(server_digest, expected):
            raise _Fatal("the server failed shared-key verification (it does not know the key)")

    def _check_without_key(self, conn: _Connection) -> None:
        """Send an empty Forward message and want its ack: proves the receiver takes events
        from us as configured (a HELO means it wants a shared key)."""
        chunk_id = base64.b64encode(os.urandom(16)).decode("ascii")
        conn.send(self._packer.pack([self.tag, [], {"chunk": chunk_id}]), self.ack_timeout)
        self._read_ack(conn, {chunk_id: _Chunk(chunk_id, b"", 0)})

    def _send_and_wait(self, conn: _Connection, pending: dict[str, _Chunk]) -> None:
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

    def _read_ack(self, conn: _Connection, pending: dict[str, _Chunk]) -> None:
        reply = conn.read(time.monotonic() + self.ack_timeout, "ack", self.ack_timeout)
        if isinstance(reply, dict) and "ack" in reply:
            if pending.pop(reply["ack"], None) is None:
                raise _Retryable(f"ack for an unknown chunk {str(reply['ack'])[:40]!r}")
        elif _is_helo(reply):
            raise _Fatal(WANTS_KEY)
        else:
            raise _Retryable(f"unexpected reply instead of an ack: {str(reply)[:60]!r}")


def _is_helo(message: Any) -> bool:
    return (
        isinstance(message, list)
        and len(message) == 2
        and message[0] == "HELO"
        and isinstance(message[1], dict)
    )


def _event_time(ts: Any) -> EventTime:
    if isinstance(ts, int):
        return EventTime(ts, 0)
    seconds = int(ts)
    return EventTime(seconds, min(round((ts - seconds) * 1e9), 999_999_999))


def _env_secret(spec: SinkSpec, param: str) -> str | None:
    variable = spec.take(param)
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None or value == "":
        raise SinkConfigError(
            f"sink {spec.display}: {param}: environment variable {variable} is not set"
        )
    return value


def _file_secret(spec: SinkSpec, param: str) -> str:
    """A secret from a file (Docker/Kubernetes secrets, systemd credentials)."""
    path = spec.take(param)
    assert path is not None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SinkConfigError(
            f"sink {spec.display}: {param}: cannot read {path} ({exc.strerror or exc})"
        ) from None
    if not value:
        raise SinkConfigError(f"sink {spec.display}: {param}: {path} is empty")
    return value


def _make_ssl_context(spec: SinkSpec) -> ssl.SSLContext:
    verify = spec.bool_param("verify", True)
    ca_file = spec.take("ca_file")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SinkConfigError(
            f"sink {spec.display}: ca_file {ca_file!r} cannot be loaded: {_describe(exc)}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
