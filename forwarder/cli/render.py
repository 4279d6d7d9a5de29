"""What the commands print: the reports of the domain in text or JSON on stdout, the summaries
and warnings on stderr, and the progress line of a backfill on a terminal."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click
import orjson

from forwarder.cli.errors import PROG
from forwarder.timeparse import format_when

if TYPE_CHECKING:
    from forwarder.backfill import BackfillReport, Progress
    from forwarder.checks import CheckRow


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
    if report.tenant_refused is not None:
        click.echo(
            f"{PROG}: warning: {report.stream}: tenant-scoped events not backfilled: "
            f"{report.tenant_refused} (--without-tenant skips them)",
            err=True,
        )
        return
    span = f"{format_when(report.since)} .. {format_when(report.until)}"
    if report.already_complete:
        click.echo(
            f"backfill {report.stream} {span} already complete (use --restart to run it again)",
            err=True,
        )
        return
    live = ""
    if report.handed_over:
        live = f"; the live stream continues from {format_when(report.until)}"
    elif report.live_kept:
        live = "; the live stream has a checkpoint already and keeps it"
    click.echo(
        f"backfill complete: {report.stream} {span}, "
        f"{report.windows} windows, {report.events} events delivered, "
        f"{report.dead_lettered} dead-lettered, {report.elapsed:.1f}s "
        f"({report.rate:.0f} events/s){live}",
        err=True,
    )


class ProgressLine:
    """A backfill's progress on a terminal, redrawn in place at most five times a second:
    windows done/total, events, events/s and the ETA. `end` closes the line."""

    WIDTH = 24

    def __init__(self) -> None:
        self._last = 0.0
        self._drawn = False

    def __call__(self, progress: Progress, done_at_start: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.2 and progress.windows_done < progress.windows_total:
            return
        self._last = now
        filled = int(self.WIDTH * progress.windows_done / max(1, progress.windows_total))
        eta = progress.eta(done_at_start)
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "--:--:--"
        click.echo(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {progress.windows_done}/"
            f"{progress.windows_total} windows  {progress.events:,} events  "
            f"{progress.rate:,.0f} events/s  ETA {eta_text} ",
            err=True,
            nl=False,
        )
        self._drawn = True

    def end(self) -> None:
        if self._drawn:
            click.echo("", err=True)
            self._drawn = False
