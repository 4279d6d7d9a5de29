"""The `ocsf` schema: renders catalog entries into OCSF 1.8.0 Identity & Access Management
events (Account Change, Authentication, Entity Management, User Access, Group Management).
Source fields OCSF has no attribute for go under `unmapped`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from mappings.catalog import Action, EventSpec, Realm, spec_for
from mappings.ocsf_versions import NATIVE_VERSION, ClassConstraintError, renderer
from mappings.registry import SUBSECOND_KEY, MapFunction, MappingContext, MappingError
from mappings.targets import CompiledTarget, item_ids
from mappings.values import (
    MAX_EFFECTIVE_AT,
    as_number,
    coordinate,
    header,
    original_json,
    str_list,
    subsecond,
    valid_email,
    valid_ip,
)

OCSF_VERSION = NATIVE_VERSION
ACTOR_CACHE_SIZE = 4096
PRODUCT = {"name": "OpenAI Platform", "vendor_name": "OpenAI"}
SERVICE = {"name": "OpenAI Platform"}

ACCOUNT_CHANGE, AUTHENTICATION, ENTITY_MANAGEMENT, USER_ACCESS, GROUP_MANAGEMENT = (
    3001,
    3002,
    3004,
    3005,
    3006,
)
CLASS_NAMES = {
    ACCOUNT_CHANGE: "Account Change",
    AUTHENTICATION: "Authentication",
    ENTITY_MANAGEMENT: "Entity Management",
    USER_ACCESS: "User Access Management",
    GROUP_MANAGEMENT: "Group Management",
}
ACTIVITY_NAMES: dict[int, dict[int, str]] = {
    ACCOUNT_CHANGE: {1: "Create", 2: "Enable", 5: "Disable", 6: "Delete"},
    AUTHENTICATION: {1: "Logon", 2: "Logoff"},
    ENTITY_MANAGEMENT: {
        1: "Create",
        2: "Read",
        3: "Update",
        4: "Delete",
        8: "Enable",
        9: "Disable",
    },
    USER_ACCESS: {1: "Assign Privileges", 2: "Revoke Privileges"},
    GROUP_MANAGEMENT: {
        1: "Assign Privileges",
        2: "Revoke Privileges",
        3: "Add User",
        4: "Remove User",
        5: "Delete",
        6: "Create",
    },
}
OTHER = 99
_EM_ACTIVITY = {
    Action.CREATE: 1,
    Action.READ: 2,
    Action.UPDATE: 3,
    Action.DELETE: 4,
    Action.ENABLE: 8,
    Action.DISABLE: 9,
    Action.GRANT: 3,
    Action.REVOKE: 3,
    Action.ADD_MEMBER: 3,
    Action.REMOVE_MEMBER: 3,
}
_ACCOUNT_ACTIVITY = {Action.CREATE: 1, Action.ENABLE: 2, Action.DISABLE: 5, Action.DELETE: 6}
_USER_KINDS = frozenset({"user", "service_account"})
_STATUS = {"success": (1, "Success"), "failure": (2, "Failure"), "unknown": (0, "Unknown")}


def classify(spec: EventSpec, *, group_principal: bool = False, role: bool = False) -> tuple:
    """(class_uid, activity_id) for a catalog entry. Role assignments depend on whether the
    principal is a group; user updates on whether they change the role."""
    a = spec.action
    if not spec.known:
        return ENTITY_MANAGEMENT, _EM_ACTIVITY.get(a, OTHER)
    if a is Action.LOGON or a is Action.LOGOFF:
        return AUTHENTICATION, 1 if a is Action.LOGON else 2
    if a is Action.GRANT or a is Action.REVOKE:
        activity = 1 if a is Action.GRANT else 2
        return (GROUP_MANAGEMENT if group_principal else USER_ACCESS), activity
    if a is Action.ADD_MEMBER or a is Action.REMOVE_MEMBER:
        return GROUP_MANAGEMENT, 3 if a is Action.ADD_MEMBER else 4
    kind = spec.target.kind if spec.target is not None else ""
    if spec.realm is Realm.GROUP and kind == "group" and a in (Action.CREATE, Action.DELETE):
        return GROUP_MANAGEMENT, 6 if a is Action.CREATE else 5
    if kind in _USER_KINDS:
        if a is Action.UPDATE:
            return (USER_ACCESS, 1) if role else (ACCOUNT_CHANGE, OTHER)
        if a in _ACCOUNT_ACTIVITY:
            return ACCOUNT_CHANGE, _ACCOUNT_ACTIVITY[a]
    return ENTITY_MANAGEMENT, _EM_ACTIVITY.get(a, OTHER)


def fallback_class(spec: EventSpec) -> tuple[int, int]:
    """Entity Management, used when the event lacks what the preferred class requires."""
    return ENTITY_MANAGEMENT, _EM_ACTIVITY.get(spec.action, OTHER)


def activity_name(spec: EventSpec, class_uid: int, activity_id: int) -> str:
    if activity_id == OTHER:
        return spec.type  # the source-specific activity, as OCSF asks for activity 99
    return ACTIVITY_NAMES[class_uid][activity_id]


def _head(spec: EventSpec, class_uid: int, activity_id: int) -> dict[str, Any]:
    name = activity_name(spec, class_uid, activity_id)
    status_id, status = _STATUS[spec.outcome]
    return {
        "class_uid": class_uid,
        "class_name": CLASS_NAMES[class_uid],
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "activity_id": activity_id,
        "activity_name": name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{CLASS_NAMES[class_uid]}: {name}",
        "severity_id": 1,
        "severity": "Informational",
        "status_id": status_id,
        "status": status,
    }


class _Plan:
    """Everything about one event type that does not depend on the event: the constant head
    (class, activity, status, names) of each class it may end in, and `render`, the function
    that fills the class-specific attributes (one per kind of class, below `make_mapper`)."""

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
        self.fallback = _head(spec, *fallback_class(spec))
        main = classify(spec)
        self.main = _head(spec, *main)
        self.alt = self.main
        self.render: Render
        if main[0] == ENTITY_MANAGEMENT:
            self.render = _render_entity
        elif main[0] == AUTHENTICATION:
            self.render = _render_authentication
        elif a is Action.GRANT or a is Action.REVOKE:
            self.render = _render_grant
            self.alt = _head(spec, *classify(spec, group_principal=True))
        elif main[0] == GROUP_MANAGEMENT:
            self.render = _render_group
        elif a is Action.UPDATE:
            self.render = _render_account_update
            self.main = _head(spec, *classify(spec, role=True))
            self.alt = _head(spec, *classify(spec, role=False))
        else:
            self.render = _render_account


def _unusable(where: str, event_id: str) -> MappingError:
    return MappingError(f"{where} is not an object", event_id)


def _user(u: Any, where: str, event_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(OCSF user, leftovers) of an actor user object {id, email}."""
    if type(u) is not dict:
        raise _unusable(where, event_id)
    out: dict[str, Any] = {}
    used = 0
    uid = u.get("id")
    if type(uid) is str:
        out["uid"] = uid
        used += 1
    email = u.get("email")
    if type(email) is str and valid_email(email):
        out["email_addr"] = email
        if uid is None or "uid" not in out:
            out["name"] = email
        used += 1
    if used == len(u):
        return out, None
    keep = {k: v for k, v in u.items() if not (k == "id" and "uid" in out)}
    if "email_addr" in out:
        keep.pop("email", None)
    return out, keep


