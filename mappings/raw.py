"""The `raw` schema: the event exactly as the API returned it, once its header (id, type,
effective_at) is usable, like every other schema."""

from __future__ import annotations

from typing import Any

from mappings.registry import SUBSECOND_KEY, MapFunction, MappingContext
from mappings.values import header


def make_mapper(context: MappingContext) -> MapFunction:
    def map_raw(event: dict[str, Any]) -> dict[str, Any]:
        header(event)
        if SUBSECOND_KEY in event:  # an imported event's fraction of a second stays private
            return {k: v for k, v in event.items() if k != SUBSECOND_KEY}
        return event

    return map_raw
