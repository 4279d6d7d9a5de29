"""`check`: the configuration, the credentials and every sink, without sending events."""

from __future__ import annotations

from typing import Any

import click

from forwarder.cli import render
from forwarder.cli.errors import handle_errors
from forwarder.cli.options import CONFIG_OPTIONS, SINK_OPTIONS, SOURCE_OPTIONS, apply, settings_from
from forwarder.errors import ForwarderError


@click.command()
@apply(SINK_OPTIONS)
@apply(SOURCE_OPTIONS)
@apply(CONFIG_OPTIONS)
@handle_errors
def check(**params: Any) -> None:
    """Check the configuration, the credentials and every sink, sending no events.
    One line per check; exit 1 if any failed.

    \b
    Example:
      openai-audit-forwarder check --config /etc/openai-audit-forwarder/config.toml
    """
    from forwarder.checks import run_checks

    failed = 0
    for row in run_checks(settings_from(params), stream_given=bool(params.get("stream"))):
        render.check_row(row)
        failed += row.status == "FAIL"
    if failed:
        raise ForwarderError(f"{failed} check(s) failed")
