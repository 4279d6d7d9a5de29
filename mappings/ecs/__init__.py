"""The `ecs` schema: renders catalog entries into Elastic Common Schema 9.x documents. Fields
ECS has no place for go under `openai.audit.*`, so no source value is lost.

`make_mapper` is the per-event path; what an event type means is planned once (`plan`), and
each distinct actor is rendered once (`actor`) into the head its documents start with."""

from __future__ import annotations

from typing import Any

from mappings.caches import by_json, plan_cache
from mappings.ecs.actor import render_actor
from mappings.ecs.plan import Plan
from mappings.registry import SUBSECOND_KEY, MapFunction, MappingContext, MappingError
from mappings.values import (
    MINUTE_PREFIXES,
    SECONDS,
    header,
    minute_prefix,
    original_json,
    subsecond,
    with_fraction,
)

ECS_VERSION = "9.4.0"
ECS = {"version": ECS_VERSION}


# An actor's rendering, cached per distinct actor: (head, leftovers, related.user, related.ip
# object, related object to append at the end when the target names no further user).
# `head` is the start of every document of that actor: "@timestamp" and "event" are
# placeholders filled per event, then the actor's fields (user, related, source, ...) in place.
ActorRendering = tuple[dict[str, Any], dict | None, list[str], dict | None, dict | None]


def _render_actor(actor: Any, event_id: str) -> ActorRendering:
    parts: dict[str, Any] = {}
    users: list[str] = []
    rest = render_actor(actor, parts, event_id, users) if actor is not None else None
    users = list(dict.fromkeys(users))
    ip_related = parts.get("related")
    tail_related = None
    if users:
        if ip_related is None:
            tail_related = {"user": users}
        else:
            parts["related"] = {**ip_related, "user": users}
    head = {"@timestamp": None, "ecs": ECS, "event": None, **parts}
    return head, rest, users, ip_related, tail_related


_NO_ACTOR = _render_actor(None, "")
_KNOWN_TOP = frozenset({"id", "type", "effective_at", "actor", "project", SUBSECOND_KEY})


def make_mapper(context: MappingContext) -> MapFunction:
    # Constant sub-objects are shared by every document: treat documents as read-only.
    organization = {"id": context.organization_id} if context.organization_id else None
    original = context.original
    plans, plan_for = plan_cache(Plan)
    actor_rendering = by_json(_render_actor)
    minute_prefixes = MINUTE_PREFIXES

    def map_ecs(event: dict[str, Any]) -> dict[str, Any]:
        event_id, event_type, ts = header(event)
        plan = plans.get(event_type) or plan_for(event_type)
        extra = len(event) - 3
        actor = event.get("actor")
        if actor is not None:
            extra -= 1
            rendering = actor_rendering(actor, event_id)
        else:
            if "actor" in event:
                extra -= 1
            rendering = _NO_ACTOR
        head, rest, actor_users, ip_related, tail_related = rendering
        doc = head.copy()
        minute = ts // 60  # values.iso_time(ts) inlined: the call cost as much as the lookup
        doc["@timestamp"] = (minute_prefixes.get(minute) or minute_prefix(minute)) + SECONDS[
            ts % 60
        ]
        oa: dict[str, Any] = {} if rest is None else {"actor": rest}
        obj = event.get("object")  # "organization.audit_log" on every real event
        if type(obj) is str:
            extra -= 1
            oa["object"] = obj
        project = event.get("project")
        if project is not None:
            extra -= 1
            if type(project) is not dict:
                raise MappingError("project is neither an object nor null", event_id)
            oa["project"] = project
        elif "project" in event:
            extra -= 1
        payload = event.get(event_type) if event_type not in _KNOWN_TOP else None
        ev = plan.event
        added: list[str] = []  # users the target names
        if payload is not None:
            extra -= 1
            if type(payload) is not dict:
                raise MappingError(f"payload {event_type!r} is not an object", event_id)
            oa["payload"] = payload
            t = plan.target
            if t is not None:
                ev = plan.render(plan, t, payload, doc, added)
            if plan.failure:
                code = payload.get("error_code")
                message = payload.get("error_message")
                if type(code) is str or type(message) is str:
                    error: dict[str, Any] = {}
                    if type(code) is str:
                        error["code"] = code
                    if type(message) is str:
                        error["message"] = message
                    doc["error"] = error
        elif event_type in event and event_type not in _KNOWN_TOP:
            extra -= 1
        if extra:
            us = subsecond(event)
            if us:
                extra -= 1
                doc["@timestamp"] = with_fraction(doc["@timestamp"], us)
            if extra:
                known = _KNOWN_TOP | {event_type, "object" if "object" in oa else event_type}
                other = {k: v for k, v in event.items() if k not in known}
                if other:
                    oa["extra"] = other
        ev = ev.copy()
        ev["id"] = event_id
        if original:
            ev["original"] = original_json(event)
        doc["event"] = ev
        if organization is not None:
            doc["organization"] = organization
        if added:
            users = actor_users.copy()
            for u in added:
                if u not in users:
                    users.append(u)
            doc["related"] = (
                {"user": users} if ip_related is None else {**ip_related, "user": users}
            )
        elif tail_related is not None:
            doc["related"] = tail_related
        doc["openai"] = {"audit": oa}
        return doc

    return map_ecs
