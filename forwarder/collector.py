"""The live collector: sweeps fixed windows `[watermark, now - lag)` oldest chunk first, pages
each newest first, skips ids already delivered in the overlap region, hands batches to the
sinks and commits after every sink acknowledged; the watermark moves only when a whole window
is delivered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forwarder import metrics
from forwarder.delivery import Delivery
from forwarder.logs import get_logger
from forwarder.sources import Source
from forwarder.state import State, live_scope
from forwarder.timeparse import format_when


@dataclass
class SweepResult:
    events: int = 0
    windows: int = 0
    watermark: int | None = None


class Collector:
    def __init__(
        self,
        *,
        stream: str,
        source: Source,
        delivery: Delivery,
        state: State,
        lag: float,
        overlap: float,
        window: float,
        batch_size: int,
        start_at: Callable[[], int],
        stop: threading.Event | None = None,
    ) -> None:
        self.stream = stream
        self.scope = live_scope(stream)
        self.source = source
        self.delivery = delivery
        self.state = state
        self.lag = int(lag)
        self.overlap = int(overlap)
        self.window = max(1, int(window))
        self.batch_size = batch_size
        self.start_at = start_at
        self.stop = stop or threading.Event()
        self.log = get_logger()

    def sweep(self, now: float | None = None) -> SweepResult:
        started = time.monotonic()
        now = time.time() if now is None else now
        result = SweepResult()
        committed = self.state.watermark(self.stream)
        # A fresh stream starts exactly at start_at; afterwards the overlap is re-read.
        watermark = self.start_at() if committed is None else committed
        if self.source.live:
            until = int(now) - self.lag
            chunk_start = watermark
            first = committed is not None
            while chunk_start < until and not self.stop.is_set():
                chunk_end = min(chunk_start + self.window, until)
                read_from = chunk_start - self.overlap if first else chunk_start
                result.events += self._collect(read_from, chunk_end, chunk_end)
                result.windows += 1
                chunk_start = chunk_end
                first = False
            if first and not self.stop.is_set():
                # Nothing new to sweep (a run in the same second as the last commit, or a
                # longer --lag): the overlap is still re-read for late events.
                result.events += self._collect(watermark - self.overlap, watermark, None)
                result.windows += 1
        else:
            read_from = watermark - self.overlap if committed is not None else watermark
            result.events += self._collect(read_from, None, None)
            result.windows += 1
        result.watermark = self.state.watermark(self.stream)
        metrics.SWEEP_DURATION.labels(self.stream).observe(time.monotonic() - started)
        metrics.LAST_SUCCESS.labels(self.stream).set(time.time())
        if result.watermark is not None:
            metrics.CHECKPOINT_LAG.labels(self.stream).set(max(0.0, now - result.watermark))
        return result

    def _collect(self, start: int, end: int | None, new_watermark: int | None) -> int:
        """Deliver every new event of [start, end); then move the watermark to `new_watermark`
        (for a file source, end None: to one past the newest event seen)."""
        seen = self.state.delivered_ids(self.scope, start)
        batch: list[dict[str, Any]] = []
        newest = None
        total = 0
        log_extra = {"stream": self.stream, "window": f"{format_when(start)}/{format_when(end)}"}
        for page in self.source.pages(start, end):
            taken = len(batch)
            self.delivery.take_new(page, seen, batch)
            if end is None and len(batch) > taken:  # a file: the watermark follows its newest
                page_newest = max(event["effective_at"] for event in batch[taken:])
                newest = page_newest if newest is None else max(newest, page_newest)
            if len(batch) >= self.batch_size:
                total += self._deliver(batch)
                batch = []
            if self.stop.is_set():
                # The window is not complete: commit what was taken, keep the watermark.
                total += self._deliver(batch)
                self.log.info("stop requested: window left open", extra=log_extra)
                return total
        if end is None:
            current = self.state.watermark(self.stream)
            candidates = [
                w for w in (current, newest + 1 if newest is not None else None) if w is not None
            ]
            new_watermark = max(candidates) if candidates else None
        total += self._deliver(batch, new_watermark)
        if total:
            self.log.info("delivered %d events", total, extra=log_extra)
        return total

    def _deliver(self, batch: list[dict[str, Any]], watermark: int | None = None) -> int:
        if not batch and watermark is None:
            return 0
        return self.delivery.deliver_and_commit(
            self.state,
            self.scope,
            batch,
            watermark=(self.stream, watermark) if watermark is not None else None,
            prune_before=watermark - self.overlap if watermark is not None else None,
        )
