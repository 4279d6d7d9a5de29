"""Finds mappers by name: the built-in ones and any registered by other packages through the
entry-point group `openai_audit_forwarder.mappings`.

A mapper is made by a factory `make_mapper(context: MappingContext) -> MapFunction`; the
function takes one parsed audit-log event (a plain dict) and returns the document to send,
or raises `MappingError`. It must not raise anything else.

Events imported from files (`map`, `--input`) whose `effective_at` had a fraction of a second
carry it, in microseconds, under the private key `SUBSECOND_KEY`; `effective_at` itself is
always integer seconds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "openai_audit_forwarder.mappings"

MapFunction = Callable[[dict[str, Any]], dict[str, Any]]

# The fraction of a second of an imported effective_at (integer microseconds, 1..999999).
SUBSECOND_KEY = "_effective_at_us"

BUILTIN: dict[str, str] = {
    "raw": "mappings.raw:make_mapper",
    "ecs": "mappings.ecs:make_mapper",
    "ocsf": "mappings.ocsf:make_mapper",
}


class MappingError(Exception):
    """The event cannot be rendered in the schema; the collector dead-letters it."""

    def __init__(self, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


class UnknownMapperError(LookupError):
    """No mapper has that name."""


@dataclass(frozen=True)
class MappingContext:
    """What a mapper knows besides the event: stamped into every document."""

    organization_id: str | None = None
    # Also carry the source event as a JSON string (ECS event.original, OCSF raw_data).
    original: bool = False
    # The OCSF version to render (None: the mapper's own, 1.8.0); other mappers ignore it.
    ocsf_version: str | None = None


def available() -> list[str]:
    names = set(BUILTIN)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _load_factory(name: str) -> Callable[[MappingContext], MapFunction]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    target = BUILTIN.get(name)
    if target is None:
        raise UnknownMapperError(f"unknown schema {name!r} (available: {', '.join(available())})")
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def load_mapper(name: str, context: MappingContext | None = None) -> MapFunction:
    """The map function for schema `name`."""
    return _load_factory(name)(context or MappingContext())
