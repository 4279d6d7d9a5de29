"""The `ecs` schema: renders catalog entries into Elastic Common Schema 9.x documents. Fields
ECS has no place for go under `openai.audit.*`, so no source value is lost."""

from __future__ import annotations

from typing import Any

import orjson

from mappings.catalog import Action, EventSpec, Realm, spec_for
from mappings.registry import SUBSECOND_KEY, MapFunction, MappingContext, MappingError
from mappings.targets import CompiledTarget, item_ids
from mappings.values import (
    MAX_EFFECTIVE_AT,
    MINUTE_PREFIXES,
    SECONDS,
    as_number,
    coordinate,
    header,
    minute_prefix,
    original_json,
    str_list,
    subsecond,
    valid_ip,
    with_fraction,
)

ECS_VERSION = "9.4.0"
# Our own dataset: Elastic's OpenAI integration owns `openai.audit` (logs-openai.audit-*).
DATASET = "openai_audit_forwarder.audit"
ECS = {"version": ECS_VERSION}
ACTOR_CACHE_SIZE = 4096

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
# Who acted, as ECS 9 entity types: a person or a service account (ECS counts both as `user`
# entities); the sub-type is OpenAI's own word, as in actor.api_key.type.
PERSON = {"type": ["user"], "sub_type": "user"}
SERVICE_ACCOUNT = {"type": ["user"], "sub_type": "service_account"}


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


class _Plan:
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


def _unusable(where: str, event_id: str) -> MappingError:
    return MappingError(f"{where} is not an object", event_id)


def _rest(d: dict[str, Any], mapped: tuple[str, ...], rest: dict[str, Any]) -> dict[str, Any]:
    """Adds the entries of d whose keys are not in `mapped` to rest (the slow path, taken only
    when the API sends fields this mapper does not know)."""
    for k, v in d.items():
        if k not in mapped:
            rest[k] = v
    return rest


def _user(u: Any, where: str, event_id: str, users: list[str]) -> tuple[dict, dict | None]:
    """(ECS user fields, leftovers) of an actor user object {id, email}."""
    if type(u) is not dict:
        raise _unusable(where, event_id)
    uid = u.get("id")
    email = u.get("email")
    if type(uid) is str:
        if type(email) is str:
            users.append(uid)
            users.append(email)
            if len(u) == 2:
                return {"id": uid, "email": email}, None
            return {"id": uid, "email": email}, _rest(u, ("id", "email"), {})
        out: dict[str, Any] = {"id": uid}
        users.append(uid)
        return out, (None if len(u) == 1 else _rest(u, ("id",), {}))
    if type(email) is str:
        users.append(email)
        return {"email": email}, (None if len(u) == 1 else _rest(u, ("email",), {}))
    return {}, (dict(u) if u else None)


def _geo(d: dict[str, Any], source: dict[str, Any]) -> dict[str, Any] | None:
    """Fills source.geo / source.as from ip_address_details; returns the leftovers."""
    geo: dict[str, Any] = {}
    used = 0
    country = d.get("country")
    iso: str | None = None
    if type(country) is str:
        if len(country) == 2 and country.isascii() and country.isalpha():
            iso = country.upper()
            geo["country_iso_code"] = iso
        else:
            geo["country_name"] = country
        used += 1
    city = d.get("city")
    if type(city) is str:
        geo["city_name"] = city
        used += 1
    region = d.get("region")
    if type(region) is str:
        geo["region_name"] = region
        used += 1
    code = d.get("region_code")
    code_used = type(code) is str and code and iso is not None
    if code_used:
        geo["region_iso_code"] = iso + "-" + code
        used += 1
    lat = coordinate(d.get("latitude"), 90.0)
    lon = coordinate(d.get("longitude"), 180.0) if lat is not None else None
    if lon is not None:
        geo["location"] = {"lat": lat, "lon": lon}
        used += 2
    if geo:
        source["geo"] = geo
    asn = as_number(d.get("asn"))
    if asn is not None:
        source["as"] = {"number": asn}
        used += 1
    if used == len(d):
        return None
    mapped = [k for k, v in (("city", city), ("region", region)) if type(v) is str]
    if "country_iso_code" in geo or "country_name" in geo:
        mapped.append("country")
    if code_used:
        mapped.append("region_code")
    if lon is not None:
        mapped += ("latitude", "longitude")
    if asn is not None:
        mapped.append("asn")
    return _rest(d, tuple(mapped), {})


