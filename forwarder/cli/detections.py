"""`detections list|export`: the Sigma detections and their conversions for Splunk, Elastic and
Sentinel. Parses, calls `forwarder.detections` / `forwarder.detection_exports`, prints. Loads
pySigma only in the commands' bodies."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from forwarder.cli.errors import handle_errors
from forwarder.detections import TARGETS
from mappings.sigma import SCHEMAS


@click.group()
def detections() -> None:
    """Sigma detections for the OpenAI audit log, and their conversions per SIEM (needs the
    `detections` extra: pip install 'openai-audit-forwarder[detections]').

    \b
    Examples:
      openai-audit-forwarder detections list
      openai-audit-forwarder detections export --target esql --schema ecs -o rules.ndjson
    """


@detections.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also the rules only correlations count.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule.")
@handle_errors
def list_command(show_all: bool, as_json: bool) -> None:
    """Print each rule's id, level, title and the event types it needs.

    \b
    Example:
      openai-audit-forwarder detections list
    """
    from forwarder.detections import describe

    for info in describe():
        if not (info.alerting or show_all):
            continue
        if as_json:
            click.echo(json.dumps(asdict(info)))
        else:
            kind = "" if info.kind == "event" else f" [{info.kind}]"
            types = ", ".join(info.event_types)
            click.echo(f"{info.id}  {info.level:<13} {info.title}{kind}\n    {types}")


@detections.command("export")
@click.option("--target", type=click.Choice(TARGETS), help="The SIEM (sigma: the pipeline).")
@click.option(
    "--schema",
    type=click.Choice(SCHEMAS),
    default="ecs",
    help="Schema of the fields (default ecs).",
)
@click.option(
    "-o",
    "--output",
    metavar="PATH|-",
    default="-",
    help="File to write (a directory for sigma; default -: stdout).",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Regenerate every conversion committed under packaging/ (run from the repository).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="With --all: the repository to write into (default the current directory).",
)
@handle_errors
def export_command(
    target: str | None, schema: str, output: str, everything: bool, root: Path
) -> None:
    """Convert the rules with the official pySigma backend of a SIEM: Splunk savedsearches.conf,
    Elastic ES|QL or EQL rules (NDJSON for Kibana's import), Sentinel analytics rules (ARM
    template), or the pySigma pipeline (sigma). Rules a backend cannot express are listed in the
    output, with the reason.

    \b
    Examples:
      openai-audit-forwarder detections export --target splunk --schema ecs -o savedsearches.conf
      openai-audit-forwarder detections export --all
    """
    from forwarder import detection_exports

    if everything:
        for path in detection_exports.export_all(root):
            click.echo(f"wrote {path}", err=True)
        return
    if target is None:
        raise click.UsageError("give --target, or --all")
    if target == "sigma" or output != "-":
        if output == "-":
            raise click.UsageError("--target sigma writes a directory: give -o DIR")
        for path in detection_exports.write(target, schema, Path(output)):
            click.echo(f"wrote {path}", err=True)
        return
    sys.stdout.write(detection_exports.render(target, schema))
