"""`checkpoint show|set|reset`: the committed checkpoints, read or changed. Loads neither the
HTTP client nor the sinks."""

from __future__ import annotations

from typing import Any

import click

from forwarder.cli import render
from forwarder.cli.errors import handle_errors
from forwarder.cli.options import LOG_OPTIONS, STATE_OPTION, apply, settings_from, stream_option
from forwarder.timeparse import format_when


@click.group()
def checkpoint() -> None:
    """Show or change the committed checkpoints.

    \b
    Examples:
      openai-audit-forwarder checkpoint show
      openai-audit-forwarder checkpoint set 2026-11-01T00:00:00Z
      openai-audit-forwarder checkpoint reset --stream default
    """


@checkpoint.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@stream_option("Only this stream and its backfills (default every stream).")
@STATE_OPTION
@apply(LOG_OPTIONS)
@handle_errors
def checkpoint_show(as_json: bool, **params: Any) -> None:
    """Watermarks per stream, remembered ids, backfill jobs and sink positions.

    \b
    Example:
      openai-audit-forwarder checkpoint show --state /var/lib/openai-audit-forwarder/state.db
    """
    from forwarder.checkpoint import checkpoint_report

    report = checkpoint_report(settings_from(params), only=params.get("stream"))
    if as_json:
        render.as_json(report)
    else:
        render.checkpoint_report(report)


@checkpoint.command("set")
@click.argument("when", metavar="WHEN")
@stream_option("The stream whose watermark moves (default 'default').")
@STATE_OPTION
@apply(LOG_OPTIONS)
@handle_errors
def checkpoint_set(when: str, **params: Any) -> None:
    """Move a stream's watermark to WHEN (ISO 8601, unix seconds, or a span ago such as 7d):
    its next `run` collects from there, re-reading its overlap before it for late events.

    \b
    Example:
      openai-audit-forwarder checkpoint set 2026-11-01T00:00:00Z
    """
    from forwarder.checkpoint import change_watermark, parse_watermark

    watermark = parse_watermark(when)
    stream = change_watermark(settings_from(params), watermark)
    click.echo(f"stream {stream}: watermark set to {format_when(watermark)}")


@checkpoint.command("reset")
@stream_option("The stream to forget (default 'default').")
@STATE_OPTION
@apply(LOG_OPTIONS)
@handle_errors
def checkpoint_reset(**params: Any) -> None:
    """Forget a stream's watermark and remembered ids: its next run starts at its --start-at
    (with --input, the whole file again). A stream the state does not hold is exit 2.

    \b
    Example:
      openai-audit-forwarder checkpoint reset --stream default
    """
    from forwarder.checkpoint import forget_stream

    stream = forget_stream(settings_from(params))
    click.echo(f"stream {stream}: checkpoint removed")
