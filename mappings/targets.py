"""Reads the target of an event out of its payload, with the catalog's paths compiled once into
small getters so that the per-event work is a few dict lookups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mappings.catalog import Path, Target

Getter = Callable[[dict[str, Any]], Any]


def compile_paths(paths: tuple[Path, ...], want: type | None = str) -> Getter | None:
    """A getter returning the first value at one of `paths` that has type `want` (any non-null
    value when None), or None; None itself when there are no paths. The getter is generated as
    straight-line code: it runs once per event and field, so every call saved counts."""
    if not paths:
        return None
    if any(not 1 <= len(p) <= 2 for p in paths):
        raise ValueError(f"payload paths are one or two keys deep: {paths}")
    # Most alternatives are absent: the cheap None test comes first.
    check = "v is not None" if want is None else "v is not None and type(v) is want"
    lines = ["def get(p):"]
    parents: dict[str, str] = {}  # each first-level key is looked up once, when first needed
    for path in paths:
        if len(path) == 1:
            lines += [f"    v = p.get({path[0]!r})", f"    if {check}:", "        return v"]
            continue
        parent = parents.get(path[0])
        if parent is None:
            parent = parents[path[0]] = f"d{len(parents)}"
            lines.append(f"    {parent} = p.get({path[0]!r})")
            lines.append(f"    {parent} = {parent} if type({parent}) is dict else None")
        lines += [
            f"    if {parent} is not None:",
            f"        v = {parent}.get({path[1]!r})",
            f"        if {check}:",
            "            return v",
        ]
    lines.append("    return None")
    namespace: dict[str, Any] = {"want": want}
    exec("\n".join(lines), namespace)
    return namespace["get"]


class CompiledTarget:
    """The getters of one catalog Target. Each returns a value of the right type, or None."""

    __slots__ = (
        "details",
        "email",
        "id",
        "items",
        "kind",
        "member",
        "name",
        "principal_type",
        "privileges",
        "resource_id",
        "resource_type",
        "roles",
    )

    def __init__(self, target: Target) -> None:
        self.kind = target.kind
        self.id = compile_paths(target.id)
        self.name = compile_paths(target.name)
        self.email = compile_paths(target.email)
        self.roles = compile_paths(target.roles)
        self.privileges = compile_paths(target.privileges, want=None)
        self.items = target.items[0] if target.items else None
        self.principal_type = compile_paths(target.principal_type)
        self.member = compile_paths(target.member)
        self.resource_id = compile_paths(target.resource_id)
        self.resource_type = compile_paths(target.resource_type)
        self.details = tuple(
            (name, getter)
            for name, paths in target.details
            if (getter := compile_paths(paths, want=None)) is not None
        )

    def detail_values(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The target's `details` found in the payload, by name (None when none is)."""
        found = {}
        for name, get in self.details:
            value = get(payload)
            if value is not None:
                found[name] = value
        return found or None


def item_ids(payload: dict[str, Any], key: str) -> tuple[list[str], list[str]]:
    """(ids, names) of a list of {id, name} objects in the payload, strings only."""
    items = payload.get(key)
    ids: list[str] = []
    names: list[str] = []
    if type(items) is list:
        for item in items:
            if type(item) is dict:
                i = item.get("id")
                if type(i) is str:
                    ids.append(i)
                n = item.get("name")
                if type(n) is str:
                    names.append(n)
    return ids, names
