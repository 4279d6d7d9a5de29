"""The Sigma detections shipped in `detections/`: loads them, describes each (level, event types,
fields), and converts them with the official pySigma backends for one SIEM and schema, leaving
out, with the reason, what a backend cannot express. Needs the `detections` extra."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from forwarder.errors import ForwarderError
from mappings.sigma import BY_NAME, SCHEMAS, is_flattened, pipeline

TARGETS = ("sigma", "splunk", "esql", "eql", "kusto")
#: The correlation types each backend converts into a query that means what the rule means.
#: Splunk and ES|QL count in fixed time buckets (`bin`, `date_trunc`); EQL's `sequence ... with
#: runs=N` slides; pySigma's EQL value_count is `by field` (the same value), not distinct values.
CORRELATIONS: dict[str, frozenset[str]] = {
    "sigma": frozenset({"event_count", "value_count", "temporal", "temporal_ordered"}),
    "splunk": frozenset({"event_count", "value_count"}),
    "esql": frozenset({"event_count", "value_count"}),
    "eql": frozenset({"event_count", "temporal_ordered"}),
    "kusto": frozenset(),
}


class DetectionsUnavailable(ForwarderError):
    """pySigma or a backend is not installed."""


def _require() -> None:
    try:
        import sigma.backends.sqlite  # noqa: F401
    except ImportError as e:
        raise DetectionsUnavailable(
            "detections need the pySigma backends: pip install 'openai-audit-forwarder[detections]'"
        ) from e


def rules_dir() -> Path:
    """Where the rule files are (installed as package data of `detections`)."""
    return Path(str(resources.files("detections")))


def rule_files() -> list[Path]:
    return sorted(rules_dir().glob("*.yml"))


def load_rules(paths: list[Path] | None = None) -> Any:  # -> SigmaCollection
    """The rules as one collection, every rule after the rules it references (the order the
    backends need: a correlation is converted from its rules' conversions)."""
    _require()
    from sigma.collection import SigmaCollection

    loaded = SigmaCollection.load_ruleset([str(p) for p in (paths or rule_files())])
    ordered = sorted(loaded.rules, key=lambda r: (_depth(r), r.title))
    return SigmaCollection(ordered, resolve_references=False)


def _is_correlation(rule: Any) -> bool:
    return hasattr(rule, "rules") and hasattr(rule, "group_by")


def _depth(rule: Any) -> int:
    if not _is_correlation(rule):
        return 0
    return 1 + max(_depth(ref.rule) for ref in rule.rules)


@dataclass(frozen=True)
class RuleInfo:
    """What `detections list` and the docs say about a rule."""

    id: str
    name: str
    title: str
    level: str
    kind: str  # "event" or the correlation type
    event_types: tuple[str, ...]
    fields: tuple[str, ...]
    alerting: bool  # False for rules only counted by correlations, and informational ones
    tags: tuple[str, ...] = field(default=())


def _event_rules(rule: Any) -> Iterator[Any]:
    if _is_correlation(rule):
        for ref in rule.rules:
            yield from _event_rules(ref.rule)
    else:
        yield rule


def _detection_items(detection: Any) -> Iterator[Any]:
    for item in detection.detection_items:
        if hasattr(item, "detection_items"):
            yield from _detection_items(item)
        else:
            yield item


def rule_fields(rule: Any) -> set[str]:
    """Every field a rule reads, correlations included (group-by and counted fields)."""
    fields: set[str] = set()
    if _is_correlation(rule):
        fields.update(rule.group_by or [])
        fieldref = getattr(rule.condition, "fieldref", None)
        if fieldref:
            fields.add(fieldref)
        for ref in rule.rules:
            fields |= rule_fields(ref.rule)
        return fields
    for detection in rule.detection.detections.values():
        fields.update(i.field for i in _detection_items(detection) if i.field)
    return fields


def rule_event_types(rule: Any) -> set[str]:
    """The event types a rule can match (the values it requires of `type`)."""
    types: set[str] = set()
    for event_rule in _event_rules(rule):
        for detection in event_rule.detection.detections.values():
            for item in _detection_items(detection):
                if item.field == "type":
                    types.update(str(v) for v in item.value)
    return types


def describe(collection: Any | None = None) -> list[RuleInfo]:
    """Every rule, alerting ones first, in title order."""
    collection = collection if collection is not None else load_rules()
    infos = []
    for rule in collection:
        infos.append(
            RuleInfo(
                id=str(rule.id),
                name=rule.name or "",
                title=rule.title,
                level=rule.level.name.lower() if rule.level else "",
                kind=rule.type.name.lower() if _is_correlation(rule) else "event",
                event_types=tuple(sorted(rule_event_types(rule))),
                fields=tuple(sorted(rule_fields(rule))),
                alerting=is_alerting(rule),
                tags=tuple(f"{t.namespace}.{t.name}" for t in rule.tags),
            )
        )
    return sorted(infos, key=lambda i: (not i.alerting, i.title))


def is_alerting(rule: Any) -> bool:
    """Whether a rule is exported as an alert: Sigma outputs it (it is not only counted by a
    correlation) and its level is not informational, which Sigma reserves for rules that tag
    events and must never open a case."""
    return rule._output and not (rule.level and rule.level.name == "INFORMATIONAL")


def unsupported(rule: Any, target: str, schema: str) -> str | None:
    """Why `target` cannot express `rule` over `schema` documents (None when it can)."""
    if _is_correlation(rule):
        kind = rule.type.name.lower()
        if kind not in CORRELATIONS[target]:
            return f"{target} backend has no {kind} correlation"
        if target != "sigma" and any(_is_correlation(r.rule) for r in rule.rules):
            return "correlates a correlation: the backend would embed it as a plain search"
    fields = sorted(rule_fields(rule))
    if target == "esql":
        for name in fields:
            spec = BY_NAME[name]
            if spec.multi:
                return f"{name} has several values: ES|QL compares multi-valued fields as null"
            if any(is_flattened(schema, p) for p in spec.paths(schema)):
                return f"{name} is in a flattened field, which ES|QL cannot read"
    if target == "kusto":
        for name in fields:
            if BY_NAME[name].multi:
                return f"{name} has several values: KQL compares a dynamic array as JSON text"
    return None


@dataclass
class Conversion:
    """One target's and schema's conversion of the alerting rules."""

    target: str
    schema: str
    queries: list[tuple[Any, Any]]  # (rule, the backend's output for it)
    skipped: list[tuple[Any, str]]  # (rule, why)


def _backend(target: str, schema: str, **options: Any) -> Any:
    _require()
    if target == "splunk":
        from sigma.backends.splunk import SplunkBackend as backend
    elif target == "esql":
        from sigma.backends.elasticsearch import ESQLBackend as backend
    elif target == "eql":
        from sigma.backends.elasticsearch import EqlBackend as backend
    elif target == "kusto":
        from sigma.backends.kusto import KustoBackend as backend
    elif target == "sqlite":
        from sigma.backends.sqlite import sqliteBackend as backend
    else:
        raise ValueError(f"no backend for {target!r}")
    return backend(pipeline(schema, target), **options)


def convert(
    target: str,
    schema: str,
    output_format: str = "default",
    paths: list[Path] | None = None,
    **options: Any,
) -> Conversion:
    """Converts every alerting rule (of `paths`, default all) for `target` over `schema`
    documents with the official pySigma backend (`options` go to the backend). Rules only
    counted by correlations are converted first, as the backends need, but not returned."""
    if target not in (*TARGETS, "sqlite") or target == "sigma":
        raise ValueError(f"unknown target {target!r}")
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}")
    backend = _backend(target, schema, **options)
    result = Conversion(target, schema, [], [])
    rules = list(load_rules(paths))
    # Decided before converting anything: conversion rewrites a rule's field names in place.
    reasons = [None if target == "sqlite" else unsupported(r, target, schema) for r in rules]
    for rule, reason in zip(rules, reasons, strict=True):
        if reason is not None:
            if is_alerting(rule):
                result.skipped.append((rule, reason))
            continue
        if _is_correlation(rule):
            output = backend.convert_correlation_rule(rule, output_format)
        else:
            output = backend.convert_rule(rule, output_format)
        if is_alerting(rule) or (target == "sqlite" and output):
            result.queries.append((rule, output[0] if len(output) == 1 else output))
    return result
