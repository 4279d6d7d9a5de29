"""The options the commands share, each mapped to the setting of the same name, and
`settings_from`, which turns the flags a user gave into validated settings (unset flags fall
through to the environment and the config file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from forwarder.config import Settings, load_settings
from forwarder.logs import setup_logging
from forwarder.process import settle_gc

# Options shared by the commands; each maps to a setting of the same name -------------------


def _option(*names: str, setting: str, multiple: bool = False, **kwargs: Any) -> Callable:
    def decorate(func: Callable) -> Callable:
        return click.option(*names, setting, multiple=multiple, default=None, **kwargs)(func)

    return decorate


# Help text style: one sentence or two, ending with a period; a default as "(default X)" at
# the end of the first sentence. Only the options a command uses are on it.

LOG_OPTIONS = [
    click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        help="TOML config file (flags > environment > file > defaults).",
    ),
    click.option(
        "-v",
        "--verbose",
        count=True,
        help="-v: also one line per API request and per sink batch; -vv: debug.",
    ),
    click.option(
        "-q",
        "--quiet",
        count=True,
        help="-q: only errors; -qq: no log lines (a failure's error line stays).",
    ),
    _option(
        "--log-format",
        setting="log_format",
        type=click.Choice(["text", "json"]),
        help="Log lines on stderr as text or JSON objects (default text).",
    ),
]

STATE_OPTION = _option(
    "--state",
    setting="state",
    type=click.Path(path_type=Path),
    help="State database (default $XDG_STATE_HOME/openai-audit-forwarder/state.db).",
)


def stream_option(help: str) -> Callable:
    return _option("--stream", setting="stream", metavar="NAME", help=help)


CONFIG_OPTIONS = [
    *LOG_OPTIONS,
    STATE_OPTION,
    stream_option(
        "The stream: the name of its checkpoint (default 'default'; with --input one per "
        "file), or the one of the configured [[streams]] to use (default all)."
    ),
]

SOURCE_OPTIONS = [
    _option(
        "--input",
        setting="input",
        metavar="PATH|-",
        help="Read audit-log events from a file (or stdin) instead of the API: as `map`, any "
        "mix of events, saved list responses and arrays, one per line or pretty-printed.",
    ),
    _option(
        "--admin-key-file",
        setting="admin_key_file",
        type=click.Path(path_type=Path),
        help="File holding the Admin API key (default $OPENAI_ADMIN_KEY).",
    ),
    _option(
        "--base-url",
        setting="base_url",
        help="API base URL (default $OPENAI_BASE_URL or https://api.openai.com/v1).",
    ),
    _option(
        "--allow-insecure-http",
        setting="allow_insecure_http",
        is_flag=True,
        help="Allow an http:// base URL to another machine (the key goes in cleartext).",
    ),
    _option(
        "--org-id",
        setting="org_id",
        help="Organization id stamped as organization.id / metadata.tenant_uid.",
    ),
    _option(
        "--event-type",
        setting="event_types",
        multiple=True,
        help="Only this event type (repeatable).",
    ),
    _option(
        "--project", setting="project_ids", multiple=True, help="Only this project id (repeatable)."
    ),
    _option(
        "--actor-id", setting="actor_ids", multiple=True, help="Only this actor id (repeatable)."
    ),
    _option(
        "--actor-email",
        setting="actor_emails",
        multiple=True,
        help="Only this actor email (repeatable).",
    ),
    _option(
        "--resource-id",
        setting="resource_ids",
        multiple=True,
        help="Only this resource id (repeatable).",
    ),
    click.option(
        "--with-tenant/--without-tenant",
        "with_tenant",
        default=None,
        help="Also collect the tenant-scoped events, in a stream NAME-tenant of their own "
        "(default on; a refused tenant listing is a warning, asked again hourly).",
    ),
    click.option(
        "--tenant-only/--no-tenant-only",
        "tenant_only",
        default=None,
        help="Only tenant-scoped events (default off).",
    ),
]

SINK_HELP = (
    "Where to send events (repeatable): file:PATH, stdout:, fluentd://HOST:PORT, "
    "syslog+relp://HOST:PORT, s3://BUCKET/PREFIX, ... (default stdout:)."
)


def sink_options(sink_help: str = SINK_HELP) -> list[Callable]:
    """The sinks and what shapes their documents."""
    return [
        _option("--sink", setting="sinks", multiple=True, metavar="URL", help=sink_help),
        _option(
            "--schema",
            setting="output_schema",
            help="Schema for sinks that do not name one: ecs, ocsf, raw (default ecs).",
        ),
        _option(
            "--ocsf-version",
            setting="ocsf_version",
            help="OCSF version of ocsf documents (default 1.8.0; Security Lake: 1.3.0).",
        ),
        click.option(
            "--original/--no-original",
            "original",
            default=None,
            help="Carry the source event as a JSON string (ECS event.original, OCSF raw_data; "
            "default off).",
        ),
    ]


SINK_OPTIONS = sink_options()

DEAD_LETTER_OPTION = _option(
    "--dead-letter",
    setting="dead_letter",
    type=click.Path(path_type=Path),
    help="Dead-letter directory (default dead-letter/ beside the state).",
)

# How batches are delivered: what `run`, `backfill` and `deadletter replay` do, `check` not.
DELIVERY_OPTIONS = [
    DEAD_LETTER_OPTION,
    _option(
        "--batch-size",
        setting="batch_size",
        type=int,
        help="Events per delivery batch and commit (default 1000).",
    ),
    _option(
        "--sink-retry-timeout",
        setting="sink_retry_timeout",
        metavar="DURATION",
        help="How long a sink that is down is retried before giving up (default 5m).",
    ),
]

METRICS_OPTION = _option(
    "--metrics-addr",
    setting="metrics_addr",
    metavar="HOST:PORT",
    help="Serve Prometheus /metrics, /healthz and /livez on HOST:PORT, [IPV6]:PORT, or :PORT "
    "for 127.0.0.1 (default off).",
)


def apply(options: list[Callable]) -> Callable:
    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def settings_from(params: dict[str, Any]) -> Settings:
    """Settings from the flags the user gave (unset flags fall through to env and file), with
    logging set up and the process readied for a long run. A flag that sets a setting is
    named after it (see `_option`)."""
    cli = {}
    for key, value in params.items():
        if key not in Settings.model_fields or value is None or value == ():
            continue
        cli[key] = list(value) if isinstance(value, tuple) else value
    verbosity = params.get("verbose", 0) - params.get("quiet", 0)
    if verbosity:
        cli["verbosity"] = max(-2, min(3, verbosity))
    settings = load_settings(params.get("config_file"), **cli)
    setup_logging(settings.log_format, settings.verbosity)
    settle_gc()
    return settings
