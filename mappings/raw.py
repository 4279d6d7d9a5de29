"""The `raw` schema: the event exactly as the API returned it."""

from __future__ import annotations

from typing import Any

from mappings.registry import MapFunction, MappingContext


def make_mapper(context: MappingContext) -> MapFunction:
    def map_raw(event: dict[str, Any]) -> dict[str, Any]:
        return event

    return map_raw
