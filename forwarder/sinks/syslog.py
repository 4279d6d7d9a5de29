"""The syslog sink: RFC 5424 messages (JSON or CEF body) over UDP, TCP, TLS (octet-counting
framing) or RELP, the one transport that confirms receipt."""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence

import orjson

from forwarder.retry import sink_retrying
from forwarder.sinks import waits
from forwarder.sinks.base import Record, Rejection, Sink, SinkConfigError, SinkError, SinkSpec
from forwarder.sinks.cef import CefBody
from forwarder.sinks.relp import RelpClient, RelpError, one_line
from forwarder.sinks.rfc5424 import DEFAULT_FACILITY, DEFAULT_SD_ID, MessageBuilder, parse_facility

APP_NAME = "openai-audit-forwarder"
# UDP: rsyslog's (and syslog-ng's classic) default receive limit; larger datagrams would be
# truncated by a receiver with default settings. Streams: 64 KiB, raise the receiver to match.
DEFAULT_MAX_SIZE = {"udp": 8192, "tcp": 65536, "tls": 65536, "relp": 65536}
# The largest UDP payload over IPv4 (65535 - 8 byte UDP header - 20 byte IP header).
UDP_MAX_SIZE = 65507
# Backoff between a stream sink's own attempts (reconnect and resend), seconds.
STREAM_BACKOFF = 0.25
MAX_BACKOFF = 5.0
# How long a new TCP/TLS connection is watched before its first batch: a peer that accepts and
# closes at once (a load balancer without a backend, a port that wants TLS) shows it by then.
SETTLE_SECONDS = 0.25

COMMON = {"facility", "hostname", "app_name", "format", "max_size", "sd_id", "cef_doc"}
TLS_PARAMS = {"ca_file", "verify", "cert_file", "key_file", "server_name"}
STREAM = {"timeout", "retries"}
PARAMS = {
    "udp": COMMON,
    "tcp": COMMON | STREAM | {"framing"},
    "tls": COMMON | STREAM | TLS_PARAMS | {"framing"},
    "relp": COMMON | STREAM | TLS_PARAMS | {"window", "tls"},
}


def _json_body(record: Record, severity: int) -> bytes:
    return orjson.dumps(record.doc)


