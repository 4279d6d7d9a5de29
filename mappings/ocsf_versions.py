"""OCSF versions: renders the OCSF 1.8.0 documents of `mappings/ocsf/` in an older version,
driven by that version's official schema (the `ocsf-json-schema` package embeds every one).

The rules, applied to every attribute of the document, recursively:
- an attribute the target class (or object) does not have moves to `unmapped`, whole, under
  its dotted path (`unmapped["actor.user.programmatic_credentials"]`, array items as
  `resources[0].foo`): nothing is lost, and nothing the version does not define stays;
- an attribute the target has only under a profile (e.g. `actor` of Entity Management is part
  of the `host` profile up to 1.4) stays, and the profile is added to `metadata.profiles`;
- an enum id the target does not define (e.g. `user.type_id` 4, Service, is new in 1.5)
  becomes 99 (Other) where the enum has it, else 0 (Unknown); its caption sibling (`type`,
  `activity_name`) keeps the name, and the original id moves to `unmapped`. A changed
  `activity_id` re-derives `type_uid` and `type_name` from the target class;
- `metadata.version` names the target.

Nothing here knows an attribute by name except `metadata` and the derived type fields: a new
version, or a new attribute in the mapping, needs no change here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from mappings.registry import MappingError

NATIVE_VERSION = "1.8.0"  # what mappings/ocsf/ renders
# Versions documents can be rendered in (and are tested against): 1.0.0 and its release
# candidates predate the shape of today's IAM classes.
SUPPORTED_VERSIONS = ("1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0", "1.8.0")

_OTHER, _UNKNOWN = "99", "0"


class ClassConstraintError(MappingError):
    """The document lacks what the target version's class requires of every event (its
    `constraints`, e.g. Group Management up to 1.3 needs `user` or `privileges`): the mapper
    renders the event in its fallback class instead."""


def check_version(version: str) -> str:
    """`version` if documents can be rendered in it; ValueError naming the choices."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"OCSF version {version!r} is not supported (one of {', '.join(SUPPORTED_VERSIONS)})"
        )
    return version


@cache
def official_schema(version: str) -> dict[str, Any]:
    """The official OCSF schema export of `version` (classes, objects, attributes, enums)."""
    from ocsf_json_schema import get_ocsf_schema

    return get_ocsf_schema(check_version(version))


def attribute_profiles(attribute: dict[str, Any]) -> tuple[str, ...]:
    """The profiles an attribute belongs to (empty: always part of its class or object). The
    exports up to 1.7 name one `profile`, 1.8 a list of `profiles`."""
    profiles = attribute.get("profiles")
    if profiles:
        return tuple(profiles)
    profile = attribute.get("profile")
    return (profile,) if profile else ()


def classes_by_uid(version: str) -> dict[int, dict[str, Any]]:
    return {cls["uid"]: cls for cls in official_schema(version)["classes"].values()}


class _Walk:
    """The state of one document's conversion: what moved to `unmapped`, which profiles the
    kept attributes need."""

    __slots__ = ("moved", "objects", "profiles")

    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects
        self.moved: dict[str, Any] = {}
        self.profiles: set[str] = set()

    def object(self, value: dict[str, Any], attributes: dict[str, Any], path: str) -> dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            spec = attributes.get(key)
            where = path + key
            if spec is None:
                self.moved[where] = item
                continue
            profiles = attribute_profiles(spec)
            if profiles:
                self.profiles.add(profiles[0])
            if spec["type"] == "object_t":
                out[key] = self.nested(item, spec, where)
                continue
            enum = spec.get("enum")
            if enum is not None and type(item) is int and str(item) not in enum:
                self.moved[where] = item
                item = int(_OTHER if _OTHER in enum else _UNKNOWN)
            out[key] = item
        return out

    def nested(self, item: Any, spec: dict[str, Any], where: str) -> Any:
        attributes = self.objects[spec["object_type"]].get("attributes")
        if not attributes:  # the generic `object` (unmapped, ...): anything goes
            return item
        if spec.get("is_array"):
            if type(item) is not list:
                return item
            return [
                self.object(element, attributes, f"{where}[{i}].")
                if type(element) is dict
                else element
                for i, element in enumerate(item)
            ]
        return self.object(item, attributes, where + ".") if type(item) is dict else item


class Downconverter:
    """Renders native (1.8.0) documents in `version`; see the module docstring."""

    def __init__(self, version: str) -> None:
        schema = official_schema(version)
        self.version = version
        self.objects: dict[str, Any] = schema["objects"]
        self.classes = classes_by_uid(version)

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        class_uid = doc.get("class_uid")
        cls = self.classes.get(class_uid)  # type: ignore[arg-type]
        if cls is None:
            event_id = (doc.get("metadata") or {}).get("original_event_uid")
            raise MappingError(f"OCSF {self.version} has no class {class_uid!r}", event_id)
        attributes = cls["attributes"]
        walk = _Walk(self.objects)
        out = walk.object(doc, attributes, "")
        if out.get("activity_id") != doc.get("activity_id"):
            type_uid = class_uid * 100 + out["activity_id"]
            out["type_uid"] = type_uid
            caption = attributes["type_uid"].get("enum", {}).get(str(type_uid), {}).get("caption")
            if caption is not None:
                out["type_name"] = caption
            walk.moved.pop("type_uid", None)  # derived: the moved activity_id says it all
        metadata = out.get("metadata")
        if type(metadata) is dict:
            metadata["version"] = self.version
            if walk.profiles:
                have = metadata.get("profiles")
                metadata["profiles"] = sorted(
                    walk.profiles | set(have if type(have) is list else ())
                )
        unmet = _unmet_constraint(cls, out)
        if unmet is not None:
            event_id = (doc.get("metadata") or {}).get("original_event_uid")
            raise ClassConstraintError(f"OCSF {self.version} {cls['name']}: {unmet}", event_id)
        if walk.moved:
            unmapped = out.get("unmapped")
            merged = dict(unmapped) if type(unmapped) is dict else {}
            for path, value in walk.moved.items():
                merged[path if path not in merged else f"ocsf.{path}"] = value
            out["unmapped"] = merged
        return out


def _unmet_constraint(cls: dict[str, Any], doc: dict[str, Any]) -> str | None:
    """What the class's constraints (`at_least_one`, `just_one`) find missing, or None."""
    constraints = cls.get("constraints") or {}
    names = constraints.get("at_least_one")
    if names and not any(name in doc for name in names):
        return f"needs at least one of {', '.join(names)}"
    names = constraints.get("just_one")
    if names and sum(name in doc for name in names) != 1:
        return f"needs exactly one of {', '.join(names)}"
    return None


def renderer(version: str | None) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The conversion to `version`, or None when documents are rendered natively."""
    if version is None or version == NATIVE_VERSION:
        return None
    return Downconverter(version)
