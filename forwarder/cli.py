"""The command-line interface (click): run, backfill, map, checkpoint, check. Every failure
ends as one line on stderr and exit code 1 (runtime) or 2 (usage or configuration)."""

from __future__ import annotations

import functools
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from forwarder import __version__
from forwarder.config import Settings, load_settings
from forwarder.errors import ConfigError, ForwarderError
from forwarder.files import make_private_dirs
from forwarder.logs import get_logger, redact, setup_logging
from forwarder.mapfile import map_file
from forwarder.schemas import build_mappers
from forwarder.timeparse import format_when, out_of_range, parse_when

if TYPE_CHECKING:
    from forwarder.backfill import Progress

# The commands import the collector's parts when they run: `map`, `--help` and the checkpoint
# commands then start without loading the HTTP client, the sinks and the metrics.

PROG = "openai-audit-forwarder"
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away
STDOUT_FD = 1


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
    # What is loaded by now (modules, classes, settings) lives as long as the process: keep it
    # out of the cyclic collector's scans. They cost a third of the time of mapping a file.
    gc.freeze()
    return settings


def stream_targets(settings: Settings, stream_given: bool) -> list[Settings]:
    """The settings of each configured stream (all, or the one --stream names), each followed
    by its tenant companion (with_tenant, the default)."""
    return [target for group in stream_groups(settings, stream_given) for target in group]


def stream_groups(settings: Settings, stream_given: bool) -> list[list[Settings]]:
    """Each configured stream with its tenant companion, if any: a configured stream of the
    companion's name (a tenant stream of its own) takes its place."""
    configured = [settings.for_stream(stream) for stream in settings.streams] or [settings]
    names = {c.stream for c in configured}
    if settings.streams and stream_given:
        configured = [c for c in configured if c.stream == settings.stream]
        if not configured:
            raise ConfigError(f"invalid setting stream: no stream {settings.stream!r} configured")
    return [
        [t for t in c.with_tenant_companion() if not (t.tenant_companion and t.stream in names)]
        for c in configured
    ]


def insecure_transport(settings: Settings) -> str | None:
    """Why the key and the events travel unprotected to the API, if they do."""
    if settings.input:
        return None
    if not settings.verify_tls and settings.base_url.startswith("https://"):
        return f"verify_tls=false: the API's certificate is not checked ({settings.base_url})"
    if settings.base_url.startswith("http://") and settings.allow_insecure_http:
        return f"http:// base URL: the admin key is sent in cleartext ({redact(settings.base_url)})"
    return None


def warn_insecure(targets: list[Settings]) -> None:
    for settings in targets:
        reason = insecure_transport(settings)
        if reason:
            get_logger().warning("%s", reason, extra={"stream": settings.stream})


def handle_errors(func: Callable) -> Callable:
    """Turn every failure into one line on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ForwarderError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # a bug: still one line, the traceback with -v
            get_logger().debug("internal error", exc_info=True)
            _fail(f"internal error: {type(exc).__name__}: {exc}", 1)

    return wrapper


def _fail(message: str, code: int) -> None:
    text = " ".join(redact(message).split())
    click.echo(f"{PROG}: error: {text}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Collect the OpenAI organization audit log, map it to ECS or OCSF, and forward it to
    Fluentd, syslog, S3, a file or stdout, with a crash-safe checkpoint.

    \b
    Example:
      export OPENAI_ADMIN_KEY=sk-admin-...
      openai-audit-forwarder run --sink 'syslog+relp://siem.example:2514'
    """


