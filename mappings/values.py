"""Value checks shared by the schema mappers: the event header, timestamps, IPs, geo and AS
numbers as the API sends them (strings), each turned into a typed value or rejected."""

from __future__ import annotations

import ipaddress
import re
import time
from functools import lru_cache
from typing import Any

import orjson

from mappings.registry import SUBSECOND_KEY, MappingError

MAX_EFFECTIVE_AT = 253_402_300_799  # 9999-12-31T23:59:59Z, the largest ISO 8601 date-time
# OCSF email_t, matched as a whole (stricter than the schema's anchored search).
_EMAIL = re.compile(r"[a-zA-Z0-9!#$%&'*+\-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9\-.]+")


def header(event: Any) -> tuple[str, str, int]:
    """(id, type, effective_at) of an event, or MappingError when any is unusable."""
    if type(event) is not dict:
        raise MappingError(f"event is a {type(event).__name__}, not an object")
    event_id = event.get("id")
    if type(event_id) is not str or not event_id:
        raise MappingError("event has no id (a non-empty string)")
    event_type = event.get("type")
    if type(event_type) is not str:
        raise MappingError("event has no type (a string)", event_id)
    ts = event.get("effective_at")
    if type(ts) is not int:
        raise MappingError("event has no effective_at (integer unix seconds)", event_id)
    if not 0 <= ts <= MAX_EFFECTIVE_AT:
        raise MappingError(f"effective_at {ts} is out of range", event_id)
    return event_id, event_type, ts


_DAYS: dict[int, str] = {}
_MINUTES = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
SECONDS = tuple(f"{s:02d}Z" for s in range(60))
# "2024-07-12T17:08:" per minute since the epoch: events cluster in time, so most hits cost
# one integer division and one dict lookup. Bounded; emptied when full.
MINUTE_PREFIXES: dict[int, str] = {}


def minute_prefix(minute: int) -> str:
    day, rest = divmod(minute, 1440)
    prefix = _DAYS.get(day)
    if prefix is None:
        prefix = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        if len(_DAYS) < 100_000:
            _DAYS[day] = prefix
    prefix += _MINUTES[rest]
    if len(MINUTE_PREFIXES) >= 50_000:
        MINUTE_PREFIXES.clear()
    MINUTE_PREFIXES[minute] = prefix
    return prefix


def iso_time(ts: int) -> str:
    """Unix seconds (0 .. MAX_EFFECTIVE_AT) as an ISO 8601 UTC date-time, `2024-07-12T17:08:10Z`."""
    minute = ts // 60
    prefix = MINUTE_PREFIXES.get(minute) or minute_prefix(minute)
    return prefix + SECONDS[ts % 60]


def subsecond(event: dict[str, Any]) -> int:
    """The microseconds an imported event carries beside its integer effective_at (0: none)."""
    us = event.get(SUBSECOND_KEY)
    return us if type(us) is int and 0 < us < 1_000_000 else 0


def with_fraction(iso: str, us: int) -> str:
    """`2024-07-12T17:08:10Z` with `us` microseconds: `.250Z` (milliseconds when exact)."""
    fraction = f"{us // 1000:03d}" if us % 1000 == 0 else f"{us:06d}"
    return f"{iso[:-1]}.{fraction}Z"


def original_json(event: dict[str, Any]) -> str:
    """The source event as a compact JSON string (without the private sub-second key)."""
    if SUBSECOND_KEY in event:
        event = {k: v for k, v in event.items() if k != SUBSECOND_KEY}
    return orjson.dumps(event).decode()


@lru_cache(maxsize=8192)
def valid_ip(value: str) -> bool:
    """True for a plain IPv4 or IPv6 address (no zone id) that ECS `ip` and OCSF `ip_t` accept."""
    if len(value) > 39 or "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def valid_email(value: str) -> bool:
    return _EMAIL.fullmatch(value) is not None


def coordinate(value: Any, limit: float) -> float | None:
    """A latitude (limit 90) or longitude (limit 180) from a decimal string or number."""
    if type(value) is str:
        if len(value) > 32:
            return None
        try:
            f = float(value)
        except ValueError:
            return None
    elif type(value) is float or type(value) is int:
        f = float(value)
    else:
        return None
    return f if -limit <= f <= limit else None


def as_number(value: Any) -> int | None:
    """An autonomous system number (0 .. 2**32-1) from a digit string or integer."""
    if type(value) is str:
        if not (0 < len(value) <= 10 and value.isascii() and value.isdigit()):
            return None
        n = int(value)
    elif type(value) is int:
        n = value
    else:
        return None
    return n if 0 <= n <= 4_294_967_295 else None


def str_list(value: Any) -> list[str] | None:
    """A non-empty list of strings (a single string counts as a list of one), else None."""
    if type(value) is str:
        return [value]
    if type(value) is list and value and all(type(v) is str for v in value):
        return value
    return None
