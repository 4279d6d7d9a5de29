"""`deadletter list|replay`: the dead-letter directory, summarized or sent again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from forwarder.cli import render
from forwarder.cli.errors import handle_errors
from forwarder.cli.options import CONFIG_OPTIONS, SINK_OPTIONS, _option, apply, settings_from
from forwarder.errors import ForwarderError


@click.group()
def deadletter() -> None:
    """Inspect and replay the dead-letter directory (events that could not be mapped, or that
    a sink refused for good).

    \b
    Examples:
      openai-audit-forwarder deadletter list
      openai-audit-forwarder deadletter replay --sink file:out/replayed.ndjson
    """


@deadletter.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@_option(
    "--dead-letter",
    setting="dead_letter",
    type=click.Path(path_type=Path),
    help="Dead-letter directory (default: beside the state).",
)
@apply(CONFIG_OPTIONS)
@handle_errors
def deadletter_list(as_json: bool, **params: Any) -> None:
    """Summarize the dead letters by stream, sink, schema and reason.

    \b
    Example:
      openai-audit-forwarder deadletter list --state /var/lib/oaf/state.db
    """
    from forwarder.deadletter import summarize

    summary = summarize(settings_from(params).dead_letter_dir)
    if as_json:
        render.as_json(summary)
    else:
        render.dead_letter_summary(summary)


@deadletter.command("replay")
@apply(SINK_OPTIONS)
@apply(CONFIG_OPTIONS)
@handle_errors
def deadletter_replay(**params: Any) -> None:
    """Re-send every dead letter and remove those delivered. Without --sink, a letter goes back
    to the configured sink that rejected it, or to the sinks of the schema that failed.

    \b
    Example:
      openai-audit-forwarder deadletter replay --sink file:out/replayed.ndjson --schema raw
    """
    from forwarder.replay import replay

    result = replay(settings_from(params), explicit_sinks=bool(params.get("sinks")))
    click.echo(
        f"replayed {result.letters} dead letters: {result.delivered} delivered, "
        f"{result.kept} dead-lettered again",
        err=True,
    )
    if result.kept:
        raise ForwarderError(
            f"{result.kept} dead letters could not be delivered; see 'deadletter list'"
        )
