"""Helpers for tests that need a real peer (rsyslog, moto, ...): skip on a laptop without it,
fail under CI (CI=true), where .ci/run installs every peer."""

from __future__ import annotations

import os
import shutil
import socket

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


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free loopback port (TCP by default, UDP with socket.SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
