"""Backfill: split `[since, until)` into windows, fetch them concurrently, and deliver and commit
each window independently, so that re-running the same command resumes where it stopped. A
window denser than the page budget is split, its untouched older part fetched in parallel.
A backfill up to now hands over to the live stream when that has no checkpoint yet. A stream's
job keeps its delivered ids for its tenant companion's job, which runs next and skips them (a
server that ignores `tenant_only` lists every event in both), forgetting them window by
window as it goes."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from forwarder import metrics
from forwarder.config import Settings, stream_groups, warn_insecure
from forwarder.delivery import Delivery
from forwarder.errors import ConfigError, ForwarderError, SourceError, Stopped
from forwarder.listed_twice import JobPartner
from forwarder.logs import carry_context, get_logger, redact, stream_context
from forwarder.replay import warn_of_dead_letters
from forwarder.runtime import Runtime, install_stop_handlers, log_start, stream_name
from forwarder.sources import Source
from forwarder.sources.openai_api import TenantRefused
from forwarder.state import BackfillJob, Handover, State, Window, backfill_scope
from forwarder.timeparse import parse_when

# The ids of the last day go over to the live stream at a hand-over, not just of its
# --overlap: whatever overlap `run` is given, its first re-read finds them, and its first
# commit prunes the rest.
HANDOVER_IDS_SECONDS = 86_400


class BackfillInterrupted(ForwarderError):
    """Stopped before every window was delivered; the same command resumes."""

    def __init__(self) -> None:
        super().__init__("backfill interrupted; run the same command to resume")


@dataclass(frozen=True)
class BackfillRequest:
    """What the `backfill` command asks for, as given (`until` None: up to now - lag)."""

    since: str
    until: str | None = None
    concurrency: int = 4
    page_budget: int = 50
    restart: bool = False


@dataclass(frozen=True)
class PartnerJob:
    """The job of the stream a tenant companion belongs to: its ids are skipped."""

    stream: str
    job: str


@dataclass
class BackfillReport:
    """What one stream's backfill did."""

    stream: str
    since: int = 0
    until: int = 0
    job: str = ""  # the job's key in the state
    already_complete: bool = False  # finished by an earlier run (--restart runs it again)
    windows: int = 0
    events: int = 0  # delivered (dead letters not counted)
    dead_lettered: int = 0  # dead letters written
    elapsed: float = 0.0
    handed_over: bool = False  # the live stream now continues where this backfill ended
    live_kept: bool = False  # it would have, but the live stream has a checkpoint already
    tenant_refused: str | None = None  # a tenant companion the API refused: not backfilled

    @property
    def rate(self) -> float:
        return self.events / self.elapsed if self.elapsed else 0.0


def backfill_streams(
    settings: Settings,
    request: BackfillRequest,
    *,
    stream_given: bool,
    on_progress: Callable[[Progress, int], None] | None = None,
) -> Iterator[BackfillReport]:
    """Backfill every configured stream (or the one --stream names) one after the other, each
    with a job of its own, and each followed by its tenant companion; a report per stream.
    A companion whose listing the API refuses is reported, not a failure."""
    groups = stream_groups(settings, stream_given)
    targets = [target for group in groups for target in group]
    log_start("backfill", targets)
    warn_insecure(targets)
    if settings.metrics_addr:
        from forwarder.health import Health, serve_metrics

        for target in targets:
            metrics.declare_backfill(stream_name(target))
        serve_metrics(settings.metrics_addr, Health(float("inf")))
    stop = threading.Event()
    install_stop_handlers(stop)
    for group in groups:
        # A stream and its tenant companion: the companion skips what the stream delivered.
        paired = len(group) == 2 and group[1].tenant_companion
        partner: PartnerJob | None = None
        for target in group:
            keep_ids = paired and target is group[0]
            try:
                with stream_context(stream_name(target)):
                    report = run_backfill(
                        target, request, stop, on_progress, keep_ids=keep_ids, partner=partner
                    )
            except TenantRefused as exc:
                if not target.tenant_companion:
                    raise
                yield BackfillReport(target.stream, tenant_refused=redact(str(exc)))
                continue
            if keep_ids:
                partner = PartnerJob(report.stream, report.job)
            yield report


