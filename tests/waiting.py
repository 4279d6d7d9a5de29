"""Waiting in tests: poll a condition until it holds, never sleep a fixed time and hope. The one
`wait_for` every test and fake uses; its failure names what was awaited and the last value."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float = 60.0,
    what: str | None = None,
    *,
    interval: float = 0.05,
) -> T:
    """Call `condition` until it returns something truthy, and return that. After `timeout`
    seconds the test fails with "timed out after Ns waiting for WHAT (last value: ...)"; WHAT
    defaults to the condition's source line."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what or _describe(condition)} "
                f"(last value: {_short(value)})"
            )
        time.sleep(interval)


def _describe(condition: Callable[[], object]) -> str:
    try:
        source = inspect.getsource(condition).strip()
    except (OSError, TypeError):
        return getattr(condition, "__qualname__", repr(condition))
    return " ".join(source.split())[:200]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
