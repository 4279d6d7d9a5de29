"""Helpers for tests that need a real peer or an optional dependency (rsyslog, moto, pyarrow, a
reference file, ...): skip on a laptop without it, fail under CI (CI=true), where .ci/run
installs every peer. Every such skip goes through `missing_peer`. Also: free loopback ports,
and what the kernel holds in the sockets of a local port (to see a receiver idle)."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_peer(reason: str) -> None:
    """Skip (or, under CI, fail) because a peer is missing; `reason` says what and how to get it."""
    if IN_CI:
        pytest.fail(f"peer missing under CI: {reason}")
    pytest.skip(reason)


def require_executable(name: str, hint: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        missing_peer(f"{name} not installed ({hint})")
    return path  # type: ignore[return-value]


def require_module(name: str, hint: str) -> ModuleType:
    """The imported module `name`, or skip (fail under CI) saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing_peer(f"Python module {name} not installed: {exc} ({hint})")
        raise AssertionError("unreachable") from exc


def require_file(path: Path, hint: str) -> Path:
    """`path`, or skip (fail under CI) when it does not exist, saying where it comes from."""
    if not path.exists():
        missing_peer(f"{path} is absent ({hint})")
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free loopback port (TCP by default, UDP with socket.SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# TCP states in /proc/net/tcp (include/net/tcp_states.h).
ESTABLISHED, CLOSE_WAIT, LISTEN = "01", "08", "0A"


@dataclass(frozen=True)
class KernelSocket:
    """One line of /proc/net/tcp or /proc/net/udp: a socket of this host's network namespace.
    `unread` is the bytes a receiver has not read yet (for a listening socket: connections
    not accepted yet); `unsent`, the bytes still to go out (for a listening socket: its
    backlog)."""

    local_port: int
    remote_port: int
    state: str
    unsent: int
    unread: int


def kernel_sockets(port: int, udp: bool = False) -> list[KernelSocket]:
    """The IPv4 sockets on 127.0.0.1 with `port` at one end: the listener (or UDP socket)
    bound to it, the connections it accepted and the clients connected to it."""
    table = "/proc/net/udp" if udp else "/proc/net/tcp"
    found = []
    with open(table) as handle:
        for line in handle.readlines()[1:]:
            fields = line.split()
            (local_ip, local_port), (remote_ip, remote_port) = map(_address, fields[1:3])
            if ("0100007F", port) in {(local_ip, local_port), (remote_ip, remote_port)}:
                unsent, unread = (int(n, 16) for n in fields[4].split(":"))
                found.append(KernelSocket(local_port, remote_port, fields[3], unsent, unread))
    return found


def _address(field: str) -> tuple[str, int]:
    ip, port = field.split(":")
    return ip, int(port, 16)


def listening(port: int, udp: bool = False) -> bool:
    """Is something bound on 127.0.0.1:port (read from /proc, without connecting)?"""
    return any(
        s.local_port == port and (udp or s.state == LISTEN) for s in kernel_sockets(port, udp)
    )


def read_to_the_end(port: int, udp: bool = False) -> bool:
    """Has the receiver on 127.0.0.1:port read everything sent to it? No byte waits in a socket
    at either end, no connection waits to be accepted, and every connection its client closed
    was closed by the receiver too (it read to the end of the stream)."""
    return all(
        s.unread == 0 and (s.unsent == 0 or s.state == LISTEN) and s.state != CLOSE_WAIT
        for s in kernel_sockets(port, udp)
    )
