"""What the `checkpoint` commands show and change: every stream's watermark, the backfill
jobs, the sinks' committed positions and refused tenant listings, as plain data (one report for
text and JSON alike); and a stream's watermark moved or removed under the stream's lock."""

from __future__ import annotations

from typing import Any

from forwarder.config import Settings
from forwarder.errors import ConfigError, ForwarderError
from forwarder.state import LiveSpan, State, StreamLock, live_scope, watermark_problem
from forwarder.timeparse import format_when, out_of_range, parse_when


def checkpoint_report(
    settings: Settings, only: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """`streams`, `backfills`, `sinks`, `tenant_refused` and `spools` (the S3 Parquet spool), times
    as ISO 8601. With `only`, the streams, backfills and tenant refusals of that stream alone
    (`ConfigError` when the state holds no such stream)."""
    if not settings.state_path.exists():
        raise ForwarderError(f"no state at {settings.state_path} (nothing collected yet)")
    state = State(settings.state_path)
    try:
        if only is not None:
            _require_stream(state, only, settings)
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
        sinks = [{"sink": sink, "position": pos} for sink, pos in state.sink_positions()]
        refusals = [
            {"stream": stream, "refused_at": format_when(int(at)), "message": message}
            for stream, at, message in state.tenant_refusals()
        ]
    finally:
        state.close()
    if only is not None:
        streams = [s for s in streams if s["stream"] == only]
        jobs = [j for j in jobs if j["stream"] == only]
        refusals = [r for r in refusals if r["stream"] == only]
    return {
        "streams": streams,
        "backfills": jobs,
        "sinks": sinks,
        "tenant_refused": refusals,
        "spools": _spools(settings),
    }


def _spools(settings: Settings) -> list[dict[str, Any]]:
    """What the S3 Parquet spool holds, per sink. Its reader is loaded only when there is a
    spool: `checkpoint show` otherwise starts without the sinks."""
    if not settings.spool_dir.is_dir():
        return []
    from forwarder.sinks.spool import spool_status

    return spool_status(settings.spool_dir)


def _span_text(span: LiveSpan | None) -> str | None:
    """A live sweep stopped part way (see `LiveSpan`), in words."""
    if span is None:
        return None
    return (
        f"catch-up to {format_when(span.end)} in progress, delivered down to "
        f"{format_when(span.done_from)}"
    )


def parse_watermark(when: str) -> int:
    """`checkpoint set WHEN`: unix seconds, refused (exit 2) when not a time or out of range."""
    try:
        watermark = parse_when(when)
    except ValueError as exc:
        raise ConfigError(f"invalid setting WHEN: {exc}") from None
    problem = out_of_range(watermark)
    if problem:
        raise ConfigError(f"invalid setting WHEN: {problem}")
    return watermark


def _require_stream(state: State, stream: str, settings: Settings) -> None:
    """`ConfigError` (exit 2) unless the state holds something of `stream`: a watermark, a
    sweep in progress, remembered ids, a backfill or a refused tenant listing."""
    if (
        any(name == stream for name, _, _ in state.streams())
        or state.live_span(stream) is not None
        or state.count_delivered(live_scope(stream))
        or any(job[1] == stream for job in state.jobs())
        or any(name == stream for name, _, _ in state.tenant_refusals())
    ):
        return
    known = sorted({name for name, _, _ in state.streams()})
    raise ConfigError(
        f"invalid setting stream: no such stream {stream!r} in {settings.state_path} "
        f"(streams there: {', '.join(known) or 'none'})"
    )


def forget_stream(settings: Settings) -> str:
    """`checkpoint reset`: remove the stream's watermark and remembered ids (its next run
    starts at --start-at); `ConfigError` when the state holds no such stream."""
    if not settings.state_path.exists():
        raise ConfigError(
            f"invalid setting stream: no such stream {settings.stream!r}: no state at "
            f"{settings.state_path}"
        )
    return change_watermark(settings, None, must_exist=True)


def change_watermark(settings: Settings, watermark: int | None, must_exist: bool = False) -> str:
    """Move the stream's watermark (None: remove it, the next run starts at --start-at), with
    its remembered ids forgotten, under the stream's lock. Returns the stream's name.
    `must_exist`: `ConfigError` when the state holds no such stream."""
    stream = settings.stream
    lock = StreamLock(settings.state_path, f"stream {stream}")
    lock.acquire("checkpoint")
    try:
        state = State(settings.state_path)
        try:
            if must_exist:
                _require_stream(state, stream, settings)
            state.set_watermark(stream, watermark)
        finally:
            state.close()
    finally:
        lock.release()
    return stream