_SESSION_MAPPED = ("user", "ip_address", "user_agent", "ja3", "ja4", "ip_address_details")


def _session(s: Any, doc: dict[str, Any], event_id: str, users: list[str]) -> dict[str, Any] | None:
    """Fills user, source, user_agent, tls and related.ip from a session; returns leftovers
    (ja4, which ECS has no field for, and anything unexpected)."""
    if type(s) is not dict:
        raise _unusable("actor.session", event_id)
    rest: dict[str, Any] = {}
    used = 0
    u = s.get("user")
    if u is not None:
        user, user_rest = _user(u, "actor.session.user", event_id, users)
        if user:
            user["entity"] = PERSON
            doc["user"] = user
        if user_rest:
            rest["user"] = user_rest
        used += 1
    source: dict[str, Any] = {}
    ip = s.get("ip_address")
    if type(ip) is str and valid_ip(ip):
        source["ip"] = ip
        doc["related"] = {"ip": [ip]}
        used += 1
    elif ip is not None:
        rest["ip_address"] = ip
        used += 1
    ua = s.get("user_agent")
    if type(ua) is str:
        doc["user_agent"] = {"original": ua}
        used += 1
    elif ua is not None:
        rest["user_agent"] = ua
        used += 1
    ja3 = s.get("ja3")
    if type(ja3) is str:
        doc["tls"] = {"client": {"ja3": ja3}}
        used += 1
    elif ja3 is not None:
        rest["ja3"] = ja3
        used += 1
    ja4 = s.get("ja4")
    if ja4 is not None:
        rest["ja4"] = ja4
        used += 1
    details = s.get("ip_address_details")
    if details is not None:
        if type(details) is not dict:
            raise _unusable("actor.session.ip_address_details", event_id)
        geo_rest = _geo(details, source)
        if geo_rest:
            rest["ip_address_details"] = geo_rest
        used += 1
    if source:
        doc["source"] = source
    if used != len(s):
        for k, v in s.items():
            if k not in _SESSION_MAPPED or v is None:
                rest[k] = v
    return rest or None


def _api_key(k: Any, doc: dict[str, Any], event_id: str, users: list[str]) -> dict[str, Any]:
    """Fills user from an API key actor (its user or service account); returns leftovers,
    which always hold the key id and type (ECS has no field for them)."""
    if type(k) is not dict:
        raise _unusable("actor.api_key", event_id)
    rest: dict[str, Any] = {}
    used = 0
    kid = k.get("id")
    if kid is not None:
        rest["id"] = kid
        used += 1
    ktype = k.get("type")
    if ktype is not None:
        rest["type"] = ktype
        used += 1
    u = k.get("user")
    if u is not None:
        user, user_rest = _user(u, "actor.api_key.user", event_id, users)
        if user:
            user["entity"] = PERSON
            doc["user"] = user
        if user_rest:
            rest["user"] = user_rest
        used += 1
    sa = k.get("service_account")
    if sa is not None:
        if type(sa) is not dict:
            raise _unusable("actor.api_key.service_account", event_id)
        sid = sa.get("id")
        if type(sid) is str and "user" not in doc:
            doc["user"] = {"id": sid, "entity": SERVICE_ACCOUNT}
            users.append(sid)
            if len(sa) > 1:
                rest["service_account"] = _rest(sa, ("id",), {})
        elif sa:
            rest["service_account"] = sa
        used += 1
    if used != len(k):
        for key, v in k.items():
            if key not in ("id", "type", "user", "service_account") or v is None:
                rest[key] = v
    return rest


