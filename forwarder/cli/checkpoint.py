"""`checkpoint show|set|reset`: the committed checkpoints, read or changed. Loads neither the
HTTP client nor the sinks."""

from __future__ import annotations

from typing import Any

import click

from forwarder.cli import render
from forwarder.cli.errors import handle_errors
from forwarder.cli.options import CONFIG_OPTIONS, apply, settings_from
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
@apply(CONFIG_OPTIONS)
@handle_errors
def checkpoint_show(as_json: bool, **params: Any) -> None:
    """Watermarks per stream, remembered ids, backfill jobs and sink positions.

    \b
    Example:
      openai-audit-forwarder checkpoint show --state /var/lib/oaf/state.db
    """
    from forwarder.checkpoint import checkpoint_report

    report = checkpoint_report(settings_from(params))
    if as_json:
        render.as_json(report)
    else:
        render.checkpoint_report(report)


@checkpoint.command("set")
@click.argument("when", metavar="WHEN")
@apply(CONFIG_OPTIONS)
@handle_errors
def checkpoint_set(when: str, **params: Any) -> None:
    """Move a stream's watermark: the next run starts there (minus --overlap).

    \b
    Example:
      openai-audit-forwarder checkpoint set 2026-11-01T00:00:00Z
    """
    from forwarder.checkpoint import change_watermark, parse_watermark

    watermark = parse_watermark(when)
    stream = change_watermark(settings_from(params), watermark)
    click.echo(f"stream {stream}: watermark set to {format_when(watermark)}")


@checkpoint.command("reset")
@apply(CONFIG_OPTIONS)
@handle_errors
def checkpoint_reset(**params: Any) -> None:
    """Forget a stream's watermark: the next run starts at --start-at.

    \b
    Example:
      openai-audit-forwarder checkpoint reset --stream default
    """
    from forwarder.checkpoint import change_watermark

    stream = change_watermark(settings_from(params), None)
    click.echo(f"stream {stream}: checkpoint removed")
