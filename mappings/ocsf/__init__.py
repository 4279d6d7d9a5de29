"""The `ocsf` schema: renders catalog entries into OCSF 1.8.0 Identity & Access Management
events (Account Change, Authentication, Entity Management, User Access, Group Management).
Source fields OCSF has no attribute for go under `unmapped`.

`make_mapper` is the per-event path; what an event type means is planned once (`plan`, over
`classes`), and each distinct actor is rendered once (`actor`)."""

from __future__ import annotations

from typing import Any

from mappings.caches import by_json, plan_cache
from mappings.ocsf.actor import render_actor
from mappings.ocsf.classes import ENTITY_MANAGEMENT
from mappings.ocsf.plan import Plan, entity_and_result, target_id
from mappings.ocsf_versions import NATIVE_VERSION, ClassConstraintError, renderer
from mappings.registry import SUBSECOND_KEY, MapFunction, MappingContext, MappingError
from mappings.values import header, original_json, subsecond

OCSF_VERSION = NATIVE_VERSION
PRODUCT = {"name": "OpenAI Platform", "vendor_name": "OpenAI"}

_KNOWN_TOP = frozenset({"id", "type", "effective_at", "actor", "project", SUBSECOND_KEY})


def _status(out: dict[str, Any], payload: dict[str, Any]) -> None:
    """The error code and message of a failed action's payload."""
    code = payload.get("error_code")
    if type(code) is str:
        out["status_code"] = code
    detail = payload.get("error_message")
    if type(detail) is str:
        out["status_detail"] = detail


def _render_actor(actor: Any, event_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(attributes the actor fills, its leftovers for `unmapped`)."""
    parts: dict[str, Any] = {}
    rest = render_actor(actor, parts, event_id)
    return parts, rest


def make_mapper(context: MappingContext) -> MapFunction:
    org = context.organization_id
    original = context.original
    plans, plan_for = plan_cache(Plan)
    actor_parts = by_json(_render_actor)

    def map_ocsf(event: dict[str, Any], fallback: bool = False) -> dict[str, Any]:
        event_id, event_type, ts = header(event)
        plan = plans.get(event_type) or plan_for(event_type)
        metadata: dict[str, Any] = {
            "version": OCSF_VERSION,
            "product": PRODUCT,
            "original_event_uid": event_id,
            "event_code": event_type,
        }
        if org is not None:
            metadata["tenant_uid"] = org
        doc: dict[str, Any] = {"time": ts * 1000, "metadata": metadata}
        unmapped: dict[str, Any] = {}
        obj = event.get("object")  # "organization.audit_log" on every real event
        if type(obj) is str:
            metadata["log_name"] = obj
        actor = event.get("actor")
        if actor is not None:
            parts, rest = actor_parts(actor, event_id)
            if parts:
                doc.update(parts)
            if rest:
                unmapped["actor"] = rest
        project = event.get("project")
        if project is not None:
            if type(project) is not dict:
                raise MappingError("project is neither an object nor null", event_id)
            unmapped["project"] = project
        payload = event.get(event_type) if event_type not in _KNOWN_TOP else None
        if payload is not None:
            if type(payload) is not dict:
                raise MappingError(f"payload {event_type!r} is not an object", event_id)
            unmapped["payload"] = payload
        if SUBSECOND_KEY in event:
            doc["time"] += subsecond(event) // 1000
        # Top-level fields besides the known ones (and a non-string `object`) are kept verbatim;
        # counting the known ones first spares the common event a scan of its keys.
        known = (
            3
            + (type(obj) is str)
            + ("actor" in event)
            + ("project" in event)
            + (SUBSECOND_KEY in event)
            + (event_type in event and event_type not in _KNOWN_TOP)
        )
        if len(event) > known:
            unmapped["extra"] = {
                k: v
                for k, v in event.items()
                if k not in _KNOWN_TOP
                and k != event_type
                and (k != "object" or type(obj) is not str)
            }

        if fallback:
            head, tid = plan.fallback, target_id(plan, payload)
        else:
            head, tid = plan.render(plan, doc, payload)
        if head["class_uid"] == ENTITY_MANAGEMENT:
            entity, result = entity_and_result(plan, payload, tid)
            doc["entity"] = entity
            if result is not None:
                doc["entity_result"] = result
        out = {**head, **doc}
        if plan.failure and payload is not None:
            _status(out, payload)
        if unmapped:
            out["unmapped"] = unmapped
        if original:
            out["raw_data"] = original_json(event)
        return out

    convert = renderer(context.ocsf_version)
    if convert is None:
        return map_ocsf

    def map_ocsf_version(event: dict[str, Any]) -> dict[str, Any]:
        try:
            return convert(map_ocsf(event))
        except ClassConstraintError:
            # The version's class asks for more than the event has (as mapping into the
            # preferred class does when a payload lacks the target's id): Entity Management.
            return convert(map_ocsf(event, fallback=True))

    return map_ocsf_version
