"""Audit-log sources: the OpenAI Admin API, whose pages list events newest first, and input
files (`--input`), whose pages hold the events in file order."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

Page = list[dict[str, Any]]


class Source(ABC):
    """Lists audit-log events with `start <= effective_at < end` (end None: no upper bound)."""

    #: True for the API (events keep arriving: windows end at now - lag); False for a file.
    live: bool = True

    @abstractmethod
    def pages(self, start: int, end: int | None) -> Iterator[Page]:
        """Pages of events; a page cursor never outlives the call."""

    @abstractmethod
    def check(self) -> str:
        """Verify access without collecting; return a one-line description."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
