"""The syslog sink's transports: UDP datagrams, and a TCP or TLS stream (connect, TLS
handshake, a peer that closed, send and resend). RELP, the one transport that confirms receipt,
is `relp.RelpClient` over `Stream.connect`. Every wait lasts at most `timeout` and wakes on the
stop signal (`forwarder.sinks.waits`)."""

from __future__ import annotations

import errno
import select
import socket
import ssl
import threading
import time

from forwarder.sinks import waits
from forwarder.sinks.base import Record, Rejection, SinkError, short_reason
from forwarder.sinks.retrying import sink_retrying

# Backoff between a stream sink's own attempts (reconnect and resend), seconds.
STREAM_BACKOFF = 0.25
MAX_BACKOFF = 5.0
# How long a new TCP/TLS connection is watched before its first batch: a peer that accepts and
# closes at once (a load balancer without a backend, a port that wants TLS) shows it by then.
SETTLE_SECONDS = 0.25


class Datagrams:
    """UDP: one datagram per message; nothing confirms delivery."""

    def __init__(self, host: str, port: int, label: str) -> None:
        self._host, self._port, self._label = host, port, label
        self._sock: socket.socket | None = None

    def socket(self) -> socket.socket:
        """A connected UDP socket (the address resolved); SinkError with one line if not."""
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self._host, self._port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.connect(address)
        except OSError as exc:
            reason = short_reason(exc)
            raise SinkError(f"{self._label}: cannot resolve or connect: {reason}") from None
        return sock

    def open(self) -> None:
        if self._sock is None:
            self._sock = self.socket()

    def send(self, records: list[Record], messages: list[bytes]) -> list[Rejection]:
        """Send one datagram per message; one the kernel refuses as too long for the path
        (EMSGSIZE) is rejected alone, any other error fails the batch."""
        self.open()
        assert self._sock is not None
        send = self._sock.send
        rejections: list[Rejection] = []
        for record, message in zip(records, messages, strict=True):
            try:
                send(message)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    reason = f"syslog message of {len(message)} bytes refused by the kernel"
                    rejections.append(Rejection(record, f"{reason}: {short_reason(exc)}"))
                    continue
                # e.g. ECONNREFUSED from an ICMP port-unreachable for an earlier datagram.
                self.close()
                raise SinkError(f"{self._label}: UDP send failed: {short_reason(exc)}") from None
        return rejections

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class Stream:
    """A TCP or TLS stream (octet-counting or LF framing): the kernel taking the bytes is all
    the receiver confirms."""

    def __init__(
        self,
        host: str,
        port: int,
        label: str,
        *,
        timeout: float,
        retries: int,
        tls_context: ssl.SSLContext | None,
        server_name: str,
    ) -> None:
        self._host, self._port, self._label = host, port, label
        self._timeout = timeout
        self._retries = retries
        self.tls = tls_context
        self._server_name = server_name
        self._sock: socket.socket | None = None
        self.stop = threading.Event()

    def connect(self) -> socket.socket:
        """A connected stream socket (TLS handshake done); SinkError with one line if not."""
        try:
            sock = waits.connect(self._host, self._port, self._timeout, self.stop)
        except OSError as exc:
            raise SinkError(f"{self._label}: cannot connect: {short_reason(exc)}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.tls is None:
            return sock
        # wrap_socket takes the file descriptor over: from here on, closing `tls` closes it.
        tls = self.tls.wrap_socket(
            sock, server_hostname=self._server_name, do_handshake_on_connect=False
        )
        try:
            waits.sliced(tls, tls.do_handshake, time.monotonic() + self._timeout, self.stop)
            return tls
        except ssl.SSLCertVerificationError as exc:
            tls.close()
            reason = exc.verify_message or short_reason(exc)
            message = f"{self._label}: TLS certificate rejected: {reason}"
            raise SinkError(message, permanent=True) from None
        except (ssl.SSLError, OSError) as exc:
            tls.close()
            raise SinkError(f"{self._label}: TLS handshake failed: {short_reason(exc)}") from None
        except BaseException:
            tls.close()
            raise

    def open(self) -> None:
        if self._sock is None:
            self._sock = self.connect()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            waits.close_socket(sock)

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

    def settle(self, sock: socket.socket) -> None:
        """Watch a new connection for `SETTLE_SECONDS`: a peer that closes it at once would
        take a batch into the void (TCP has no acks). SinkError if it did."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], remaining)
            # Readable and not closed: TLS housekeeping (session tickets), read and dropped.
            if readable and self._peer_closed(sock):
                raise SinkError(f"{self._label}: the peer closed the connection at once")

    def send(self, payload: bytes) -> None:
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
        )(self._send_once, payload)

    def _send_once(self, payload: bytes) -> None:
        try:
            if self._sock is not None and self._peer_closed(self._sock):
                self.close()
            if self._sock is None:
                self._sock = self.connect()
                self.settle(self._sock)
            waits.send_all(self._sock, payload, time.monotonic() + self._timeout, self.stop)
            # A close the peer made while the batch was sent: it may not have read it.
            if self._peer_closed(self._sock):
                raise SinkError(f"{self._label}: the peer closed the connection")
        except SinkError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise SinkError(f"{self._label}: send failed: {short_reason(exc)}") from None
        except BaseException:
            self.close()  # stopped mid-batch: never reuse this stream
            raise

    def check(self) -> str:
        """Connect (and shake hands), watch the connection settle, close; what was seen."""
        sock = self.connect()
        try:
            self.settle(sock)
            if isinstance(sock, ssl.SSLSocket):
                verified = "verified" if self.tls and self.tls.verify_mode else "NOT verified"
                return f"{sock.version()} handshake, certificate {verified}"
            return "connected"
        finally:
            waits.close_socket(sock)
