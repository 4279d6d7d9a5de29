"""Parsing of the CLI's `WHEN` values (ISO 8601, unix seconds, or a span ago) and durations."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | float | int) -> float:
    """`30s`, `10m`, `1h`, `7d`, `1w`, `250ms` or plain seconds -> seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("must not be negative")
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 10m, 1h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


# 1970-01-01 .. 9999-12-31: outside, a time cannot be printed or compared with the API's.
LATEST = 253_402_300_799


def parse_when(text: str | int, now: float | None = None) -> int:
    """An ISO 8601 date or date-time (UTC when no zone), unix seconds, or a span ago
    (`24h`, `7d`) -> unix seconds, between 1970 and 9999."""
    when = _parse_when(text, now)
    if not 0 <= when <= LATEST:
        raise ValueError(f"{text!r} is not a time between 1970 and 9999")
    return when


def _parse_when(text: str | int, now: float | None = None) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    value = str(text).strip()
    if re.fullmatch(r"\d{9,}", value):
        return int(value)
    if _DURATION.match(value) and value[-1:].isalpha():
        return int((time.time() if now is None else now) - parse_duration(value))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time (ISO 8601 like 2026-01-31T12:00:00Z, unix seconds, "
            "or a span ago like 24h or 7d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def format_when(ts: int | None) -> str:
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # e.g. a watermark an older version stored
        return "not a date"


# The sane range of an event time and a watermark: the audit log starts after 2020, and the
# API's clock is at most a little ahead of ours. Anything outside is an invalid value.
EARLIEST_EFFECTIVE_AT = 1_577_836_800  # 2020-01-01T00:00:00Z
MAX_AHEAD = 86_400


def out_of_range(ts: int, now: float | None = None) -> str | None:
    """Why the unix time `ts` is outside 2020-01-01 .. now + 1 day, or None."""
    latest = int(time.time() if now is None else now) + MAX_AHEAD
    if EARLIEST_EFFECTIVE_AT <= ts <= latest:
        return None
    when = format_when(ts)
    date = "" if when == "not a date" else f" ({when})"
    return f"{ts}{date} is outside {format_when(EARLIEST_EFFECTIVE_AT)} .. now + 1 day"