def run_backfill(
    settings: Settings,
    request: BackfillRequest,
    stop: threading.Event,
    on_progress: Callable[[Progress, int], None] | None = None,
    *,
    keep_ids: bool = False,
    partner: PartnerJob | None = None,
) -> BackfillReport:
    """Backfill one stream: find the job these arguments started before (or plan it), deliver
    its windows, and hand over to the live stream when this backfill runs up to now and the
    live stream has no checkpoint yet. A backfill with an explicit end fills a gap and never
    touches the live checkpoint. With `keep_ids` the job keeps its delivered ids for its
    tenant companion's job; with `partner` (the companion) it skips the ids that job kept."""
    try:
        since = parse_when(request.since)
        until = parse_when(request.until) if request.until else int(time.time() - settings.lag)
    except ValueError as exc:
        raise ConfigError(f"invalid setting since/until: {exc}") from None
    if until <= since:
        raise ConfigError("invalid setting until: must be later than --since")
    arguments = {
        "since": request.since,
        "until": request.until,
        "window": settings.window,
        "filters": settings.filters(),
        "input": settings.input,
        "base_url": settings.base_url,
    }
    command = f"backfill --since {request.since}"
    with Runtime(settings, command, "backfill {stream}", stop=stop) as rt:
        rt.open()
        assert rt.source and rt.state and rt.delivery
        if request.restart:
            rt.state.delete_job(job_key(rt.stream, arguments))
        job = find_or_create_job(rt.state, rt.stream, arguments, since, until, int(settings.window))
        report = BackfillReport(rt.stream, job.since, job.until, job.job)
        if job.finished_at is not None:
            report.already_complete = True
            # Ids kept for a companion's job that will not use them (not run, or complete).
            if not keep_ids:
                rt.state.forget_job_ids(job.job)
            if partner is not None:
                rt.state.forget_job_ids(partner.job)
            return report
        handover = None
        if request.until is None and rt.source.live:
            keep_from = job.until - max(int(settings.overlap), HANDOVER_IDS_SECONDS)
            handover = Handover(rt.stream, job.until, keep_from)
        started = time.monotonic()
        runner = Backfill(
            job=job,
            source=rt.source,
            delivery=rt.delivery,
            state=rt.state,
            batch_size=settings.batch_size,
            concurrency=request.concurrency,
            page_budget=request.page_budget,
            stop=stop,
            on_progress=on_progress,
            handover=handover,
            keep_ids=keep_ids,
            partner=JobPartner(rt.state, rt.stream, partner.stream, partner.job)
            if partner is not None
            else None,
        )
        try:
            progress = runner.run()
        except Stopped:
            raise BackfillInterrupted() from None
        except TenantRefused:
            if partner is not None:  # a refused listing lists nothing twice
                rt.state.forget_job_ids(partner.job)
            raise
        report.elapsed = time.monotonic() - started
        report.windows = progress.windows_done
        report.events = rt.delivery.tally.delivered
        report.dead_lettered = rt.delivery.tally.dead_lettered
        report.handed_over = progress.handed_over
        report.live_kept = handover is not None and not progress.handed_over
        sinks = [sink.name for sink in rt.delivery.sinks]
        warn_of_dead_letters(rt.delivery.tally, settings, sinks, rt.stream, "backfill")
        return report


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
    events: int = 0  # delivered (dead letters not counted)
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
        keep_ids: bool = False,
        partner: JobPartner | None = None,
    ) -> None:
        self.job = job
        self.handover = handover
        self.keep_ids = keep_ids  # for the tenant companion's job (`partner` there)
        self.partner = partner
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
            # As the live collector's progress marker: a page counts once the next one came
            # in newest-first order after it (the source checks the order).
            confirmed = oldest
            times = [
                at
                for e in page
                if isinstance(e, dict)
                and type(at := e.get("effective_at")) is int
                and window.start <= at < window.end
            ]
            if times:
                oldest = min(times) if oldest is None else min(oldest, *times)
            # Too dense: hand the older, untouched part back to be split and fetched in
            # parallel. Events of the second `confirmed` may be half fetched, so it stays in
            # the remainder; the ids already delivered there are skipped.
            if (
                pages >= self.page_budget
                and confirmed is not None
                and window.start < confirmed < window.end - 1
            ):
                self._put(("split", window, confirmed))
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
        threads = [  # each carries the stream, for its log lines
            threading.Thread(target=carry_context(self._worker), name=f"backfill-{i}", daemon=True)
            for i in range(min(self.concurrency, max(1, len(pending))))
        ]
        for thread in threads:
            thread.start()
        self._progressed(progress, done_at_start)
        outstanding = len(pending)
        buffers: dict[Window, list[dict[str, Any]]] = {}
        seen: dict[Window, set[str]] = {}
        counts: dict[Window, int] = {}
        try:
            while outstanding:
                if self.stop.is_set():
                    raise BackfillInterrupted()
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
                    raise BackfillInterrupted()
                if window not in seen:
                    seen[window] = self.state.delivered_ids(self.scope, window.start, window.end)
                    if self.partner is not None:
                        seen[window] |= self.partner.ids(window)
                    buffers[window] = []
                    counts[window] = 0
                buffer = buffers[window]
                if kind == "page":
                    if self.partner is not None:
                        self.partner.count(window, payload)
                    self.delivery.take_new(payload, seen[window], buffer)
                    if len(buffer) >= self.batch_size:  # full batches now, the rest waits
                        full = len(buffer) - len(buffer) % self.batch_size
                        counts[window] += self._commit(buffer[:full])
                        del buffer[:full]
                elif kind == "done":
                    counts[window] += self._commit(
                        buffer, window_done=(self.job.job, window, counts[window] + len(buffer))
                    )
                    progress.windows_done += 1
                    outstanding -= 1
                    self._forget(window, buffers, seen, counts)
                    if self.partner is not None:
                        self.partner.done(window)
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
                    progress.windows_done += 1
                    progress.windows_total += len(rest)
                    outstanding += len(rest) - 1
                    self._forget(window, buffers, seen, counts)
                    if self.partner is not None:
                        self.partner.split(window, oldest, rest)
                    for part in rest:
                        self._todo.put(part)
                    self.log.debug("split dense window %s into %s", window, rest)
                self._progressed(progress, done_at_start)
            progress.handed_over = self.state.finish_job(
                self.job.job,
                self.handover,
                keep_ids=self.keep_ids,
                partner_job=self.partner.job if self.partner is not None else None,
            )
            self.delivery.flush()
            return progress
        finally:
            if self.partner is not None:
                self.partner.report(self.log)
            self._abort.set()
            for _ in threads:
                self._todo.put(None)
            for thread in threads:
                thread.join(timeout=5)

    def _progressed(self, progress: Progress, done_at_start: int) -> None:
        """Progress after a page or a window: its events, the metrics, the caller's display."""
        stream = self.job.stream
        delivered = self.delivery.tally.delivered
        metrics.BACKFILL_EVENTS.labels(stream).inc(delivered - progress.events)
        progress.events = delivered
        metrics.BACKFILL_WINDOWS.labels(stream, "done").set(progress.windows_done)
        pending = progress.windows_total - progress.windows_done
        metrics.BACKFILL_WINDOWS.labels(stream, "pending").set(pending)
        if self.on_progress:
            self.on_progress(progress, done_at_start)

    def _commit(self, batch: list[dict[str, Any]], **changes: Any) -> int:
        """Deliver and commit `batch` in slices of at most `batch_size` (a page may hold more:
        a file's pages are 500 events, and a window ends with what its last pages left), the
        window's `changes` with the last slice."""
        if self.keep_ids:  # all of them, until the companion's job has covered their window
            changes["keep_ids_from"] = self.job.since
        elif self.handover is not None:
            changes["keep_ids_from"] = self.handover.keep_from
        if self.partner is not None:
            changes["partner_scope"] = self.partner.scope
        total = 0
        while len(batch) > self.batch_size:
            head, batch = batch[: self.batch_size], batch[self.batch_size :]
            total += self.delivery.deliver_and_commit(self.state, self.scope, head)
        return total + self.delivery.deliver_and_commit(self.state, self.scope, batch, **changes)

    @staticmethod
    def _forget(window: Window, *tables: dict) -> None:
        for table in tables:
            table.pop(window, None)