# run ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--once", is_flag=True, help="One sweep, then exit (cron, Fluentd in_exec).")
@_option("--interval", setting="interval", help="Time between sweeps (default 60s).")
@_option("--lag", setting="lag", help="Stay this far behind now (default 60s).")
@_option(
    "--overlap",
    setting="overlap",
    help="Re-read this much before the watermark for late events (default 10m).",
)
@_option(
    "--window",
    setting="window",
    help="Unused by run against the API: a sweep lists its whole span, so the number of "
    "requests follows the events (kept for backfill and config files).",
)
@_option(
    "--start-at",
    setting="start_at",
    metavar="WHEN",
    help="Where a stream with no checkpoint starts (default 24h ago).",
)
@_option(
    "--metrics-addr",
    setting="metrics_addr",
    metavar="HOST:PORT",
    help="Serve Prometheus /metrics and /healthz here.",
)
@_option(
    "--health-max-age",
    setting="health_max_age",
    help="/healthz fails when the last good sweep is older (default max(3 x interval, 5m)).",
)
@apply(SINK_OPTIONS)
@apply(SOURCE_OPTIONS)
@apply(CONFIG_OPTIONS)
@handle_errors
def run(once: bool, **params: Any) -> None:
    """Collect continuously (or one sweep with --once) and deliver to every sink.

    \b
    Examples:
      openai-audit-forwarder run --sink fluentd://127.0.0.1:24224?tag=openai.audit
      openai-audit-forwarder run --once --input samples/audit-log.jsonl --sink file:out/ecs.ndjson
    """
    from forwarder.health import Health, serve_metrics
    from forwarder.runtime import install_stop_handlers
    from forwarder.service import run_stream, run_streams

    settings = settings_from(params)
    groups = stream_groups(settings, bool(params.get("stream")))
    warn_insecure([target for group in groups for target in group])
    stop = threading.Event()
    install_stop_handlers(stop)
    health = Health(settings.health_threshold)
    if settings.metrics_addr:
        serve_metrics(settings.metrics_addr, health)
    if len(groups) == 1:  # a stream and its tenant companion, swept one after the other
        run_stream(groups[0][0], once, stop, health, companions=groups[0][1:])
        return
    failures = run_streams(groups, once, stop, health)
    if failures:
        names = ", ".join(name for name, _ in failures)
        first = failures[0][1]
        raise ForwarderError(f"{len(failures)} of {len(groups)} streams failed ({names}): {first}")


# backfill ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--since",
    required=True,
    metavar="WHEN",
    help="Start: ISO 8601, unix seconds, or a span ago such as 30d.",
)
@click.option("--until", metavar="WHEN", help="End (default now minus --lag).")
@_option("--window", setting="window", help="Window size (default 1h).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Windows fetched at once.",
)
@click.option(
    "--page-budget",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Pages per window before its older part is split off.",
)
@click.option("--restart", is_flag=True, help="Forget an earlier run of the same backfill.")
@_option("--lag", setting="lag", help="Default --until is now minus this (default 60s).")
@apply(SINK_OPTIONS)
@apply(SOURCE_OPTIONS)
@apply(CONFIG_OPTIONS)
@handle_errors
def backfill(
    since: str,
    until: str | None,
    concurrency: int,
    page_budget: int,
    restart: bool,
    **params: Any,
) -> None:
    """Deliver a past time range, windows fetched in parallel and committed one by one.
    Re-running the same command resumes it; the live checkpoint is never touched.

    \b
    Example:
      openai-audit-forwarder backfill --since 2026-01-01 --until 2026-02-01 \\
          --window 6h --concurrency 8 --sink s3://audit-bucket/openai
    """
    from forwarder.runtime import install_stop_handlers

    targets = stream_targets(settings_from(params), bool(params.get("stream")))
    warn_insecure(targets)
    stop = threading.Event()
    install_stop_handlers(stop)
    from forwarder.sources.openai_api import TenantRefused

    for settings in targets:  # one stream after the other, each with a job of its own
        try:
            _backfill_stream(settings, since, until, concurrency, page_budget, restart, stop)
        except TenantRefused as exc:
            if not settings.tenant_companion:
                raise
            click.echo(
                f"{PROG}: warning: {settings.stream}: tenant-scoped events not backfilled: "
                f"{redact(str(exc))} (--without-tenant skips them)",
                err=True,
            )