class SyslogSink(Sink):
    """`syslog+udp|tcp|tls|relp://HOST:PORT?facility=&format=json|cef&framing=&max_size=...`."""

    def __init__(
        self,
        spec: SinkSpec,
        *,
        transport: str,
        builder: MessageBuilder,
        max_size: int,
        framing: str = "octet-counting",
        timeout: float = 10.0,
        retries: int = 3,
        window: int = 128,
        tls_context: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        super().__init__(spec)
        self.transport = transport
        self.max_size = max_size
        self.framing = framing
        self._builder = builder
        self._host, self._port = spec.require_host_port()
        self._timeout = timeout
        self._retries = retries
        self._tls = tls_context
        self._server_name = server_name or self._host
        self._label = f"sink {spec.display}"
        self._sock: socket.socket | None = None
        self._relp: RelpClient | None = None
        if transport == "relp":
            self._relp = RelpClient(
                self._connect, label=self._label, window=window, retries=retries, timeout=timeout
            )

    def bind_stop(self, stop: threading.Event) -> None:
        super().bind_stop(stop)
        if self._relp is not None:
            self._relp.stop = stop

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> SyslogSink:
        transport = spec.scheme.partition("+")[2]
        if transport not in PARAMS:
            raise SinkConfigError(f"sink {spec.display}: unknown syslog transport {transport!r}")
        spec.reject_unknown(PARAMS[transport])
        spec.require_host_port()
        try:
            facility = parse_facility(spec.take("facility", DEFAULT_FACILITY) or "")
        except ValueError as exc:
            raise SinkConfigError(f"sink {spec.display}: {exc}") from None
        body_format = spec.choice_param("format", "json", ("json", "cef"))
        body: Callable[[Record, int], bytes] = (
            CefBody(include_doc=spec.bool_param("cef_doc", True))
            if body_format == "cef"
            else _json_body
        )
        builder = MessageBuilder(
            facility=facility,
            hostname=spec.take("hostname") or socket.gethostname(),
            app_name=spec.take("app_name") or APP_NAME,
            procid=str(os.getpid()),
            body=body,
            sd_id=spec.take("sd_id") or DEFAULT_SD_ID,
        )
        max_size = spec.int_param("max_size", DEFAULT_MAX_SIZE[transport], minimum=64)
        if transport == "udp" and max_size > UDP_MAX_SIZE:
            raise SinkConfigError(
                f"sink {spec.display}: max_size={max_size} is over {UDP_MAX_SIZE}, "
                "the largest UDP datagram"
            )
        use_tls = transport == "tls" or (transport == "relp" and spec.bool_param("tls", False))
        if not use_tls and transport == "relp" and set(spec.params) & TLS_PARAMS:
            raise SinkConfigError(f"sink {spec.display}: TLS parameters need tls=true")
        return cls(
            spec,
            transport=transport,
            builder=builder,
            max_size=max_size,
            framing=spec.choice_param("framing", "octet-counting", ("octet-counting", "lf")),
            timeout=spec.float_param("timeout", 10.0, minimum=0.1),
            retries=spec.int_param("retries", 3),
            window=spec.int_param("window", 128, minimum=1),
            tls_context=_tls_context(spec) if use_tls else None,
            server_name=spec.take("server_name"),
        )

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        """A connected stream socket (TLS handshake done); SinkError with one line if not."""
        where = f"{self._label}"
        try:
            sock = waits.connect(self._host, self._port, self._timeout, self.stop)
        except OSError as exc:
            raise SinkError(f"{where}: cannot connect: {one_line(exc)}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self._tls is None:
            return sock
        # wrap_socket takes the file descriptor over: from here on, closing `tls` closes it.
        tls = self._tls.wrap_socket(
            sock, server_hostname=self._server_name, do_handshake_on_connect=False
        )
        try:
            waits.sliced(tls, tls.do_handshake, time.monotonic() + self._timeout, self.stop)
            return tls
        except ssl.SSLCertVerificationError as exc:
            tls.close()
            reason = exc.verify_message or one_line(exc)
            message = f"{where}: TLS certificate rejected: {reason}"
            raise SinkError(message, permanent=True) from None
        except (ssl.SSLError, OSError) as exc:
            tls.close()
            raise SinkError(f"{where}: TLS handshake failed: {one_line(exc)}") from None
        except BaseException:
            tls.close()
            raise

    def _udp_socket(self) -> socket.socket:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self._host, self._port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.connect(address)
        except OSError as exc:
            raise SinkError(f"{self._label}: cannot resolve or connect: {one_line(exc)}") from None
        return sock

    def open(self) -> None:
        if self._relp is not None:
            try:
                self._relp.open()
            except (RelpError, OSError) as exc:
                raise SinkError(f"{self._label}: RELP open failed: {one_line(exc)}") from None
        elif self._sock is None:
            self._sock = self._udp_socket() if self.transport == "udp" else self._connect()

    def close(self) -> None:
        if self._relp is not None:
            self._relp.close()
        sock, self._sock = self._sock, None
        if sock is not None:
            if isinstance(sock, ssl.SSLSocket):
                try:
                    sock.settimeout(1.0)
                    sock.unwrap()
                except (OSError, ValueError):
                    pass
            sock.close()

    def _peer_closed(self, sock: socket.socket) -> bool:
        """True when a stream receiver has closed or reset the connection: syslog receivers
        never send, so anything readable is an EOF, an error or TLS housekeeping."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        sock.setblocking(False)
        try:
            while True:
                if not sock.recv(65536):
                    return True
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(self._timeout)

    def _settle(self, sock: socket.socket) -> None:
        """Watch a new connection for `SETTLE_SECONDS`: a peer that closes it at once would
        take a batch into the void (TCP has no acks). SinkError if it did."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], remaining)
            # Readable and not closed: TLS housekeeping (session tickets), read and dropped.
            if readable and self._peer_closed(sock):
                raise SinkError(f"{self._label}: the peer closed the connection at once")

    # -- writing -----------------------------------------------------------------------

    def _messages(
        self, records: Sequence[Record]
    ) -> tuple[list[Record], list[bytes], list[Rejection]]:
        build, limit = self._builder.build, self.max_size
        lf = self.framing == "lf" and self.transport in {"tcp", "tls"}
        sent: list[Record] = []
        messages: list[bytes] = []
        rejections: list[Rejection] = []
        for record in records:
            try:
                message = build(record)
            except (TypeError, ValueError, OverflowError, OSError, orjson.JSONEncodeError) as exc:
                rejections.append(Rejection(record, f"cannot render syslog message: {exc}"))
                continue
            if len(message) > limit:
                rejections.append(
                    Rejection(
                        record,
                        f"syslog message is {len(message)} bytes, over max_size={limit} "
                        f"of {self.spec.display}",
                    )
                )
            elif lf and (b"\n" in message or b"\r" in message or b"\0" in message):
                # Unreachable as every field is escaped; kept so that framing never breaks.
                rejections.append(
                    Rejection(record, "message contains a line break or NUL (framing=lf)")
                )
            else:
                sent.append(record)
                messages.append(message)
        return sent, messages, rejections

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        sent, messages, rejections = self._messages(records)
        if not messages:
            return rejections
        if self._relp is not None:
            self._relp.send(messages)
        elif self.transport == "udp":
            rejections.extend(self._send_udp(sent, messages))
        else:
            if self.framing == "lf":
                payload = b"\n".join(messages) + b"\n"
            else:
                parts: list[bytes] = []
                for message in messages:
                    parts.append(b"%d " % len(message))
                    parts.append(message)
                payload = b"".join(parts)
            self._send_stream(payload)
        return rejections

    def _send_udp(self, records: list[Record], messages: list[bytes]) -> list[Rejection]:
        """Send one datagram per message; one the kernel refuses as too long for the path
        (EMSGSIZE) is rejected alone, any other error fails the batch."""
        if self._sock is None:
            self._sock = self._udp_socket()
        send = self._sock.send
        rejections: list[Rejection] = []
        for record, message in zip(records, messages, strict=True):
            try:
                send(message)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    reason = f"syslog message of {len(message)} bytes refused by the kernel"
                    rejections.append(Rejection(record, f"{reason}: {one_line(exc)}"))
                    continue
                # e.g. ECONNREFUSED from an ICMP port-unreachable for an earlier datagram.
                self.close()
                raise SinkError(f"{self._label}: UDP send failed: {one_line(exc)}") from None
        return rejections

    def _send_stream(self, payload: bytes) -> None:
        """Send the whole batch; after a failure reconnect and resend it (the receiver may get
        part of it twice), in at most `retries` + 1 attempts. TCP cannot tell whether the
        receiver read what the kernel took."""
        sink_retrying(
            stop=self.stop,
            what=self._label,
            attempts=self._retries + 1,
            backoff=STREAM_BACKOFF,
            cap=MAX_BACKOFF,
            give_up=lambda exc, attempts: SinkError(f"{exc} (after {attempts} attempts)"),
        )(self._send_stream_once, payload)

    def _send_stream_once(self, payload: bytes) -> None:
        try:
            if self._sock is not None and self._peer_closed(self._sock):
                self.close()
            if self._sock is None:
                self._sock = self._connect()
                self._settle(self._sock)
            waits.send_all(self._sock, payload, time.monotonic() + self._timeout, self.stop)
            # A close the peer made while the batch was sent: it may not have read it.
            if self._peer_closed(self._sock):
                raise SinkError(f"{self._label}: the peer closed the connection")
        except SinkError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise SinkError(f"{self._label}: send failed: {one_line(exc)}") from None
        except BaseException:
            self.close()  # stopped mid-batch: never reuse this stream
            raise

    def check(self) -> str:
        where = f"{self.spec.scheme} {self._host}:{self._port}"
        size = f"max_size={self.max_size}"
        if self.transport == "udp":
            self._udp_socket().close()
            return f"{where}: address resolved ({size}; UDP cannot confirm delivery)"
        if self._relp is not None:
            probe = RelpClient(self._connect, label=self._label, retries=0, timeout=self._timeout)
            try:
                probe.open()
            except RelpError as exc:
                raise SinkError(f"{self._label}: {one_line(exc)}") from None
            except OSError as exc:
                raise SinkError(f"{self._label}: RELP open failed: {one_line(exc)}") from None
            software = probe.server_software or "unknown software"
            probe.close()
            tls = ", TLS verified" if self._tls and self._tls.verify_mode else ""
            return f"{where}: RELP session opened ({software}{tls}; {size})"
        sock = self._connect()
        try:
            self._settle(sock)
            if isinstance(sock, ssl.SSLSocket):
                verified = "verified" if self._tls and self._tls.verify_mode else "NOT verified"
                detail = f"{sock.version()} handshake, certificate {verified}"
            else:
                detail = "connected"
        finally:
            try:
                if isinstance(sock, ssl.SSLSocket):
                    sock.settimeout(1.0)
                    sock.unwrap()
            except (OSError, ValueError):
                pass
            sock.close()
        return f"{where}: {detail} ({self.framing} framing, {size}; TCP cannot confirm receipt)"


def _tls_context(spec: SinkSpec) -> ssl.SSLContext:
    ca_file = spec.take("ca_file")
    verify = spec.bool_param("verify", True)
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert_file, key_file = spec.take("cert_file"), spec.take("key_file")
        if key_file and not cert_file:
            raise SinkConfigError(f"sink {spec.display}: key_file needs cert_file")
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise SinkConfigError(f"sink {spec.display}: TLS setup: {one_line(exc)}") from None
    return context
