"""Fluentd sink: speaks the Forward protocol v1 itself (PackedForward chunks, each acknowledged by
the receiver), with optional gzip, TLS and the HELO/PING/PONG shared-key handshake. This module
holds the configuration, the encoding and the glue; `transport` the connection, handshakes and
acks."""

from __future__ import annotations

import gzip
import os
import socket
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
from fluent.sender import EventTime

from forwarder.errors import one_line
from forwarder.retry import sink_retrying
from forwarder.sinks.base import Record, Rejection, Sink, SinkConfigError, SinkError, SinkSpec
from forwarder.sinks.fluentd.transport import (
    Chunk,
    Connection,
    Fatal,
    ForwardTransport,
    Retryable,
    describe,
    new_chunk_id,
)

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


class FluentdSink(Sink):
    """`fluentd://HOST:PORT?tag=openai.audit` and `fluentd+tls://...`; see docs/sink-fluentd.md."""

    def __init__(
        self,
        spec: SinkSpec,
        *,
        transport: ForwardTransport,
        compress: bool,
        retries: int,
        backoff: float,
        chunk_bytes: int,
    ) -> None:
        super().__init__(spec)
        self._transport = transport
        self.host = transport.host
        self.port = transport.port
        self.tag = transport.tag
        self.compress = compress
        self.retries = retries
        self.backoff = backoff
        self.chunk_bytes = chunk_bytes
        self._conn: Connection | None = None
        self._packer = msgpack.Packer(use_bin_type=True)
        host, port = self.host, self.port
        self._prefix = f"fluentd [{host}]:{port}" if ":" in host else f"fluentd {host}:{port}"

    def bind_stop(self, stop: threading.Event) -> None:
        super().bind_stop(stop)
        self._transport.stop = stop

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
        transport = ForwardTransport(
            host=host,
            port=port,
            tag=tag,
            ssl_context=ssl_context,
            shared_key=shared_key,
            username=username or "",
            password=password or "",
            self_hostname=spec.take("self_hostname") or socket.gethostname(),
            connect_timeout=spec.float_param("timeout", 10.0, minimum=0.001),
            ack_timeout=spec.float_param("ack_timeout", 30.0, minimum=0.001),
        )
        return cls(
            spec,
            transport=transport,
            compress=spec.choice_param("compress", "none", ("none", "gzip")) == "gzip",
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

    def _attempt(self, pending: dict[str, Chunk]) -> None:
        """Send what is pending and collect its acks; a failure is a `SinkError` (permanent
        when retrying cannot help)."""
        conn = None
        try:
            conn = self._connect_once()
            self._transport.send_and_wait(conn, pending)
        except Fatal as exc:
            self._disconnect()
            raise SinkError(f"{self._prefix}: {exc}", permanent=True) from None
        except (Retryable, OSError) as exc:
            self._disconnect()
            if cause := self._transport.mismatch_of(conn, exc):
                raise SinkError(f"{self._prefix}: {cause}", permanent=True) from None
            if conn is not None and conn.reused:
                # The idle connection died (e.g. the receiver restarted): reconnect at once,
                # which is no backoff; the new connection is not reused, so this happens once.
                return self._attempt(pending)
            reason = str(exc) if isinstance(exc, Retryable) else describe(exc)
            raise SinkError(f"{self._prefix}: {one_line(reason)}") from None
        except BaseException:
            self._disconnect()  # interrupted mid-message: never reuse this stream
            raise

    def check(self) -> str:
        self._disconnect()
        conn = None
        try:
            conn = self._connect_once()
            if not self._transport.shared_key:
                self._transport.check_without_key(conn)
        except Fatal as exc:
            raise SinkError(f"{self._prefix}: {exc}", permanent=True) from None
        except (Retryable, OSError) as exc:
            self._disconnect()
            if cause := self._transport.mismatch_of(conn, exc):
                raise SinkError(f"{self._prefix}: {cause}", permanent=True) from None
            reason = str(exc) if isinstance(exc, Retryable) else describe(exc)
            raise SinkError(f"{self._prefix}: {one_line(reason)}") from None
        finally:
            self._disconnect()
        parts = ["tls" if self._transport.tls else "tcp"]
        if self._transport.shared_key:
            parts.append("shared key ok")
        if self._transport.user_auth:
            parts.append("user auth ok")
        return f"{self.spec.scheme}://{self.host}:{self.port}: connected ({', '.join(parts)})"

    def close(self) -> None:
        self._disconnect()

    # -- encoding ------------------------------------------------------------------------------

    def _encode(self, records: Sequence[Record]) -> tuple[list[Chunk], list[Rejection]]:
        """Pack `[EventTime, doc]` entries and cut them into chunks of at most `chunk_bytes`."""
        pack = self._packer.pack
        times: dict[Any, EventTime] = {}
        rejections: list[Rejection] = []
        chunks: list[Chunk] = []
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
                    Rejection(record, f"cannot encode as msgpack: {one_line(str(exc))}")
                )
                continue
            if parts and size + len(entry) > self.chunk_bytes:
                chunks.append(self._chunk(parts))
                parts, size = [], 0
            parts.append(entry)
            size += len(entry)
        if parts:
            chunks.append(self._chunk(parts))
        return chunks, rejections

    def _chunk(self, parts: list[bytes]) -> Chunk:
        entries = b"".join(parts)
        chunk_id = new_chunk_id()
        option: dict[str, Any] = {"size": len(parts), "chunk": chunk_id}
        if self.compress:
            entries = gzip.compress(entries, compresslevel=1, mtime=0)
            option["compressed"] = "gzip"
        message = self._packer.pack([self.tag, entries, option])
        return Chunk(chunk_id, message)

    # -- connection ------------------------------------------------------------------------------

    def _connect_once(self) -> Connection:
        """The kept-alive connection (marked as reused), or a new one."""
        if self._conn is not None:
            self._conn.reused = True
            return self._conn
        self._conn = self._transport.connect()
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
            f"sink {spec.display}: ca_file {ca_file!r} cannot be loaded: {describe(exc)}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
