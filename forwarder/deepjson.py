"""JSON nested deeper than orjson takes (it parses 1024 levels and writes 254): the standard
library's `json` handles it, recursing in Python, under a raised recursion limit. The limit is
one value for the whole interpreter, so every raise goes through `deep_recursion`, which
raises it for the first thread that needs it and sets it back when the last one leaves."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# The deepest JSON parsed (a hostile event in a page or a file) or written as text (a dead
# letter orjson cannot encode) here: about three Python frames per level.
DEEP_NESTING = 5000
_FRAMES = 3 * DEEP_NESTING


class _SharedLimit:
    """The recursion limit, raised while at least one thread needs it. A thread that left
    first must not set it back under another still recursing, and two threads must not each
    save the other's raised value as the one to restore."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    def enter(self, frames: int) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = sys.getrecursionlimit()
            self._users += 1
            if sys.getrecursionlimit() < frames:
                sys.setrecursionlimit(frames)

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                sys.setrecursionlimit(self._saved)


_LIMIT = _SharedLimit()


@contextmanager
def deep_recursion() -> Iterator[None]:
    """A recursion limit high enough for the standard library's JSON to reach about
    `DEEP_NESTING` levels, for the block. Reentrant, and safe across threads."""
    _LIMIT.enter(_FRAMES)
    try:
        yield
    finally:
        _LIMIT.leave()


def loads_deep(data: bytes | str) -> Any:
    """Parse JSON that orjson refuses as nested deeper than 1024 levels, so that the one deep
    event reaches the intake (and the dead letters) instead of failing its whole page.
    ValueError if it is not JSON or nests deeper than about `DEEP_NESTING` levels."""
    with deep_recursion():
        try:
            return json.loads(data)
        except RecursionError:
            raise ValueError(f"nested deeper than {DEEP_NESTING} levels") from None


def dumps_deep(value: Any) -> str | None:
    """`value` as JSON text (keys sorted, what JSON cannot hold as its repr), also nested
    deeper than orjson writes; None if even the standard library cannot write it."""
    if nested_deeper_than(value, DEEP_NESTING):
        return None
    with deep_recursion():
        try:
            return json.dumps(value, default=repr, sort_keys=True)
        except (TypeError, ValueError, RecursionError):
            return None


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Do objects and arrays nest more than `limit` levels in `value`? (No recursion: the
    value may be nested deeper than Python's recursion limit.)"""
    if type(value) is not dict and type(value) is not list:
        return False
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, depth + 1))
    return False