def _location(d: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    loc: dict[str, Any] = {}
    used: set[str] = set()
    country = d.get("country")
    if type(country) is str and len(country) == 2 and country.isascii() and country.isalpha():
        loc["country"] = country.upper()
        used.add("country")
        code = d.get("region_code")
        if type(code) is str and code:
            loc["region"] = f"{loc['country']}-{code}"
            used.add("region_code")
    city = d.get("city")
    if type(city) is str:
        loc["city"] = city
        used.add("city")
    if not loc:  # OCSF needs a city, country, postal code or region before coordinates
        return loc, used
    lat = coordinate(d.get("latitude"), 90.0)
    lon = coordinate(d.get("longitude"), 180.0)
    if lat is not None and lon is not None:
        loc["lat"] = lat
        loc["long"] = lon
        used.add("latitude")
        used.add("longitude")
    return loc, used


def _session(s: Any, doc: dict[str, Any], event_id: str) -> dict[str, Any] | None:
    """Fills actor.user, src_endpoint and http_request from a session; returns leftovers."""
    if type(s) is not dict:
        raise _unusable("actor.session", event_id)
    rest: dict[str, Any] = {}
    used: set[str] = set()
    u = s.get("user")
    if u is not None:
        user, user_rest = _user(u, "actor.session.user", event_id)
        if user:
            user["type_id"] = 1
            user["type"] = "User"
            doc["actor"] = {"user": user}
        if user_rest:
            rest["user"] = user_rest
        used.add("user")
    ip = s.get("ip_address")
    if type(ip) is str and valid_ip(ip):
        endpoint: dict[str, Any] = {"ip": ip}
        used.add("ip_address")
        details = s.get("ip_address_details")
        if details is not None:
            if type(details) is not dict:
                raise _unusable("actor.session.ip_address_details", event_id)
            loc, loc_used = _location(details)
            if loc:
                endpoint["location"] = loc
            asn = as_number(details.get("asn"))
            if asn is not None:
                endpoint["autonomous_system"] = {"number": asn}
                loc_used.add("asn")
            used.add("ip_address_details")
            if len(loc_used) != len(details):
                rest["ip_address_details"] = {k: v for k, v in details.items() if k not in loc_used}
        fingerprints = []
        ja3 = s.get("ja3")
        if type(ja3) is str and ja3:
            fingerprints.append({"algorithm_id": OTHER, "algorithm": "JA3", "value": ja3})
            used.add("ja3")
        ja4 = s.get("ja4")
        if type(ja4) is str and ja4:
            fingerprints.append({"algorithm_id": OTHER, "algorithm": "JA4", "value": ja4})
            used.add("ja4")
        if fingerprints:
            endpoint["fingerprints"] = fingerprints
        doc["src_endpoint"] = endpoint
    elif s.get("ip_address_details") is not None and type(s["ip_address_details"]) is not dict:
        raise _unusable("actor.session.ip_address_details", event_id)
    ua = s.get("user_agent")
    if type(ua) is str:
        doc["http_request"] = {"user_agent": ua}
        used.add("user_agent")
    if len(used) != len(s):
        for k, v in s.items():
            if k not in used:
                rest[k] = v
    return rest or None


def _api_key(k: Any, doc: dict[str, Any], event_id: str) -> dict[str, Any] | None:
    """Fills actor.user (the key's user or service account, with the key as its programmatic
    credential) from an API key actor; returns leftovers."""
    if type(k) is not dict:
        raise _unusable("actor.api_key", event_id)
    rest: dict[str, Any] = {}
    user: dict[str, Any] = {}
    key_id = k.get("id")
    key_type = k.get("type")
    for key, value in k.items():
        if key == "user" and value is not None:
            u, u_rest = _user(value, "actor.api_key.user", event_id)
            if u:
                user = u
                user["type_id"] = 1
                user["type"] = "User"
            if u_rest:
                rest["user"] = u_rest
        elif key == "service_account" and value is not None:
            if type(value) is not dict:
                raise _unusable("actor.api_key.service_account", event_id)
            sid = value.get("id")
            if type(sid) is str and not user:
                user = {"uid": sid, "type_id": 4, "type": "Service"}
                if len(value) > 1:
                    rest["service_account"] = {k2: v for k2, v in value.items() if k2 != "id"}
            elif value:
                rest["service_account"] = value
        elif key == "id" or key == "type":
            continue
        else:
            rest[key] = value
    if user:
        if type(key_id) is str:
            user["programmatic_credentials"] = [{"uid": key_id, "type": "API Key"}]
        else:
            if "id" in k:
                rest["id"] = key_id
        if "type" in k and key_type not in ("user", "service_account"):
            rest["type"] = key_type
        doc["actor"] = {"user": user}
    else:
        if "id" in k:
            rest["id"] = key_id
        if "type" in k:
            rest["type"] = key_type
    return rest or None


def _actor(actor: Any, doc: dict[str, Any], event_id: str) -> dict[str, Any] | None:
    if type(actor) is not dict:
        raise MappingError("actor is neither an object nor null", event_id)
    rest: dict[str, Any] = {}
    for key, value in actor.items():
        if key == "session" and value is not None:
            r = _session(value, doc, event_id)
        elif key == "api_key" and value is not None:
            r = _api_key(value, doc, event_id)
        else:
            rest[key] = value
            continue
        if r:
            rest[key] = r
    return rest or None


def _target_user(plan: _Plan, payload: dict[str, Any], uid: str | None) -> dict[str, Any]:
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


def _entity(
    plan: _Plan, payload: dict[str, Any] | None, tid: str | None
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
            elif plan.kind in _USER_KINDS and tid is not None:
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
Render = Callable[["_Plan", dict[str, Any], "dict[str, Any] | None"], tuple[dict[str, Any], Any]]
Head = dict[str, Any]


def _render_entity(plan: _Plan, doc: dict[str, Any], payload: dict[str, Any] | None) -> tuple:
    t = plan.target
    tid = t.id(payload) if t is not None and t.id and payload is not None else None
    return plan.main, tid


def _render_authentication(plan: _Plan, doc: dict[str, Any], payload: Any) -> tuple:
    actor = doc.get("actor")
    if actor is None:
        return plan.fallback, None
    doc["user"] = actor["user"]
    doc["service"] = SERVICE
    return plan.main, None


def _target_id(plan: _Plan, payload: dict[str, Any] | None) -> str | None:
    """The id of the target the class is about: None when the payload does not name it."""
    t = plan.target
    if payload is None or t is None or not t.id:
        return None
    return t.id(payload)


TargetRender = Callable[["_Plan", dict[str, Any], dict[str, Any], CompiledTarget, str], tuple]


def _on_target(render: TargetRender) -> Render:
    """A rendering that needs the id of the payload's target: the fallback class (Entity
    Management) when the payload does not name one."""

    def rendered(plan: _Plan, doc: dict[str, Any], payload: dict[str, Any] | None) -> tuple:
        tid = _target_id(plan, payload)
        if tid is None:
            return plan.fallback, None
        assert plan.target is not None and payload is not None
        return render(plan, doc, payload, plan.target, tid)

    return rendered


@_on_target
def _render_grant(
    plan: _Plan, doc: dict[str, Any], payload: dict[str, Any], t: CompiledTarget, tid: str
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
    plan: _Plan, doc: dict[str, Any], payload: dict[str, Any], t: CompiledTarget, tid: str
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
    plan: _Plan, doc: dict[str, Any], payload: dict[str, Any], t: CompiledTarget, tid: str
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
    plan: _Plan, doc: dict[str, Any], payload: dict[str, Any], t: CompiledTarget, tid: str
) -> tuple:
    """A user update is User Access Management when it names the new role, else Account
    Change."""
    doc["user"] = _target_user(plan, payload, tid)
    role = t.roles(payload) if t.roles else None
    if role is None:
        return plan.alt, tid
    doc["privileges"] = [role]
    return plan.main, tid


_KNOWN_TOP = frozenset({"id", "type", "effective_at", "actor", "project", SUBSECOND_KEY})


def _status(out: dict[str, Any], payload: dict[str, Any]) -> None:
    """The error code and message of a failed action's payload."""
    code = payload.get("error_code")
    if type(code) is str:
        out["status_code"] = code
    detail = payload.get("error_message")
    if type(detail) is str:
        out["status_detail"] = detail


def make_mapper(context: MappingContext) -> MapFunction:
    org = context.organization_id
    original = context.original
    plans: dict[str, _Plan] = {}
    actor_cache: dict[bytes, tuple[dict[str, Any], dict[str, Any] | None]] = {}
    dumps = orjson.dumps

    def plan_for(event_type: str) -> _Plan:
        plan = _Plan(spec_for(event_type))
        if len(plans) < 4096:
            plans[event_type] = plan
        return plan

    def actor_parts(actor: Any, event_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(attributes the actor fills, its leftovers for `unmapped`). Actors repeat (the same
        session or key across many events): their rendering is cached by their exact JSON,
        and the rendered objects are shared between events."""
        try:
            key = dumps(actor)
        except TypeError:
            key = None
        hit = actor_cache.get(key) if key is not None else None
        if hit is None:
            parts: dict[str, Any] = {}
            rest = _actor(actor, parts, event_id)
            hit = (parts, rest)
            if key is not None:
                if len(actor_cache) >= ACTOR_CACHE_SIZE:
                    actor_cache.clear()
                actor_cache[key] = hit
        return hit

    def map_ocsf(event: dict[str, Any], fallback: bool = False) -> dict[str, Any]:
        # The common case checked inline; header() names the problem otherwise.
        if type(event) is not dict:
            header(event)
        event_id = event.get("id")
        event_type = event.get("type")
        ts = event.get("effective_at")
        if (
            type(event_id) is not str
            or not event_id
            or type(event_type) is not str
            or type(ts) is not int
            or not 0 <= ts <= MAX_EFFECTIVE_AT
        ):
            header(event)
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
            head, tid = plan.fallback, _target_id(plan, payload)
        else:
            head, tid = plan.render(plan, doc, payload)
        if head["class_uid"] == ENTITY_MANAGEMENT:
            entity, result = _entity(plan, payload, tid)
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
