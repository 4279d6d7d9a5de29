"""What the `checkpoint` commands show and change: every stream's watermark, the backfill
jobs, the sinks' committed positions and refused tenant listings, as plain data (one report for
text and JSON alike); and a stream's watermark moved or removed under the stream's lock."""

from __future__ import annotations

from typing import Any

from forwarder.config import Settings
from forwarder.errors import ConfigError, ForwarderError
from forwarder.state import LiveSpan, State, StreamLock, live_scope, watermark_problem
from forwarder.timeparse import format_when, out_of_range, parse_when


def checkpoint_report(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """`streams`, `backfills`, `sinks`, `tenant_refused` and `spools` (the S3 Parquet spool), times
    as ISO 8601."""
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
        sinks = [{"sink": sink, "position": pos} for sink, pos in state.sink_positions()]
        refusals = [
            {"stream": stream, "refused_at": format_when(int(at)), "message": message}
            for stream, at, message in state.tenant_refusals()
        ]
    finally:
        state.close()
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


def change_watermark(settings: Settings, watermark: int | None) -> str:
    """Move the stream's watermark (None: remove it, the next run starts at --start-at), with
    its remembered ids forgotten, under the stream's lock. Returns the stream's name."""
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
