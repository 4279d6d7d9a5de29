"""What an audit-log event must have to enter the pipeline, checked once per event on the hot
path, on plain dicts: a usable id, type and `effective_at`, a time in a sane range, and a
nesting depth that the encoders can write. Unknown event types and extra fields pass: the API
adds event types often, and an event is never dropped for it. What fails goes to the dead
letters with the reason these functions give."""

from __future__ import annotations

from typing import Any

from forwarder.deepjson import nested_deeper_than
from forwarder.timeparse import out_of_range

# Deepest nesting of objects and arrays an event may have. Real events nest about 5 deep;
# orjson cannot encode more than 254 levels, and the mapped documents add a few.
MAX_NESTING = 128


def minimal_problem(event: Any) -> str | None:
    """Why `event` cannot be collected at all (no usable id, type or effective_at), or None:
    what an input file is checked for before anything is delivered."""
    if not isinstance(event, dict):
        return f"expected a JSON object, got {type(event).__name__}"
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        return "missing or invalid 'id' (a non-empty string)"
    if not isinstance(event.get("type"), str) or not event["type"]:
        return "missing or invalid 'type' (a non-empty string)"
    effective_at = event.get("effective_at")
    if not isinstance(effective_at, int) or isinstance(effective_at, bool):
        return "missing or invalid 'effective_at' (unix seconds)"
    return None


def intake_problem(event: Any, now: float) -> str | None:
    """Why `event` cannot enter the pipeline, or None: `minimal_problem`, an `effective_at`
    outside 2020-01-01 .. now + 1 day, or nesting deeper than `MAX_NESTING` levels."""
    problem = minimal_problem(event)
    if problem:
        return problem
    bad_time = out_of_range(event["effective_at"], now)
    if bad_time:
        return f"'effective_at' {bad_time}"
    if nested_deeper_than(event, MAX_NESTING):
        return f"nested deeper than {MAX_NESTING} levels"
    return None
