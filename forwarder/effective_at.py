"""The `effective_at` of events imported from files (`map`, `--input`): data exported from other
tools may carry it as a float, a numeric string or an ISO 8601 string. The API path stays
strict; only these two readers call `normalize`."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from mappings.registry import SUBSECOND_KEY

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = Decimal("0.000001")


def normalize(event: Any) -> bool:
    """Rewrites a float, numeric-string or ISO 8601 `effective_at` of `event` to integer unix
    seconds, keeping a fraction of a second (microseconds) under SUBSECOND_KEY. Returns True
    when it changed the event; anything else (an integer already, absent, unusable) is left
    for the usual check to name."""
    if type(event) is not dict:
        return False
    value = event.get("effective_at")
    if type(value) is int:
        return False
    parsed = parse(value)
    if parsed is None:
        return False
    seconds, micros = parsed
    event["effective_at"] = seconds
    if micros:
        event[SUBSECOND_KEY] = micros
    else:
        event.pop(SUBSECOND_KEY, None)
    return True


def parse(value: Any) -> tuple[int, int] | None:
    """(seconds, microseconds) of a float, numeric string or ISO 8601 string, else None."""
    if type(value) is float:
        if not math.isfinite(value):
            return None
        return _from_decimal(Decimal(repr(value)))  # the shortest repr: 0.1 stays 0.1
    if type(value) is not str:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if _NUMBER.fullmatch(text):
        try:
            return _from_decimal(Decimal(text))
        except InvalidOperation:
            return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # UTC when no zone, as for --start-at
    delta = when - _EPOCH
    return delta.days * 86_400 + delta.seconds, delta.microseconds


def _from_decimal(number: Decimal) -> tuple[int, int] | None:
    if not number.is_finite() or abs(number) > 10**12:
        return None
    micros = number.quantize(_MICRO, rounding=ROUND_FLOOR)
    seconds = int(micros.to_integral_value(rounding=ROUND_FLOOR))
    return seconds, int((micros - seconds) * 1_000_000)
