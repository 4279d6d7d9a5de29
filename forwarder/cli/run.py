"""`run`: collect continuously (or one sweep with --once) and deliver to every sink."""

from __future__ import annotations

from typing import Any

import click

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
@click.option("--once", is_flag=True, help="One sweep, then exit (cron, Fluentd in_exec).")
@_option(
    "--interval", setting="interval", metavar="DURATION", help="Time between sweeps (default 60s)."
)
@_option("--lag", setting="lag", metavar="DURATION", help="Stay this far behind now (default 60s).")
@_option(
    "--overlap",
    setting="overlap",
    metavar="DURATION",
    help="Re-read this much before the watermark for late events (default 10m).",
)
@_option(
    "--start-at",
    setting="start_at",
    metavar="WHEN",
    help="Where a stream with no checkpoint starts (default 24h ago; with --input the whole file).",
)
@METRICS_OPTION
@_option(
    "--health-max-age",
    setting="health_max_age",
    metavar="DURATION",
    help="/healthz fails when the last good sweep is older (default max(3 x interval, 5m)).",
)
@apply(SINK_OPTIONS)
@apply(DELIVERY_OPTIONS)
@apply(SOURCE_OPTIONS)
@apply(CONFIG_OPTIONS)
@handle_errors
def run(once: bool, **params: Any) -> None:
    """Collect continuously (or one sweep with --once) and deliver to every sink.

    \b
    Examples:
      openai-audit-forwarder run --sink 'fluentd://127.0.0.1:24224?tag=openai.audit'
      openai-audit-forwarder run --once --input samples/audit-log.jsonl --sink file:out/ecs.ndjson
    """
    from forwarder.service import serve

    settings = settings_from(params)
    serve(settings, once=once, stream_given=bool(params.get("stream")))
