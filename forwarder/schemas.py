"""Turns the schema names of the settings into map functions (built-in or registered)."""

from __future__ import annotations

from dataclasses import replace

from forwarder.config import Settings
from forwarder.errors import ConfigError
from mappings.registry import MapFunction, MappingContext, UnknownMapperError, load_mapper

ORIGINAL_SUFFIX = "+original"
VERSION_SEPARATOR = "@"


def build_mappers(settings: Settings, schemas: set[str]) -> dict[str, MapFunction]:
    """A map function per name: a schema, `SCHEMA+original` for a sink with original=true,
    `ocsf@VERSION` for OCSF documents in another version than the global `ocsf_version`."""
    context = MappingContext(
        organization_id=settings.org_id,
        original=settings.original,
        ocsf_version=settings.ocsf_version,
    )
    mappers = {}
    for schema in sorted(schemas):
        name, original = schema.removesuffix(ORIGINAL_SUFFIX), schema.endswith(ORIGINAL_SUFFIX)
        name, _, version = name.partition(VERSION_SEPARATOR)
        this = replace(context, original=True) if original else context
        if version:
            this = replace(this, ocsf_version=version)
        try:
            mappers[schema] = load_mapper(name, this)
        except UnknownMapperError as exc:
            raise ConfigError(f"invalid setting schema: {exc}") from None
    return mappers
