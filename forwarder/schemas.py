"""Turns the schema names of the settings into map functions (built-in or registered)."""

from __future__ import annotations

from dataclasses import replace

from forwarder.config import Settings
from forwarder.errors import ConfigError
from mappings.registry import MapFunction, MappingContext, UnknownMapperError, load_mapper

ORIGINAL_SUFFIX = "+original"


def build_mappers(settings: Settings, schemas: set[str]) -> dict[str, MapFunction]:
    """A map function per name: a schema, or `SCHEMA+original` for a sink with original=true."""
    context = MappingContext(organization_id=settings.org_id, original=settings.original)
    mappers = {}
    for schema in sorted(schemas):
        name, original = schema.removesuffix(ORIGINAL_SUFFIX), schema.endswith(ORIGINAL_SUFFIX)
        try:
            mappers[schema] = load_mapper(
                name, replace(context, original=True) if original else context
            )
        except UnknownMapperError as exc:
            raise ConfigError(f"invalid setting schema: {exc}") from None
    return mappers
