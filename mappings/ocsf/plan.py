"""What an OCSF document of one event type holds beyond its actor: the `Plan` of the type
(the heads of the classes it may end in, and the function that renders its class-specific
attributes: the target user, group, privileges or entity), made once per event type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mappings.catalog import Action, EventSpec
from mappings.ocsf.classes import (
    AUTHENTICATION,
    ENTITY_MANAGEMENT,
    GROUP_MANAGEMENT,
    USER_KINDS,
    class_head,
    classify,
    fallback_class,
)
from mappings.targets import CompiledTarget, item_ids
from mappings.values import str_list, valid_email

SERVICE = {"name": "OpenAI Platform"}


class Plan:
    """Everything about one event type that does not depend on the event: the constant head
    (class, activity, status, names) of each class it may end in, and `render`, the function
    that fills the class-specific attributes (one per kind of class, below)."""

    __slots__ = (
        "action",
        "alt",
        "failure",
        "fallback",
        "is_update",
        "kind",
        "main",
        "render",
        "target",
    )

    def __init__(self, spec: EventSpec) -> None:
        a = spec.action
        self.action = a
        self.is_update = a is Action.UPDATE  # an enum member lookup per event is not free
        kind = spec.target.kind if spec.target is not None else spec.noun
        self.kind = kind or "unknown"
        self.target = CompiledTarget(spec.target) if spec.target is not None else None
        self.failure = spec.outcome == "failure"
        self.fallback = class_head(spec, *fallback_class(spec))
        main = classify(spec)
        self.main = class_head(spec, *main)
        self.alt = self.main
        self.render: Render
        if main[0] == ENTITY_MANAGEMENT:
            self.render = _render_entity
        elif main[0] == AUTHENTICATION:
            self.render = _render_authentication
        elif a is Action.GRANT or a is Action.REVOKE:
            self.render = _render_grant
            self.alt = class_head(spec, *classify(spec, group_principal=True))
        elif main[0] == GROUP_MANAGEMENT:
            self.render = _render_group
        elif a is Action.UPDATE:
            self.render = _render_account_update
            self.main = class_head(spec, *classify(spec, role=True))
            self.alt = class_head(spec, *classify(spec, role=False))
        else:
            self.render = _render_account


def _target_user(plan: Plan, payload: dict[str, Any], uid: str | None) -> dict[str, Any]:
    t = plan.target
    assert t is not None
    user: dict[str, Any] = {}
    if uid is not None:
        user["uid"] = uid
    name = t.name(payload) if t.name else None
    if name is not None:
        user["name"] = name
    email = t.email(payload) if t.email else None
    if email is not None and valid_email(email):
        user["email_addr"] = email
    if plan.kind == "service_account":
        user["type_id"] = 4
        user["type"] = "Service"
    return user


def entity_and_result(
    plan: Plan, payload: dict[str, Any] | None, tid: str | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(entity, entity_result) for Entity Management."""
    t = plan.target
    entity: dict[str, Any] = {"type": plan.kind}
    result: dict[str, Any] | None = None
    if t is not None and payload is not None:
        if t.items is not None:
            ids, names = item_ids(payload, t.items)
            if len(ids) == 1:
                entity["uid"] = ids[0]
            if names:
                entity["name"] = ", ".join(names)
            if len(ids) > 1:
                entity["data"] = payload.get(t.items)
        else:
            if tid is not None:
                entity["uid"] = tid
            name = t.name(payload) if t.name else None
            if name is not None:
                entity["name"] = name
            if plan.kind == "group" and (tid is not None or name is not None):
                entity["group"] = {k: entity[k] for k in ("uid", "name") if k in entity}
            elif plan.kind in USER_KINDS and tid is not None:
                entity["user"] = {"uid": tid}
        data = payload.get("data")
        if type(data) is dict:
            entity["data"] = data
    details = t.detail_values(payload) if t is not None and t.details and payload else None
    if details is not None and not plan.is_update:
        entity["data"] = {**entity["data"], **details} if "data" in entity else details
    if "uid" not in entity and "name" not in entity:
        entity["name"] = plan.kind  # OCSF needs a name or uid; the payload named neither
    if payload is not None and plan.is_update:
        changes = payload.get("changes_requested")
        if details is not None:
            # The new state the payload names outside changes_requested (an allowlist's CIDRs,
            # a binding's permissions, a mapping's provider) belongs with the change.
            changes = {**changes, **details} if type(changes) is dict else details
        if type(changes) is dict:
            result = {}
            if "uid" in entity:
                result["uid"] = entity["uid"]
            if "name" in entity:
                result["name"] = entity["name"]
            result["type"] = entity["type"]
            result["data"] = changes
    return entity, result


