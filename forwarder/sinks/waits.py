"""Blocking socket calls of the stream sinks (Fluentd, syslog over TCP/TLS, RELP), cut into
slices of `SLICE` seconds that look at the stop signal between them: a sink waiting for an ack,
a TLS handshake, a connect or room in the send buffer ends with `Stopped` within a slice of
SIGTERM, instead of after its timeout. A socket call that times out consumes nothing (a plain
`send` that waited sent no byte; a TLS read or handshake resumes where it was; a TLS write is
retried with the same bytes, as OpenSSL asks), so the slices resume safely. `close_socket`
ends a stream, TLS ones with close_notify."""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from forwarder.errors import Stopped

SLICE = 0.25
T = TypeVar("T")


def remaining(deadline: float, stop: threading.Event) -> float:
    """Seconds left until `deadline`; `Stopped` once the stop signal fired, `TimeoutError`
    once the deadline passed."""
    if stop.is_set():
        raise Stopped("stopped while a sink waited for its receiver")
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def sliced(sock: socket.socket, call: Callable[[], T], deadline: float, stop: threading.Event) -> T:
    """`call()` (a recv, a TLS handshake or write on `sock`) again after every slice in which
    it timed out, until it returns, the deadline passes or the stop signal fires."""
    while True:
        sock.settimeout(min(SLICE, remaining(deadline, stop)))
        try:
            return call()
        except TimeoutError:
            continue


def recv(sock: socket.socket, size: int, deadline: float, stop: threading.Event) -> bytes:
    """What `sock.recv(size)` returns once something arrived (b"" at the end of the stream)."""
    return sliced(sock, lambda: sock.recv(size), deadline, stop)


def send_all(sock: socket.socket, data: bytes, deadline: float, stop: threading.Event) -> None:
    """Every byte of `data` handed to the kernel (or to TLS) by `deadline`."""
    view = memoryview(data)
    while view:
        # Partial sends advance; a send that timed out sent nothing (or, under TLS, is
        # retried with the same bytes).
        view = view[sliced(sock, lambda v=view: sock.send(v), deadline, stop) :]


def connect(host: str, port: int, timeout: float, stop: threading.Event) -> socket.socket:
    """A connected TCP socket (like `socket.create_connection`) whose connect waits in slices;
    the returned socket has `timeout` set. The name lookup itself cannot be cut."""
    deadline = time.monotonic() + timeout
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EAGAIN):
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_WRITE)
                    while not selector.select(min(SLICE, remaining(deadline, stop))):
                        pass
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            sock.settimeout(timeout)
            return sock
        except OSError as exc:  # try the next address, as create_connection does
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"no address found for {host}")


def close_socket(sock: socket.socket) -> None:
    """Close; a TLS socket first says close_notify (waiting at most a second), so the receiver
    sees a clean end of stream (without it Fluentd logs `unexpected eof while reading` for every
    connection)."""
    if isinstance(sock, ssl.SSLSocket):
        with contextlib.suppress(OSError, ValueError):
            sock.settimeout(1.0)
            sock.unwrap()
    with contextlib.suppress(OSError):
        sock.close()
