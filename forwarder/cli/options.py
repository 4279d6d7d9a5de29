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


CONFIG_OPTIONS = [
    click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        help="TOML config file (CLI > env > file > defaults).",
    ),
    click.option("-v", "--verbose", count=True, help="More log output (repeatable)."),
    click.option("-q", "--quiet", count=True, help="Less log output (repeatable)."),
    _option(
        "--log-format",
        setting="log_format",
        type=click.Choice(["text", "json"]),
        help="Log lines on stderr as text (default) or JSON objects.",
    ),
    _option(
        "--state",
        setting="state",
        type=click.Path(path_type=Path),
        help="State database (default: $XDG_STATE_HOME/openai-audit-forwarder/state.db).",
    ),
    _option(
        "--stream",
        setting="stream",
        help="Checkpoint name (default 'default'; one per file with --input).",
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
        help="File holding the Admin API key (else $OPENAI_ADMIN_KEY).",
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
    _option("--actor-id", setting="actor_ids", multiple=True, help="Only this actor id."),
    _option("--actor-email", setting="actor_emails", multiple=True, help="Only this actor email."),
    _option("--resource-id", setting="resource_ids", multiple=True, help="Only this resource id."),
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
        help="Only tenant-scoped events.",
    ),
]

SINK_OPTIONS = [
    _option(
        "--sink",
        setting="sinks",
        multiple=True,
        metavar="URL",
        help="Where to send events (repeatable): file:PATH, stdout:, fluentd://HOST:PORT, "
        "syslog+relp://HOST:PORT, s3://BUCKET/PREFIX, ... (default stdout:).",
    ),
    _option(
        "--schema",
        setting="output_schema",
        help="Schema for sinks that do not name one: ecs (default), ocsf, raw.",
    ),
    _option(
        "--ocsf-version",
        setting="ocsf_version",
        help="OCSF version of ocsf documents (default 1.8.0; Security Lake: 1.3.0).",
    ),
    _option(
        "--dead-letter",
        setting="dead_letter",
        type=click.Path(path_type=Path),
        help="Dead-letter directory (default: beside the state).",
    ),
    click.option(
        "--original/--no-original",
        "original",
        default=None,
        help="Carry the source event as a JSON string (ECS event.original, OCSF raw_data).",
    ),
    _option(
        "--batch-size",
        setting="batch_size",
        type=int,
        help="Events per delivery batch (default 1000).",
    ),
    _option(
        "--sink-retry-timeout",
        setting="sink_retry_timeout",
        help="How long a sink that is down is retried before giving up (default 5m).",
    ),
]


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