# Per kind of class: fill the class-specific attributes of `doc` from the payload and return
# (head, target id); the head is the plan's fallback (Entity Management) when the event lacks
# what the preferred class requires. The target id also names the entity of that fallback.
Render = Callable[["Plan", dict[str, Any], "dict[str, Any] | None"], tuple[dict[str, Any], Any]]
Head = dict[str, Any]


def _render_entity(plan: Plan, doc: dict[str, Any], payload: dict[str, Any] | None) -> tuple:
    t = plan.target
    tid = t.id(payload) if t is not None and t.id and payload is not None else None
    return plan.main, tid


def _render_authentication(plan: Plan, doc: dict[str, Any], payload: Any) -> tuple:
    actor = doc.get("actor")
    if actor is None:
        return plan.fallback, None
    doc["user"] = actor["user"]
    doc["service"] = SERVICE
    return plan.main, None


def target_id(plan: Plan, payload: dict[str, Any] | None) -> str | None:
    """The id of the target the class is about: None when the payload does not name it."""
    t = plan.target
    if payload is None or t is None or not t.id:
        return None
    return t.id(payload)


TargetRender = Callable[["Plan", dict[str, Any], dict[str, Any], CompiledTarget, str], tuple]


def _on_target(render: TargetRender) -> Render:
    """A rendering that needs the id of the payload's target: the fallback class (Entity
    Management) when the payload does not name one."""

    def rendered(plan: Plan, doc: dict[str, Any], payload: dict[str, Any] | None) -> tuple:
        tid = target_id(plan, payload)
        if tid is None:
            return plan.fallback, None
        assert plan.target is not None and payload is not None
        return render(plan, doc, payload, plan.target, tid)

    return rendered


@_on_target
def _render_grant(
    plan: Plan, doc: dict[str, Any], payload: dict[str, Any], t: CompiledTarget, tid: str
) -> tuple:
    ptype = t.principal_type(payload) if t.principal_type else None
    # The documented payload names the assignment, not the role: it stands for the privilege
    # when no role name or id is given.
    role = t.privileges(payload) if t.privileges else None
    privileges = str_list(role) or str_list(payload.get("id"))
    if ptype == "group":
        head = plan.alt
        doc["group"] = {"uid": tid}
        if privileges is not None:
            doc["privileges"] = privileges
    elif privileges is not None:
        head = plan.main
        user = {"uid": tid}
        if ptype == "service_account":
            user["type_id"] = 4
            user["type"] = "Service"
        doc["user"] = user
        doc["privileges"] = privileges
    else:
        return plan.fallback, tid
    rid = t.resource_id(payload) if t.resource_id else None
    if rid is not None:
        resource = {"uid": rid}
        rtype = t.resource_type(payload) if t.resource_type else None
        if rtype is not None:
            resource["type"] = rtype
        # User Access Management deprecated `resource` for `resources` (1.5).
        if head is plan.alt:
            doc["resource"] = resource
        else:
            doc["resources"] = [resource]
    return head, tid


@_on_target
def _render_group(
    plan: Plan, doc: dict[str, Any], payload: dict[str, Any], t: CompiledTarget, tid: str
) -> tuple:
    group = {"uid": tid}
    name = t.name(payload) if t.name else None
    if name is not None:
        group["name"] = name
    doc["group"] = group
    member = t.member(payload) if t.member else None
    if member is not None:
        doc["user"] = {"uid": member}
    return plan.main, tid


@_on_target
def _render_account(
    plan: Plan, doc: dict[str, Any], payload: dict[str, Any], t: CompiledTarget, tid: str
) -> tuple:
    user = doc["user"] = _target_user(plan, payload, tid)
    role = t.roles(payload) if t.roles else None
    if role is not None:
        # Account Change has no privileges: a role given with the account (user added as
        # owner) is the administrative group the user now belongs to.
        user["groups"] = [{"name": role, "type": "role"}]
    return plan.main, tid


@_on_target
def _render_account_update(
    plan: Plan, doc: dict[str, Any], payload: dict[str, Any], t: CompiledTarget, tid: str
) -> tuple:
    """A user update is User Access Management when it names the new role, else Account
    Change."""
    doc["user"] = _target_user(plan, payload, tid)
    role = t.roles(payload) if t.roles else None
    if role is None:
        return plan.alt, tid
    doc["privileges"] = [role]
    return plan.main, tid
