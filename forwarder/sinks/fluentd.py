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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from fluent.sender import EventTime

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

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self.keepalive = True
        self.reused = False

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
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout(f"no {waiting_for} within {timeout:g}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise _Timeout(f"no {waiting_for} within {timeout:g}s") from None
            if not data:
                raise _Retryable(f"connection closed by the server while waiting for {waiting_for}")
            self.unpacker.feed(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


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
        attempt = 0
        while pending:
            attempt += 1
            conn = None
            try:
                conn = self._connect_once()
                self._send_and_wait(conn, pending)
            except _Fatal as exc:
                self._disconnect()
                raise SinkError(f"{self._prefix}: {exc}", permanent=True) from None
            except (_Retryable, OSError) as exc:
                self._disconnect()
                reason = str(exc) if isinstance(exc, _Retryable) else _describe(exc)
                if conn is not None and conn.reused and attempt == 1:
                    # The idle connection died (e.g. the receiver restarted): reconnect at once.
                    attempt = 0
                    continue
                if attempt >= self.retries:
                    raise SinkError(
                        f"{self._prefix}: {_one_line(reason)} "
                        f"({attempt} attempt{'s' if attempt > 1 else ''}, "
                        f"{len(pending)} chunk(s) unacknowledged)"
                    ) from None
                time.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            except BaseException:
                self._disconnect()  # interrupted mid-message: never reuse this stream
                raise
        if self._conn is not None and not self._conn.keepalive:
            self._disconnect()
        return rejections

    def check(self) -> str:
        self._disconnect()
        try:
            conn = self._connect_once()
            if self._shared_key is None:
                self._expect_no_helo(conn)
        except _Fatal as exc:
            raise SinkError(f"{self._prefix}: {exc}", permanent=True) from None
        except (_Retryable, OSError) as exc:
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
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                try:
                    sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
                except ssl.SSLCertVerificationError as exc:
                    raise _Fatal(
                        f"TLS certificate verification failed: "
                        f"{_one_line(exc.verify_message or str(exc))}"
                    ) from None
                except ssl.SSLError as exc:
                    raise _Retryable(
                        f"TLS handshake failed: {_one_line(exc.reason or str(exc))}"
                    ) from None
            conn = _Connection(sock)
            if self._shared_key is not None:
                self._handshake(conn, self._shared_key)
        except BaseException:
            sock.close()
            raise
        self._conn = conn
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _handshake(self, conn: _Connection, shared_key: str) -> None:
        deadline = time.monotonic() + self.connect_timeout
        try:
            helo = conn.read(deadline, "HELO", self.connect_timeout)
        except _Timeout as exc:
            if self._ssl_context is None:
                raise _Timeout(f"{exc} (if the server expects TLS, use fluentd+tls://)") from None
            raise
        if not (
            isinstance(helo, list)
            and len(helo) == 2
            and helo[0] == "HELO"
            and isinstance(helo[1], dict)
            and "nonce" in helo[1]
        ):
            raise _Fatal("expected a HELO from the server (is shared-key auth enabled there?)")
        options = helo[1]
        nonce = _as_bytes(options["nonce"])
        auth_salt = _as_bytes(options.get("auth") or b"")
        conn.keepalive = bool(options.get("keepalive", True))
        if auth_salt and not self._username:
            raise _Fatal("the server requires user authentication (set username_env/password_env)")
        salt = os.urandom(16).hex()
        password_digest = (
            _sha512_hex(auth_salt, self._username, self._password) if auth_salt else ""
        )
        ping = [
            "PING",
            self.self_hostname,
            salt,
            _sha512_hex(salt, self.self_hostname, nonce, shared_key),
            self._username if auth_salt else "",
            password_digest,
        ]
        conn.sock.settimeout(self.connect_timeout)
        conn.sock.sendall(self._packer.pack(ping))
        pong = conn.read(deadline, "PONG", self.connect_timeout)
        if not (isinstance(pong, list) and len(pong) == 5 and pong[0] == "PONG"):
            raise _Fatal("invalid PONG from the server")
        _, ok, reason, server_hostname, server_digest = pong
        if ok is not True:
            raise _Fatal(
                f"shared key rejected by the server ({_one_line(str(reason))[:200] or 'no reason'})"
            )
        expected = _sha512_hex(salt, _as_bytes(server_hostname), nonce, shared_key)
        if not isinstance(server_digest, str) or not hmac.compare_digest(server_digest, expected):
            raise _Fatal("the server failed shared-key verification (it does not know the key)")

    def _expect_no_helo(self, conn: _Connection) -> None:
        """A server that starts with HELO wants a shared key; say so instead of timing out."""
        try:
            wait = min(0.3, self.connect_timeout)
            helo = conn.read(time.monotonic() + wait, "HELO", wait)
        except _Timeout:
            return
        if isinstance(helo, list) and helo and helo[0] == "HELO":
            raise _Fatal("the server requires shared-key authentication (set shared_key_env)")
        raise _Fatal("unexpected data from the server before any event was sent")

    def _send_and_wait(self, conn: _Connection, pending: dict[str, _Chunk]) -> None:
        """Send the pending chunks (at most MAX_IN_FLIGHT unacked at a time, so that unread
        acks cannot stall the server), then collect the acks; acked chunks leave `pending`."""
        in_flight = 0
        for chunk in list(pending.values()):
            conn.sock.settimeout(self.ack_timeout)
            conn.sock.sendall(chunk.message)
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
        elif isinstance(reply, list) and reply[:1] == ["HELO"]:
            raise _Fatal("the server requires shared-key authentication (set shared_key_env)")
        else:
            raise _Retryable(f"unexpected reply instead of an ack: {str(reply)[:60]!r}")


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
