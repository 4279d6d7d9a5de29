"""What the commands print: the reports of the domain in text or JSON on stdout; a backfill's
summaries and progress as log lines (text or JSON, as the other log lines), or as a progress
bar (tqdm) on a terminal, with the log lines printed above it."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import click
import orjson

from forwarder.cli.errors import PROG
from forwarder.logs import get_logger
from forwarder.timeparse import format_when

if TYPE_CHECKING:
    from forwarder.backfill import BackfillReport, Progress
    from forwarder.checks import CheckRow
    from forwarder.config import Settings


def as_json(document: Any) -> None:
    click.echo(orjson.dumps(document))


def map_problem(input_path: str, where: str, reason: str) -> None:
    click.echo(f"{PROG}: {input_path} {where}: {reason}", err=True)


def checkpoint_report(report: dict[str, list[dict[str, Any]]]) -> None:
    if not report["streams"]:
        click.echo("no live checkpoint yet")
    for s in report["streams"]:
        click.echo(
            f"stream {s['stream']}: watermark {s['watermark']} ({s['watermark_unix']}), "
            f"updated {s['updated']}, {s['remembered_ids']} ids remembered"
            + (f", {s['span_in_progress']}" if s["span_in_progress"] else "")
        )
        if s["watermark_problem"]:
            click.echo(
                f"stream {s['stream']}: OUT OF RANGE: watermark {s['watermark_problem']}; "
                f"set a good one with 'checkpoint set WHEN --stream {s['stream']}'"
            )
    for j in report["backfills"]:
        status = f"finished {j['finished']}" if j["finished"] else "unfinished"
        click.echo(
            f"backfill {j['job']} ({j['stream']}): {j['since']} .. {j['until']}, "
            f"{j['windows_done']}/{j['windows']} windows, {j['events']} events, {status}"
        )
    for k in report["sinks"]:
        click.echo(f"sink {k['sink']}: position {k['position']}")
    for p in report["spools"]:
        age = p["oldest_age_seconds"]
        click.echo(
            f"spool {p['sink']}: {p['segments']} segments ({p['sealed']} sealed), "
            f"{p['bytes']} bytes, oldest {'-' if age is None else f'{age:.0f}s'}"
        )
    for r in report["tenant_refused"]:
        click.echo(
            f"stream {r['stream']}: tenant listing refused {r['refused_at']}, asked again "
            f"hourly: {r['message']}"
        )


def dead_letter_summary(summary: dict[str, Any]) -> None:
    click.echo(
        f"{summary['total']} dead letters in {summary['directory']} ({len(summary['files'])} files)"
    )
    for group in summary["groups"]:
        click.echo(
            f"{group['count']:8d}  stream {group['stream']}  sink {group['sink']}  "
            f"schema {group['schema']}  {group['reason']}"
        )
    for bad in summary["bad_lines"]:
        click.echo(f"bad line {bad['file']}:{bad['line']}: {bad['problem']}")


def check_row(row: CheckRow) -> None:
    click.echo(f"{row.status:<6}{row.subject}: {row.detail}")


def backfill_report(report: BackfillReport) -> None:
    """One stream's backfill summary, a log line (a JSON object with --log-format json)."""
    log = get_logger()
    extra = {"stream": report.stream}
    if report.tenant_refused is not None:
        log.warning(
            "tenant-scoped events not backfilled: %s (--without-tenant skips them)",
            report.tenant_refused,
            extra=extra,
        )
        return
    span = f"{format_when(report.since)} .. {format_when(report.until)}"
    if report.already_complete:
        log.info(
            "backfill %s %s already complete (use --restart to run it again)",
            report.stream,
            span,
            extra=extra,
        )
        return
    live = ""
    if report.handed_over:
        live = f"; the live stream continues from {format_when(report.until)}"
    elif report.live_kept:
        live = "; the live stream has a checkpoint already and keeps it"
    log.info(
        "backfill complete: %s %s, %d windows, %d events delivered, %d dead-lettered, %.1fs "
        "(%.0f events/s)%s",
        report.stream,
        span,
        report.windows,
        report.events,
        report.dead_lettered,
        report.elapsed,
        report.rate,
        live,
        extra=extra,
    )


# A backfill without a terminal logs its progress at most this often.
PROGRESS_EVERY = 10.0


class BackfillProgress(Protocol):
    def __call__(self, progress: Progress, done_at_start: int) -> None: ...

    def end(self) -> None:
        """The stream's backfill ended (its summary follows)."""


def backfill_progress(settings: Settings) -> contextlib.AbstractContextManager[BackfillProgress]:
    """A progress bar on a terminal (text logs, not -q); else a log line every
    `PROGRESS_EVERY` seconds, for `kubectl logs`, journald or JSON logs."""
    if sys.stderr.isatty() and settings.log_format == "text" and settings.verbosity >= 0:
        return ProgressBar()
    return contextlib.nullcontext(ProgressLog())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressLog:
    """Progress as a log line, at most every `every` seconds: windows done/total, events,
    events/s and the ETA."""

    def __init__(
        self, every: float = PROGRESS_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.clock = clock
        self._last: float | None = None

    def __call__(self, progress: Progress, done_at_start: int) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return
        self._last = now
        get_logger().info(
            "backfill progress: %d/%d windows, %d events, %.0f events/s, ETA %s",
            progress.windows_done,
            progress.windows_total,
            progress.events,
            progress.rate,
            _duration(progress.eta(done_at_start)),
        )

    def end(self) -> None:
        self._last = None


class ProgressBar:
    """A tqdm bar on the terminal: windows done/total, events, events/s, the ETA. While it is
    shown, log lines (a 429 retried, a warning) print above it instead of tearing it."""

    REDRAW = 0.2  # seconds between redraws
    FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n}/{total} windows{postfix}, ETA {remaining}"

    def __init__(self) -> None:
        self._bar: Any = None
        self._drawn = 0.0
        self._redirect: contextlib.AbstractContextManager[Any] | None = None

    def __enter__(self) -> ProgressBar:
        from tqdm.contrib.logging import logging_redirect_tqdm

        loggers = [get_logger(), logging.getLogger("py.warnings")]
        self._redirect = logging_redirect_tqdm(loggers=loggers)
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end()
        if self._redirect is not None:
            self._redirect.__exit__(*exc)

    def __call__(self, progress: Progress, done_at_start: int) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=progress.windows_total,
                initial=done_at_start,
                file=sys.stderr,
                dynamic_ncols=True,
                bar_format=self.FORMAT,
                desc="backfill ",
            )
        bar = self._bar
        bar.total = progress.windows_total
        bar.n = progress.windows_done
        bar.set_postfix_str(
            f"{progress.events:,} events, {progress.rate:,.0f} events/s", refresh=False
        )
        now = time.monotonic()
        if now - self._drawn >= self.REDRAW or progress.windows_done == progress.windows_total:
            bar.refresh()
            self._drawn = now

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