def _actor(actor: Any, doc: dict[str, Any], event_id: str, users: list[str]) -> dict | None:
    if type(actor) is not dict:
        raise MappingError("actor is neither an object nor null", event_id)
    rest: dict[str, Any] = {}
    used = 0
    atype = actor.get("type")
    if atype is not None:
        rest["type"] = atype
        used += 1
    s = actor.get("session")
    if s is not None:
        r = _session(s, doc, event_id, users)
        if r:
            rest["session"] = r
        used += 1
    k = actor.get("api_key")
    if k is not None:
        r = _api_key(k, doc, event_id, users)
        if r:
            rest["api_key"] = r
        used += 1
    if used != len(actor):
        for key, v in actor.items():
            if key not in ("type", "session", "api_key") or v is None:
                rest[key] = v
    return rest or None


def _user_target(
    plan: _Plan, t: CompiledTarget, payload: dict[str, Any], doc: dict[str, Any], users: list
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
            user = doc.get("user")
            user = dict(user) if user else {}  # the actor's may be shared: never mutate it
            user["changes"] = {"roles": [role]}
            doc["user"] = user
        else:
            target["roles"] = [role]
    if target:
        user = doc.get("user")
        user = dict(user) if user else {}
        user["target"] = target
        doc["user"] = user
    if mode == _PERSON_ENTITY and tid is not None:
        doc["entity"] = {"target": {"id": tid, "sub_type": plan.kind}}
    return plan.event


def _scope(t: CompiledTarget, payload: dict[str, Any], doc: dict[str, Any]) -> None:
    """The resource a role assignment is scoped to (a project, the organization)."""
    rid = t.resource_id(payload) if t.resource_id else None
    if rid is not None:
        rtype = t.resource_type(payload) if t.resource_type else None
        doc["entity"] = {"target": {"id": rid, "sub_type": rtype or "resource"}}


def _group_target(
    plan: _Plan, t: CompiledTarget, payload: dict[str, Any], doc: dict[str, Any], users: list
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
            user = doc.get("user")
            user = dict(user) if user else {}  # the actor's may be shared: never mutate it
            user["target"] = {"id": member}
            doc["user"] = user
            users.append(member)
    return plan.event


def _entity_target(
    plan: _Plan, t: CompiledTarget, payload: dict[str, Any], doc: dict[str, Any], users: list
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


# An actor's rendering, cached per distinct actor: (head, leftovers, related.user, related.ip
# object, related object to append at the end when the target names no further user).
# `head` is the start of every document of that actor: "@timestamp" and "event" are
# placeholders filled per event, then the actor's fields (user, related, source, ...) in place.
ActorRendering = tuple[dict[str, Any], dict | None, list[str], dict | None, dict | None]


def _render_actor(actor: Any, event_id: str) -> ActorRendering:
    parts: dict[str, Any] = {}
    users: list[str] = []
    rest = _actor(actor, parts, event_id, users) if actor is not None else None
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
    plans: dict[str, _Plan] = {}
    actor_cache: dict[bytes, ActorRendering] = {}
    dumps = orjson.dumps
    minute_prefixes = MINUTE_PREFIXES

    def plan_for(event_type: str) -> _Plan:
        plan = _Plan(spec_for(event_type))
        if len(plans) < 4096:  # unknown types are cached too, up to a bound
            plans[event_type] = plan
        return plan

    def map_ecs(event: dict[str, Any]) -> dict[str, Any]:
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
        extra = len(event) - 3
        actor = event.get("actor")
        if actor is not None:
            extra -= 1
            # Actors repeat (the same session or key across many events): their rendering is
            # cached by their exact JSON, and the rendered objects are shared between documents.
            try:
                key = dumps(actor)
            except TypeError:
                key = None
            rendering = actor_cache.get(key) if key is not None else None
            if rendering is None:
                rendering = _render_actor(actor, event_id)
                if key is not None:
                    if len(actor_cache) >= ACTOR_CACHE_SIZE:
                        actor_cache.clear()
                    actor_cache[key] = rendering
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
