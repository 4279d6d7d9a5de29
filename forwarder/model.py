"""The audit-log object as a pydantic v2 model, for validation and typed access outside the
hot path (the collector and mappers work on plain dicts). Unknown event types and extra
fields are kept: the API adds event types often, and an event is never dropped for it."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from forwarder.timeparse import out_of_range

# Deepest nesting of objects and arrays an event may have. Real events nest about 5 deep;
# orjson cannot encode more than 254 levels, and the mapped documents add a few.
MAX_NESTING = 128
# orjson parses at most 1024 levels; deeper JSON (a hostile event in a page) is parsed by the
# standard library, which recurses in Python, under a raised recursion limit, up to this.
PARSE_MAX_NESTING = 5000
_RECURSION = threading.Lock()


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ActorUser(_Open):
    id: str | None = None
    email: str | None = None


class IpAddressDetails(_Open):
    country: str | None = None
    city: str | None = None
    region: str | None = None
    region_code: str | None = None
    asn: str | None = None
    latitude: str | None = None
    longitude: str | None = None


class ActorSession(_Open):
    user: ActorUser | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    ja3: str | None = None
    ja4: str | None = None
    ip_address_details: IpAddressDetails | None = None


class ActorServiceAccount(_Open):
    id: str | None = None


class ActorApiKey(_Open):
    id: str | None = None
    type: Literal["user", "service_account"] | str | None = None
    user: ActorUser | None = None
    service_account: ActorServiceAccount | None = None


class Actor(_Open):
    type: Literal["session", "api_key"] | str | None = None
    session: ActorSession | None = None
    api_key: ActorApiKey | None = None


class Project(_Open):
    id: str | None = None
    name: str | None = None


class AuditLog(_Open):
    """One audit-log event. The payload lives under the key named by `type`."""

    id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    effective_at: StrictInt
    project: Project | None = None
    actor: Actor | None = None

    @model_validator(mode="after")
    def _payload_is_an_object(self) -> AuditLog:
        payload = (self.model_extra or {}).get(self.type)
        if payload is not None and not isinstance(payload, dict):
            raise ValueError(f"payload {self.type!r} must be an object")
        return self

    @property
    def payload(self) -> dict[str, Any] | None:
        """The details for this event's type (`event[event.type]`)."""
        return (self.model_extra or {}).get(self.type)


def minimal_problem(event: Any) -> str | None:
    """Why `event` cannot be collected (no usable id, type or effective_at), or None.

    The cheap check the collector runs per event; `AuditLog` gives the full picture."""
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


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Do objects and arrays nest more than `limit` levels in `value`? (No recursion: the
    value may be nested deeper than Python's recursion limit.)"""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, depth + 1))
    return False


def loads_deep(data: bytes) -> Any:
    """Parse JSON that orjson refuses as nested deeper than 1024 levels, so that the one deep
    event reaches the intake (and the dead letters) instead of failing its whole page.
    ValueError if it is not JSON or nests deeper than about `PARSE_MAX_NESTING` levels."""
    with deep_recursion():
        try:
            return json.loads(data)
        except RecursionError:
            raise ValueError(f"nested deeper than {PARSE_MAX_NESTING} levels") from None


@contextmanager
def deep_recursion() -> Iterator[None]:
    """A recursion limit for the standard library's JSON decoder to reach about
    `PARSE_MAX_NESTING` levels (one thread at a time: the limit is the interpreter's)."""
    with _RECURSION:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 3 * PARSE_MAX_NESTING))
        try:
            yield
        finally:
            sys.setrecursionlimit(limit)
