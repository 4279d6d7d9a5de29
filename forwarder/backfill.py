"""Backfill: split `[since, until)` into windows, fetch them concurrently, and deliver and commit
each window independently, so that re-running the same command resumes where it stopped. A
window denser than the page budget is split, its untouched older part fetched in parallel."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from forwarder.delivery import Delivery
from forwarder.errors import ForwarderError, SourceError
from forwarder.logs import get_logger
from forwarder.sources import Source
from forwarder.state import BackfillJob, Handover, State, Window, backfill_scope


class Interrupted(ForwarderError):
    """Stopped before every window was delivered; the same command resumes."""


def job_key(stream: str, arguments: dict[str, Any]) -> str:
    blob = orjson.dumps({"stream": stream, **arguments}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def plan_windows(since: int, until: int, size: int) -> list[Window]:
    return [Window(start, min(start + size, until)) for start in range(since, until, size)]


def find_or_create_job(
    state: State, stream: str, arguments: dict[str, Any], since: int, until: int, window: int
) -> BackfillJob:
    """The unfinished job these arguments started before, or a new plan. Relative times
    (`--since 7d`) are resolved once, when the job is created, so a re-run resumes it."""
    key = job_key(stream, arguments)
    job = state.find_job(key)
    if job is None:
        job = BackfillJob(key, stream, since, until, window, None)
        state.create_job(job, orjson.dumps(arguments).decode(), plan_windows(since, until, window))
    return job


@dataclass
class Progress:
    windows_total: int
    windows_done: int = 0
    events: int = 0
    started: float = field(default_factory=time.monotonic)
    handed_over: bool = False  # the live stream now starts where this backfill ended

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.events / elapsed if elapsed > 0 else 0.0

    def eta(self, done_at_start: int) -> float | None:
        finished = self.windows_done - done_at_start
        remaining = self.windows_total - self.windows_done
        elapsed = time.monotonic() - self.started
        if finished <= 0 or elapsed <= 0:
            return None
        return remaining * elapsed / finished


class Backfill:
    def __init__(
        self,
        *,
        job: BackfillJob,
        source: Source,
        delivery: Delivery,
        state: State,
        batch_size: int,
        concurrency: int,
        page_budget: int = 50,
        stop: threading.Event | None = None,
        on_progress: Callable[[Progress, int], None] | None = None,
        handover: Handover | None = None,
    ) -> None:
        self.job = job
        self.handover = handover
        self.scope = backfill_scope(job.job)
        self.source = source
        self.delivery = delivery
        self.state = state
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        self.page_budget = max(1, page_budget)
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.log = get_logger()
        self._todo: queue.Queue[Window | None] = queue.Queue()
        self._out: queue.Queue[tuple[str, Window, Any]] = queue.Queue(maxsize=4 * self.concurrency)
        self._abort = threading.Event()

    # Workers: fetch ---------------------------------------------------------------------

    def _worker(self) -> None:
        while not self._abort.is_set():
            window = self._todo.get()
            if window is None:
                return
            try:
                self._fetch(window)
            except Exception as exc:  # reported by the main thread as one line
                self._put(("error", window, exc))

    def _fetch(self, window: Window) -> None:
        oldest: int | None = None
        for pages, page in enumerate(self.source.pages(window.start, window.end), 1):
            if self._abort.is_set() or self.stop.is_set():
                self._put(("abandoned", window, None))
                return
            self._put(("page", window, page))
            times = [
                e["effective_at"]
                for e in page
                if isinstance(e, dict) and isinstance(e.get("effective_at"), int)
            ]
            if times:
                oldest = min(times) if oldest is None else min(oldest, *times)
            # Too dense: hand the older, untouched part back to be split and fetched in
            # parallel. Events of the second `oldest` may be half fetched, so it stays in
            # the remainder; the ids already delivered there are skipped.
            if (
                pages >= self.page_budget
                and oldest is not None
                and window.start < oldest < window.end - 1
            ):
                self._put(("split", window, oldest))
                return
        self._put(("done", window, None))

    def _put(self, item: tuple[str, Window, Any]) -> None:
        while not self._abort.is_set():
            try:
                self._out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    # Main thread: deliver and commit ----------------------------------------------------

    def run(self) -> Progress:
        windows = self.state.windows(self.job.job)
        pending = [w for w, status, _ in windows if status != "done"]
        progress = Progress(
            windows_total=len(windows),
            windows_done=len(windows) - len(pending),
            events=0,
        )
        done_at_start = progress.windows_done
        for window in pending:
            self._todo.put(window)
        threads = [
            threading.Thread(target=self._worker, name=f"backfill-{i}", daemon=True)
            for i in range(min(self.concurrency, max(1, len(pending))))
        ]
        for thread in threads:
            thread.start()
        outstanding = len(pending)
        buffers: dict[Window, list[dict[str, Any]]] = {}
        seen: dict[Window, set[str]] = {}
        counts: dict[Window, int] = {}
        try:
            while outstanding:
                if self.stop.is_set():
                    raise Interrupted("backfill interrupted; run the same command to resume")
                try:
                    kind, window, payload = self._out.get(timeout=0.2)
                except queue.Empty:
                    continue
                if kind == "error":
                    raise (
                        payload
                        if isinstance(payload, ForwarderError)
                        else SourceError(f"backfill window {window.start}-{window.end}: {payload}")
                    )
                if kind == "abandoned":
                    raise Interrupted("backfill interrupted; run the same command to resume")
                if window not in seen:
                    seen[window] = self.state.delivered_ids(self.scope, window.start, window.end)
                    buffers[window] = []
                    counts[window] = 0
                buffer = buffers[window]
                if kind == "page":
                    self.delivery.take_new(payload, seen[window], buffer)
                    if len(buffer) >= self.batch_size:
                        counts[window] += self._commit(buffer)
                        progress.events += len(buffer)
                        buffer.clear()
                elif kind == "done":
                    counts[window] += self._commit(
                        buffer, window_done=(self.job.job, window, counts[window] + len(buffer))
                    )
                    progress.events += len(buffer)
                    progress.windows_done += 1
                    outstanding -= 1
                    self._forget(window, buffers, seen, counts)
                elif kind == "split":
                    oldest = payload
                    delivered_part = Window(oldest + 1, window.end)
                    middle = (window.start + oldest + 1) // 2
                    rest = [Window(window.start, middle), Window(middle, oldest + 1)]
                    rest = [w for w in rest if w.start < w.end]
                    events = counts[window] + len(buffer)
                    self._commit(
                        buffer,
                        window_split=(self.job.job, window, delivered_part, events, rest),
                    )
                    progress.events += len(buffer)
                    progress.windows_done += 1
                    progress.windows_total += len(rest)
                    outstanding += len(rest) - 1
                    self._forget(window, buffers, seen, counts)
                    for part in rest:
                        self._todo.put(part)
                    self.log.debug("split dense window %s into %s", window, rest)
                if self.on_progress:
                    self.on_progress(progress, done_at_start)
            progress.handed_over = self.state.finish_job(self.job.job, self.handover)
            self.delivery.flush()
            return progress
        finally:
            self._abort.set()
            for _ in threads:
                self._todo.put(None)
            for thread in threads:
                thread.join(timeout=5)

    def _commit(self, batch: list[dict[str, Any]], **changes: Any) -> int:
        if self.handover is not None:
            changes["keep_ids_from"] = self.handover.keep_from
        return self.delivery.deliver_and_commit(self.state, self.scope, batch, **changes)

    @staticmethod
    def _forget(window: Window, *tables: dict) -> None:
        for table in tables:
            table.pop(window, None)
