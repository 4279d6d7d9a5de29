"""`deadletter list|replay`: the dead-letter directory, summarized or sent again."""

from __future__ import annotations

from typing import Any

import click

from forwarder.cli import render
from forwarder.cli.errors import handle_errors
from forwarder.cli.options import (
    DEAD_LETTER_OPTION,
    DELIVERY_OPTIONS,
    LOG_OPTIONS,
    STATE_OPTION,
    apply,
    settings_from,
    sink_options,
)
from forwarder.errors import ForwarderError

REPLAY_SINK_HELP = (
    "Send the letters to this sink (repeatable; default each back to the configured sink that "
    "refused it, or to the configured sinks of the schema that could not map it). A letter "
    "that one of the sinks given refused goes back to that one alone."
)


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
@DEAD_LETTER_OPTION
@STATE_OPTION
@apply(LOG_OPTIONS)
@handle_errors
def deadletter_list(as_json: bool, **params: Any) -> None:
    """Summarize the dead letters by stream, sink, schema and reason.

    \b
    Example:
      openai-audit-forwarder deadletter list --state /var/lib/openai-audit-forwarder/state.db
    """
    from forwarder.deadletter import summarize

    summary = summarize(settings_from(params).dead_letter_dir)
    if as_json:
        render.as_json(summary)
    else:
        render.dead_letter_summary(summary)


@deadletter.command("replay")
@apply(sink_options(REPLAY_SINK_HELP))
@apply(DELIVERY_OPTIONS)
@STATE_OPTION
@apply(LOG_OPTIONS)
@handle_errors
def deadletter_replay(**params: Any) -> None:
    """Re-send every dead letter and remove those delivered; what fails again stays, with its
    new reason, and the exit code is 1.

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
