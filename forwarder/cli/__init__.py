"""The command-line interface (click). The root group imports a command's module only when
that command runs or is listed, and a command imports the domain only in its body: `--help`,
`map` and `checkpoint` start without the HTTP client, the sinks or the metrics. Each command
parses its options, calls one function of the domain and prints what it returns
(`cli/render.py`); every failure ends as one line on stderr with exit code 1 (runtime) or 2
(usage or configuration), in `cli/errors.py`."""

from __future__ import annotations

import click

from forwarder import __version__
from forwarder.cli.errors import PROG
from forwarder.cli.lazy import LazyGroup

COMMANDS = {
    "run": "forwarder.cli.run:run",
    "backfill": "forwarder.cli.backfill:backfill",
    "map": "forwarder.cli.map:map_command",
    "checkpoint": "forwarder.cli.checkpoint:checkpoint",
    "check": "forwarder.cli.check:check",
    "deadletter": "forwarder.cli.deadletter:deadletter",
    "detections": "forwarder.cli.detections:detections",
}


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Collect the OpenAI organization audit log, map it to ECS or OCSF, and forward it to
    Fluentd, syslog, S3, a file or stdout, with a crash-safe checkpoint.

    \b
    Example:
      export OPENAI_ADMIN_KEY=sk-admin-...
      openai-audit-forwarder run --sink 'fluentd://fluentd.example:24224?tag=openai.audit'
    """


def main() -> None:
    cli(prog_name=PROG)
