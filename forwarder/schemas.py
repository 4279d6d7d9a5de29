"""Turns the schema names of the settings into map functions (built-in or registered)."""

from __future__ import annotations

from forwarder.config import Settings
from forwarder.errors import ConfigError
from mappings.registry import MapFunction, MappingContext, UnknownMapperError, load_mapper


def build_mappers(settings: Settings, schemas: set[str]) -> dict[str, MapFunction]:
    context = MappingContext(organization_id=settings.org_id)
    mappers = {}
    for schema in sorted(schemas):
        try:
            mappers[schema] = load_mapper(schema, context)
        except UnknownMapperError as exc:
            raise ConfigError(f"invalid setting schema: {exc}") from None
    return mappers
