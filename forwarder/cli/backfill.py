"""`backfill`: deliver a past time range, windows fetched in parallel and committed one by
one; a summary line per stream on stderr, and the progress on a terminal."""

from __future__ import annotations

import sys
from typing import Any

import click

from forwarder.cli import render
from forwarder.cli.errors import handle_errors
from forwarder.cli.options import (
    CONFIG_OPTIONS,
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
@click.option("--until", metavar="WHEN", help="End (default now minus --lag).")
@_option("--window", setting="window", help="Window size (default 1h).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Windows fetched at once.",
)
@click.option(
    "--page-budget",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Pages per window before its older part is split off.",
)
@click.option("--restart", is_flag=True, help="Forget an earlier run of the same backfill.")
@_option("--lag", setting="lag", help="Default --until is now minus this (default 60s).")
@apply(SINK_OPTIONS)
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
    Re-running the same command resumes it; the live checkpoint is never touched.

    \b
    Example:
      openai-audit-forwarder backfill --since 2026-01-01 --until 2026-02-01 \\
          --window 6h --concurrency 8 --sink s3://audit-bucket/openai
    """
    from forwarder.backfill import BackfillRequest, backfill_streams

    settings = settings_from(params)
    request = BackfillRequest(since, until, concurrency, page_budget, restart)
    progress = render.ProgressLine() if sys.stderr.isatty() else None
    reports = backfill_streams(
        settings, request, stream_given=bool(params.get("stream")), on_progress=progress
    )
    try:
        for report in reports:
            if progress:
                progress.end()
            render.backfill_report(report)
    finally:
        if progress:
            progress.end()
