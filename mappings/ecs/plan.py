"""What an ECS document of one event type holds beyond its actor: the `Plan` of the type (its
`event` object: category, type, action, outcome, dataset) and the function that renders its
target (a user, a group, a role's principal and scope, or another entity), made once per event
type."""

from __future__ import annotations

from typing import Any

from mappings.catalog import Action, EventSpec, Realm
from mappings.ecs.actor import PERSON, SERVICE_ACCOUNT
from mappings.targets import CompiledTarget, item_ids
from mappings.values import str_list

# Our own dataset: Elastic's OpenAI integration owns `openai.audit` (logs-openai.audit-*).
DATASET = "openai_audit_forwarder.audit"

_VERB_TYPE = {
    Action.CREATE: "creation",
    Action.READ: "info",
    Action.UPDATE: "change",
    Action.DELETE: "deletion",
    Action.ENABLE: "change",
    Action.DISABLE: "change",
    Action.GRANT: "change",
    Action.REVOKE: "change",
    Action.ADD_MEMBER: "change",
    Action.REMOVE_MEMBER: "change",
    Action.LOGON: "start",
    Action.LOGOFF: "end",
    Action.OTHER: "info",
}
_REALM_TYPE = {Realm.USER: "user", Realm.GROUP: "group", Realm.ACCESS: "admin"}

# How the target is rendered.
_NONE, _USER, _GROUP, _PRINCIPAL, _PERSON_ENTITY, _ENTITY = range(6)
_USER_KINDS = frozenset({"user", "service_account"})
_PERSON_ENTITY_KINDS = frozenset({"invite", "membership"})


def category_and_type(spec: EventSpec, realm: Realm | None = None) -> tuple[tuple[str, ...], ...]:
    """(event.category, event.type) of a catalog entry; `realm` overrides the entry's realm."""
    realm = realm or spec.realm
    if realm is Realm.AUTHENTICATION:
        verb = _VERB_TYPE[spec.action]
        return ("authentication", "session"), (verb if verb in ("start", "end") else "info",)
    verb = _VERB_TYPE[spec.action]
    if verb in ("start", "end"):
        verb = "info"
    if realm is Realm.CONFIGURATION:
        return ("configuration",), ("access" if spec.action is Action.READ else verb,)
    return ("iam",), (verb, _REALM_TYPE[realm])


class Plan:
    """Everything about one event type that does not depend on the event."""

    __slots__ = (
        "action",
        "event",
        "event_group",
        "failure",
        "kind",
        "mode",
        "render",
        "target",
        "update_roles",
    )

    def __init__(self, spec: EventSpec) -> None:
        self.action = spec.action
        self.event = self._event(spec, None)
        self.event_group = self._event(spec, Realm.GROUP)
        self.target = CompiledTarget(spec.target) if spec.target is not None else None
        kind = spec.target.kind if spec.target is not None else ""
        if spec.target is None:
            self.mode = _NONE
        elif kind == "principal":
            self.mode = _PRINCIPAL
        elif spec.realm is Realm.GROUP:
            self.mode = _GROUP
        elif kind in _USER_KINDS:
            self.mode = _USER
        elif kind in _PERSON_ENTITY_KINDS:
            self.mode = _PERSON_ENTITY
        else:
            self.mode = _ENTITY
        self.kind = kind
        self.failure = spec.outcome == "failure"
        self.update_roles = spec.action in (Action.UPDATE, Action.GRANT)
        if self.mode in (_USER, _PRINCIPAL, _PERSON_ENTITY):
            self.render = _user_target
        elif self.mode == _GROUP:
            self.render = _group_target
        else:
            self.render = _entity_target

    @staticmethod
    def _event(spec: EventSpec, realm: Realm | None) -> dict[str, Any]:
        category, types = category_and_type(spec, realm)
        return {
            "kind": "event",
            "category": category,
            "type": types,
            "action": spec.type,
            "outcome": spec.outcome,
            "dataset": DATASET,
            "provider": "openai",
        }