def _backfill_stream(
    settings: Settings,
    since: str,
    until: str | None,
    concurrency: int,
    page_budget: int,
    restart: bool,
    stop: threading.Event,
) -> None:
    from forwarder.backfill import Backfill, Interrupted, find_or_create_job, job_key
    from forwarder.delivery import Stopped
    from forwarder.runtime import Runtime
    from forwarder.state import Handover

    try:
        since_ts = parse_when(since)
        until_ts = parse_when(until) if until else int(time.time() - settings.lag)
    except ValueError as exc:
        raise ConfigError(f"invalid setting since/until: {exc}") from None
    if until_ts <= since_ts:
        raise ConfigError("invalid setting until: must be later than --since")
    arguments = {
        "since": since,
        "until": until,
        "window": settings.window,
        "filters": settings.filters(),
        "input": settings.input,
        "base_url": settings.base_url,
    }
    with Runtime(settings, f"backfill --since {since}", "backfill {stream}", stop=stop) as rt:
        rt.open()
        assert rt.source and rt.state and rt.delivery
        if restart:
            rt.state.delete_job(job_key(rt.stream, arguments))
        job = find_or_create_job(
            rt.state, rt.stream, arguments, since_ts, until_ts, int(settings.window)
        )
        span = f"{format_when(job.since)} .. {format_when(job.until)}"
        if job.finished_at is not None:
            click.echo(
                f"backfill {rt.stream} {span} already complete (use --restart to run it again)",
                err=True,
            )
            return
        # A backfill up to now (no --until) continues as the live stream, unless that has a
        # checkpoint already; one with an explicit end fills a gap and leaves live alone.
        handover = None
        if until is None and rt.source.live:
            # The ids of the last day go over, not just of this --overlap: whatever overlap
            # `run` is given, its first re-read finds them. Its first commit prunes the rest.
            keep_from = job.until - max(int(settings.overlap), 86_400)
            handover = Handover(rt.stream, job.until, keep_from)
        show = _progress_printer() if sys.stderr.isatty() else None
        started = time.monotonic()
        runner = Backfill(
            job=job,
            source=rt.source,
            delivery=rt.delivery,
            state=rt.state,
            batch_size=settings.batch_size,
            concurrency=concurrency,
            page_budget=page_budget,
            stop=stop,
            on_progress=show,
            handover=handover,
        )
        try:
            progress = runner.run()
        except (Interrupted, Stopped):
            if show:
                click.echo("", err=True)
            raise Interrupted("backfill interrupted; run the same command to resume") from None
        if show:
            click.echo("", err=True)
        elapsed = time.monotonic() - started
        live = ""
        if progress.handed_over:
            live = f"; the live stream continues from {format_when(job.until)}"
        elif handover is not None:
            live = "; the live stream has a checkpoint already and keeps it"
        click.echo(
            f"backfill complete: {rt.stream} {span}, "
            f"{progress.windows_done} windows, {progress.events} events delivered, "
            f"{rt.delivery.dead_letters.count} dead-lettered, {elapsed:.1f}s "
            f"({progress.events / elapsed if elapsed else 0:.0f} events/s){live}",
            err=True,
        )


def _progress_printer() -> Callable[[Progress, int], None]:
    last = [0.0]

    def show(progress: Progress, done_at_start: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and progress.windows_done < progress.windows_total:
            return
        last[0] = now
        width = 24
        filled = int(width * progress.windows_done / max(1, progress.windows_total))
        eta = progress.eta(done_at_start)
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "--:--:--"
        click.echo(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.windows_done}/"
            f"{progress.windows_total} windows  {progress.events:,} events  "
            f"{progress.rate:,.0f} events/s  ETA {eta_text} ",
            err=True,
            nl=False,
        )

    return show


# map ---------------------------------------------------------------------------------------


@cli.command("map")
@click.option(
    "--schema",
    "schema",
    default="ecs",
    show_default=True,
    help="Target schema: ecs, ocsf, raw or a registered mapper.",
)
@click.argument("input_path", metavar="[INPUT|-]", default="-")
@click.option("-o", "--output", default="-", metavar="OUTPUT|-", help="Where to write NDJSON.")
@_option("--org-id", setting="org_id", help="Organization id stamped into the documents.")
@click.option(
    "--original",
    "original",
    is_flag=True,
    default=None,
    help="Carry the source event as a JSON string (ECS event.original, OCSF raw_data).",
)
@apply(CONFIG_OPTIONS[:4])
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
    settings = settings_from(params)
    mapper = build_mappers(settings, {schema})[schema]
    source = sys.stdin.buffer if input_path == "-" else _open_input(input_path)
    target = sys.stdout.buffer if output == "-" else _open_output(output)

    def report(where: str, reason: str) -> None:
        click.echo(f"{PROG}: {input_path} {where}: {reason}", err=True)

    try:
        with source, target:
            failures = map_file(source, target, mapper, report)
    except BrokenPipeError:
        # The reader went away (`map ... | head`): stop quietly with the shell's SIGPIPE
        # status, and keep the interpreter's final flush from failing a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), STDOUT_FD)
        sys.exit(EXIT_PIPE_CLOSED)
    if failures:
        raise ForwarderError(f"{failures} events could not be mapped (see the lines above)")


