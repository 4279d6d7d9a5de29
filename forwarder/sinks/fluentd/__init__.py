"""Fluentd sink: speaks the Forward protocol v1 itself (PackedForward chunks, each acknowledged by
the receiver), with optional gzip, TLS and the HELO/PING/PONG shared-key handshake. This module
is the glue: `config` reads the URL, `encoder` makes the chunks, `transport` holds the
connection, handshakes and acks."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from forwarder.errors import one_line
from forwarder.sinks.base import Record, Rejection, Sink, SinkError, SinkSpec, short_reason
from forwarder.sinks.fluentd import config
from forwarder.sinks.fluentd.encoder import ChunkEncoder
from forwarder.sinks.fluentd.transport import Chunk, Connection, Fatal, Retryable
from forwarder.sinks.retrying import sink_retrying

MAX_BACKOFF = 10.0


class FluentdSink(Sink):
    """`fluentd://HOST:PORT?tag=openai.audit` and `fluentd+tls://...`; see docs/sink-fluentd.md."""

    def __init__(self, spec: SinkSpec, settings: config.FluentdConfig) -> None:
        super().__init__(spec)
        self._transport = transport = settings.transport
        self.host = transport.host
        self.port = transport.port
        self.tag = transport.tag
        self.compress = settings.compress
        self.retries = settings.retries
        self.backoff = settings.backoff
        self.chunk_bytes = settings.chunk_bytes
        self._encoder = ChunkEncoder(
            self.tag, compress=settings.compress, chunk_bytes=settings.chunk_bytes
        )
        self._conn: Connection | None = None
        host, port = self.host, self.port
        self._prefix = f"fluentd [{host}]:{port}" if ":" in host else f"fluentd {host}:{port}"

    def bind_stop(self, stop: threading.Event) -> None:
        super().bind_stop(stop)
        self._transport.stop = stop

    def __repr__(self) -> str:
        return f"FluentdSink({self.spec.display!r})"

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> FluentdSink:
        return cls(spec, config.parse(spec))

    # -- interface -----------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        if not records:
            return []
        chunks, rejections = self._encoder.encode(records)
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
        except (Fatal, Retryable, OSError) as exc:
            if conn is not None and conn.reused and not isinstance(exc, Fatal):
                # The idle connection died (e.g. the receiver restarted): reconnect at once,
                # which is no backoff; the new connection is not reused, so this happens once.
                self._disconnect()
                return self._attempt(pending)
            raise self._failure(conn, exc) from None
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
        except (Fatal, Retryable, OSError) as exc:
            raise self._failure(conn, exc) from None
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

    def _failure(self, conn: Connection | None, exc: Exception) -> SinkError:
        """The `SinkError` of a failed connection or exchange (the connection is dropped):
        permanent for a `Fatal` one and for a protocol mismatch, else passing."""
        self._disconnect()
        if isinstance(exc, Fatal):
            return SinkError(f"{self._prefix}: {exc}", permanent=True)
        if cause := self._transport.mismatch_of(conn, exc):
            return SinkError(f"{self._prefix}: {cause}", permanent=True)
        reason = str(exc) if isinstance(exc, Retryable) else short_reason(exc)
        return SinkError(f"{self._prefix}: {one_line(reason)}")

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