def _user_target(
    plan: Plan, t: CompiledTarget, payload: dict[str, Any], doc: dict[str, Any], users: list
) -> dict[str, Any]:
    tid = t.id(payload) if t.id else None
    mode = plan.mode
    kind = plan.kind
    if mode == _PRINCIPAL:
        _scope(t, payload, doc)
        kind = t.principal_type(payload) if t.principal_type else None
        if kind == "group":
            if tid is not None:
                doc["group"] = {"id": tid}
            return plan.event_group
    target: dict[str, Any] = {}
    if tid is not None and mode != _PERSON_ENTITY:
        target["id"] = tid
        users.append(tid)
        if kind == "service_account":
            target["entity"] = SERVICE_ACCOUNT
        elif kind == "user":
            target["entity"] = PERSON
    if t.name:
        name = t.name(payload)
        if name is not None:
            target["name"] = name
    if t.email:
        email = t.email(payload)
        if email is not None:
            target["email"] = email
            users.append(email)
    role = t.roles(payload) if t.roles else None
    if role is None and mode == _PRINCIPAL and plan.action is Action.GRANT and t.privileges:
        role = t.privileges(payload)
        role = role if type(role) is str else None
    if role is not None:
        if plan.update_roles:
            _set_user(doc, "changes", {"roles": [role]})
        else:
            target["roles"] = [role]
    if target:
        _set_user(doc, "target", target)
    if mode == _PERSON_ENTITY and tid is not None:
        doc["entity"] = {"target": {"id": tid, "sub_type": plan.kind}}
    return plan.event


def _set_user(doc: dict[str, Any], key: str, value: Any) -> None:
    """`user.<key>` set on a copy of the document's user: the actor's user is shared by every
    document of that actor, never changed."""
    user = doc.get("user")
    user = dict(user) if user else {}
    user[key] = value
    doc["user"] = user


def _scope(t: CompiledTarget, payload: dict[str, Any], doc: dict[str, Any]) -> None:
    """The resource a role assignment is scoped to (a project, the organization)."""
    rid = t.resource_id(payload) if t.resource_id else None
    if rid is not None:
        rtype = t.resource_type(payload) if t.resource_type else None
        doc["entity"] = {"target": {"id": rid, "sub_type": rtype or "resource"}}


def _group_target(
    plan: Plan, t: CompiledTarget, payload: dict[str, Any], doc: dict[str, Any], users: list
) -> dict[str, Any]:
    group: dict[str, Any] = {}
    tid = t.id(payload) if t.id else None
    if tid is not None:
        group["id"] = tid
    if t.name:
        name = t.name(payload)
        if name is not None:
            group["name"] = name
    if group:
        doc["group"] = group
    if t.member:
        member = t.member(payload)
        if member is not None:
            _set_user(doc, "target", {"id": member})
            users.append(member)
    return plan.event


def _entity_target(
    plan: Plan, t: CompiledTarget, payload: dict[str, Any], doc: dict[str, Any], users: list
) -> dict[str, Any]:
    entity: dict[str, Any] = {"sub_type": plan.kind}
    if t.items is not None:
        ids, names = item_ids(payload, t.items)
        if ids:
            entity["id"] = ids
        if names:
            entity["name"] = names
    else:
        tid = t.id(payload) if t.id else None
        if tid is not None:
            entity["id"] = tid
        if t.name:
            name = t.name(payload)
            if name is not None:
                entity["name"] = name
    if t.privileges:
        privileges = str_list(t.privileges(payload))
        if privileges is not None:
            entity["attributes"] = {"permissions": privileges}
    if t.details:
        details = t.detail_values(payload)
        if details is not None:
            # Numbers (rate limits) are metrics, which Elasticsearch maps as numbers; the rest
            # stays raw (a flattened field, searched as keywords).
            raw = {k: v for k, v in details.items() if type(v) not in (int, float)}
            metrics = {k: v for k, v in details.items() if type(v) in (int, float)}
            if raw:
                entity["raw"] = raw
            if metrics:
                entity["metrics"] = metrics
    doc["entity"] = {"target": entity}
    return plan.event
