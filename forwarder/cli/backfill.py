"""`backfill`: deliver a past time range, windows fetched in parallel and committed one by
one; a summary line per stream, and the progress: a bar on a terminal, else a log line."""

from __future__ import annotations

from typing import Any

import click

from forwarder.cli import render
from forwarder.cli.errors import handle_errors
from forwarder.cli.options import (
    CONFIG_OPTIONS,
    DELIVERY_OPTIONS,
    METRICS_OPTION,
    SINK_OPTIONS,
    SOURCE_OPTIONS,
    _option,
    apply,
    settings_from,
)


@click.command()
@click.option(
    "--since",
    required=True,
    metavar="WHEN",
    help="Start: ISO 8601, unix seconds, or a span ago such as 30d.",
)
@click.option(
    "--until",
    metavar="WHEN",
    help="End (default now minus --lag; then the live stream continues from there if it has no "
    "checkpoint yet).",
)
@_option("--window", setting="window", metavar="DURATION", help="Window size (default 1h).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    help="Windows fetched at once (default 4).",
)
@click.option(
    "--page-budget",
    type=click.IntRange(1, 100_000),
    default=50,
    help="Pages per window before its older part is split off (default 50).",
)
@click.option("--restart", is_flag=True, help="Forget an earlier run of the same backfill.")
@_option(
    "--lag",
    setting="lag",
    metavar="DURATION",
    help="Default --until is now minus this (default 60s).",
)
@METRICS_OPTION
@apply(SINK_OPTIONS)
@apply(DELIVERY_OPTIONS)
@apply(SOURCE_OPTIONS)
@apply(CONFIG_OPTIONS)
@handle_errors
def backfill(
    since: str,
    until: str | None,
    concurrency: int,
    page_budget: int,
    restart: bool,
    **params: Any,
) -> None:
    """Deliver a past time range, windows fetched in parallel and committed one by one.
    Re-running the same command resumes it. A live checkpoint that exists is never moved.

    \b
    Example:
      openai-audit-forwarder backfill --since 2026-03-01 --until 2026-04-01 --window 6h \\
          --concurrency 8 --sink 'fluentd://fluentd.example:24224?tag=openai.audit'
    """
    from forwarder.backfill import BackfillRequest, backfill_streams

    settings = settings_from(params)
    request = BackfillRequest(since, until, concurrency, page_budget, restart)
    with render.backfill_progress(settings) as progress:
        given = bool(params.get("stream"))
        reports = backfill_streams(settings, request, stream_given=given, on_progress=progress)
        for report in reports:
            progress.end()
            render.backfill_report(report)
