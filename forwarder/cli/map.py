"""`map`: map a file of audit-log events to a schema, offline. Loads neither the HTTP client
nor the sinks."""

from __future__ import annotations

from typing import Any

import click

from forwarder.cli import render
from forwarder.cli.errors import handle_errors
from forwarder.cli.options import LOG_OPTIONS, _option, apply, settings_from
from forwarder.errors import ForwarderError


@click.command("map")
@click.option(
    "--schema",
    "schema",
    default="ecs",
    help="Target schema: ecs, ocsf, raw or a registered mapper (default ecs).",
)
@click.argument("input_path", metavar="[INPUT|-]", default="-")
@click.option(
    "-o",
    "--output",
    default="-",
    metavar="OUTPUT|-",
    help="Where to write NDJSON (default -: stdout).",
)
@_option("--org-id", setting="org_id", help="Organization id stamped into the documents.")
@_option("--ocsf-version", setting="ocsf_version", help="OCSF version (default 1.8.0).")
@click.option(
    "--original",
    "original",
    is_flag=True,
    default=None,
    help="Carry the source event as a JSON string (ECS event.original, OCSF raw_data).",
)
@apply(LOG_OPTIONS)
@handle_errors
def map_command(schema: str, input_path: str, output: str, **params: Any) -> None:
    """Map audit-log events to a schema, offline: any mix of events, saved list responses
    and arrays, one per line (streamed), pretty-printed or one after the other. A malformed
    value or event is reported with its place, the rest is still mapped, and the exit code
    is 1.

    \b
    Example:
      openai-audit-forwarder map --schema ocsf samples/audit-log.jsonl -o out/ocsf.ndjson
    """
    from forwarder.mapfile import map_path

    settings = settings_from(params)

    def report(where: str, reason: str) -> None:
        render.map_problem(input_path, where, reason)

    failures = map_path(settings, schema, input_path, output, report)
    if failures:
        raise ForwarderError(f"{failures} events could not be mapped (see the lines above)")