def _open_input(path: str) -> Any:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ForwarderError(f"input {path}: {exc.strerror or exc}") from None


def _open_output(path: str) -> Any:
    try:
        # Event data: owner only, as the file sink writes it.
        make_private_dirs(Path(path).parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return open(fd, "wb", buffering=1 << 20)
    except OSError as exc:
        raise ForwarderError(f"output {path}: {exc.strerror or exc}") from None


# checkpoint --------------------------------------------------------------------------------


@cli.group()
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
    from forwarder.state import State, live_scope, watermark_problem

    settings = settings_from(params)
    if not settings.state_path.exists():
        raise ForwarderError(f"no state at {settings.state_path} (nothing collected yet)")
    state = State(settings.state_path)
    try:
        streams = [
            {
                "stream": stream,
                "watermark": format_when(wm),
                "watermark_unix": wm,
                "updated": format_when(int(updated)),
                "remembered_ids": state.count_delivered(live_scope(stream)),
                "span_in_progress": _span_text(state.live_span(stream)),
                "watermark_problem": watermark_problem(wm),
            }
            for stream, wm, updated in state.streams()
        ]
        jobs = [
            {
                "job": job,
                "stream": stream,
                "since": format_when(since),
                "until": format_when(until),
                "windows": windows,
                "windows_done": done,
                "events": events,
                "finished": format_when(int(fin)) if fin else None,
            }
            for job, stream, since, until, fin, windows, done, events in state.jobs()
        ]
        sinks = [
            {"sink": sink, "position": pos}
            for sink, pos in state.db.execute("SELECT sink, position FROM sink_positions")
        ]
        refusals = [
            {"stream": stream, "refused_at": format_when(int(at)), "message": message}
            for stream, at, message in state.tenant_refusals()
        ]
    finally:
        state.close()
    if as_json:
        click.echo(
            orjson.dumps(
                {"streams": streams, "backfills": jobs, "sinks": sinks, "tenant_refused": refusals}
            )
        )
        return
    if not streams:
        click.echo("no live checkpoint yet")
    for s in streams:
        click.echo(
            f"stream {s['stream']}: watermark {s['watermark']} ({s['watermark_unix']}), "
            f"updated {s['updated']}, {s['remembered_ids']} ids remembered"
            + (f", {s['span_in_progress']}" if s["span_in_progress"] else "")
        )
        if s["watermark_problem"]:
            click.echo(
                f"stream {s['stream']}: OUT OF RANGE: watermark {s['watermark_problem']}; "
                f"set a good one with 'checkpoint set WHEN --stream {s['stream']}'"
            )
    for j in jobs:
        status = f"finished {j['finished']}" if j["finished"] else "unfinished"
        click.echo(
            f"backfill {j['job']} ({j['stream']}): {j['since']} .. {j['until']}, "
            f"{j['windows_done']}/{j['windows']} windows, {j['events']} events, {status}"
        )
    for k in sinks:
        click.echo(f"sink {k['sink']}: position {k['position']}")
    for r in refusals:
        click.echo(
            f"stream {r['stream']}: tenant listing refused {r['refused_at']}, asked again "
            f"hourly: {r['message']}"
        )


def _span_text(span: Any) -> str | None:
    """A live sweep stopped part way (see `LiveSpan`), in words."""
    if span is None:
        return None
    return (
        f"catch-up to {format_when(span.end)} in progress, delivered down to "
        f"{format_when(span.done_from)}"
    )


def _change_checkpoint(params: dict[str, Any], watermark: int | None) -> str:
    from forwarder.state import State, StreamLock

    settings = settings_from(params)
    stream = settings.stream
    lock = StreamLock(settings.state_path, f"stream {stream}")
    lock.acquire("checkpoint")
    try:
        state = State(settings.state_path)
        try:
            state.set_watermark(stream, watermark)
        finally:
            state.close()
    finally:
        lock.release()
    return stream


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
    try:
        watermark = parse_when(when)
    except ValueError as exc:
        raise ConfigError(f"invalid setting WHEN: {exc}") from None
    problem = out_of_range(watermark)
    if problem:
        raise ConfigError(f"invalid setting WHEN: {problem}")
    stream = _change_checkpoint(params, watermark)
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
    stream = _change_checkpoint(params, None)
    click.echo(f"stream {stream}: checkpoint removed")


# check -------------------------------------------------------------------------------------


@cli.command()
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
    from forwarder.runtime import build_sinks, build_source, stream_name
    from forwarder.sinks.base import SinkError
    from forwarder.sources.openai_api import TenantRefused

    targets = stream_targets(settings_from(params), bool(params.get("stream")))
    failed = 0
    checked: set[str] = set()
    for settings in targets:
        stream = stream_name(settings)
        click.echo(f"ok    config: stream {stream}, state {settings.state_path}")
        if insecure_transport(settings):
            click.echo(f"WARN  source {stream}: {insecure_transport(settings)}")
        sinks = build_sinks(settings, stream)
        build_mappers(settings, {sink.mapping for sink in sinks})
        try:
            source = build_source(settings, threading.Event())
            try:
                click.echo(f"ok    source {stream}: {redact(source.check())}")
            finally:
                source.close()
        except ConfigError:
            raise
        except TenantRefused as exc:
            if not settings.tenant_companion:
                failed += 1
                click.echo(f"FAIL  source {stream}: {redact(str(exc))}")
            else:
                click.echo(
                    f"warn  source {stream}: tenant-scoped events are not collected, "
                    f"{redact(str(exc))}; run asks again hourly (--without-tenant to stop)"
                )
        except ForwarderError as exc:
            failed += 1
            click.echo(f"FAIL  source {stream}: {redact(str(exc))}")
        for sink in sinks:
            if sink.name in checked:
                continue
            checked.add(sink.name)
            try:
                click.echo(f"ok    sink {sink.name}: {redact(sink.check())}")
            except SinkError as exc:
                failed += 1
                click.echo(f"FAIL  sink {sink.name}: {redact(str(exc))}")
            finally:
                sink.close()
    if failed:
        raise ForwarderError(f"{failed} check(s) failed")


# deadletter --------------------------------------------------------------------------------


@cli.group()
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
    from forwarder.deadletter import read_dead_letters

    settings = settings_from(params)
    groups: dict[tuple[str, str, str, str], int] = {}
    files: set[str] = set()
    times: list[str] = []
    bad_lines: list[dict[str, Any]] = []
    for path, number, letter in read_dead_letters(settings.dead_letter_dir):
        files.add(path.name)
        if "unreadable" in letter:
            bad_lines.append({"file": path.name, "line": number, "problem": letter["unreadable"]})
        reason = str(letter.get("reason") or "")
        key = (
            str(letter.get("stream") or "-"),
            str(letter.get("sink") or "-"),
            str(letter.get("schema") or "-"),
            reason.split(":", 1)[0],
        )
        groups[key] = groups.get(key, 0) + 1
        if letter.get("time"):
            times.append(str(letter["time"]))
    total = sum(groups.values())
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "directory": str(settings.dead_letter_dir),
                    "total": total,
                    "files": sorted(files),
                    "oldest": min(times, default=None),
                    "newest": max(times, default=None),
                    "groups": [
                        {"stream": k[0], "sink": k[1], "schema": k[2], "reason": k[3], "count": n}
                        for k, n in sorted(groups.items())
                    ],
                    "bad_lines": bad_lines,
                }
            )
        )
        return
    click.echo(f"{total} dead letters in {settings.dead_letter_dir} ({len(files)} files)")
    for (stream, sink, schema, reason), count in sorted(groups.items()):
        click.echo(f"{count:8d}  stream {stream}  sink {sink}  schema {schema}  {reason}")
    for bad in bad_lines:
        click.echo(f"bad line {bad['file']}:{bad['line']}: {bad['problem']}")


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

    settings = settings_from(params)
    result = replay(settings, explicit_sinks=bool(params.get("sinks")))
    click.echo(
        f"replayed {result.letters} dead letters: {result.delivered} delivered, "
        f"{result.kept} dead-lettered again",
        err=True,
    )
    if result.kept:
        raise ForwarderError(
            f"{result.kept} dead letters could not be delivered; see 'deadletter list'"
        )


from forwarder.cli_detections import detections  # noqa: E402  (forwarder/cli/ at merge)

cli.add_command(detections)


def main() -> None:
    cli(prog_name=PROG)


if __name__ == "__main__":
    main()
