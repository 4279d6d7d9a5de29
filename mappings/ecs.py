"""The `ecs` schema: renders catalog entries into Elastic Common Schema 9.x documents. Fields
ECS has no place for go under `openai.audit.*`, so no source value is lost."""

from __future__ import annotations

from typing import Any

from mappings.catalog import Action, EventSpec, Realm, spec_for
from mappings.registry import MapFunction, MappingContext, MappingError
from mappings.targets import CompiledTarget, item_ids
from mappings.values import as_number, coordinate, header, iso_time, str_list, valid_ip

ECS_VERSION = "9.4.0"
DATASET = "openai.audit"

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


class _Plan:
    """Everything about one event type that does not depend on the event."""

    __slots__ = (
        "action",
        "event",
        "event_group",
        "failure",
        "kind",
        "mode",
        "target",
        "update_roles",
    )

    def __init__(self, spec: EventSpec) -> None:
        self.action = spec.action
        self.event = self._event(spec, None)
        self.event_group = self._event(spec, Realm.GROUP)
        self.target = CompiledTarget(spec.target) if spec.target is not None else None
        self.update_roles = spec.action is Action.UPDATE
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


_USER_KEYS = ("id", "email")
_GEO_KEYS = frozenset({"country", "city", "region", "region_code", "asn", "latitude", "longitude"})


def _unusable(where: str, event_id: str) -> MappingError:
    return MappingError(f"{where} is not an object", event_id)


def _user(u: Any, where: str, event_id: str, users: list[str]) -> tuple[dict, dict | None]:
    """(ECS user fields, leftovers) of an actor user object."""
    if type(u) is not dict:
        raise _unusable(where, event_id)
    out: dict[str, Any] = {}
    uid = u.get("id")
    if type(uid) is str:
        out["id"] = uid
        users.append(uid)
    email = u.get("email")
    if type(email) is str:
        out["email"] = email
        users.append(email)
    if len(out) == len(u):
        return out, None
    rest = {k: v for k, v in u.items() if k not in out}
    return out, rest


def _geo(d: dict[str, Any], source: dict[str, Any]) -> dict[str, Any] | None:
    """Fills source.geo / source.as from ip_address_details; returns the leftovers."""
    geo: dict[str, Any] = {}
    used: list[str] = []
    country = d.get("country")
    if type(country) is str:
        if len(country) == 2 and country.isascii() and country.isalpha():
            country = country.upper()
            geo["country_iso_code"] = country
        else:
            geo["country_name"] = country
            country = None
        used.append("country")
    city = d.get("city")
    if type(city) is str:
        geo["city_name"] = city
        used.append("city")
    region = d.get("region")
    if type(region) is str:
        geo["region_name"] = region
        used.append("region")
    code = d.get("region_code")
    if type(code) is str and code and country is not None:
        geo["region_iso_code"] = f"{country}-{code}"
        used.append("region_code")
    lat = coordinate(d.get("latitude"), 90.0)
    lon = coordinate(d.get("longitude"), 180.0)
    if lat is not None and lon is not None:
        geo["location"] = {"lat": lat, "lon": lon}
        used.append("latitude")
        used.append("longitude")
    if geo:
        source["geo"] = geo
    asn = as_number(d.get("asn"))
    if asn is not None:
        source["as"] = {"number": asn}
        used.append("asn")
    if len(used) == len(d):
        return None
    return {k: v for k, v in d.items() if k not in used}


def _session(s: Any, doc: dict[str, Any], event_id: str, users: list[str]) -> dict[str, Any] | None:
    """Fills user, source, user_agent, tls and related.ip from a session; returns leftovers."""
    if type(s) is not dict:
        raise _unusable("actor.session", event_id)
    rest: dict[str, Any] = {}
    used = 0
    u = s.get("user")
    if u is not None:
        user, user_rest = _user(u, "actor.session.user", event_id, users)
        if user:
            doc["user"] = user
        if user_rest:
            rest["user"] = user_rest
        used += 1
    source: dict[str, Any] = {}
    ip = s.get("ip_address")
    if type(ip) is str and valid_ip(ip):
        source["ip"] = ip
        doc["related"]["ip"] = [ip]
        used += 1
    ua = s.get("user_agent")
    if type(ua) is str:
        doc["user_agent"] = {"original": ua}
        used += 1
    ja3 = s.get("ja3")
    if type(ja3) is str:
        doc["tls"] = {"client": {"ja3": ja3}}
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
        mapped = set()
        if u is not None:
            mapped.add("user")
        if details is not None:
            mapped.add("ip_address_details")
        if "ip" in source:
            mapped.add("ip_address")
        if "user_agent" in doc:
            mapped.add("user_agent")
        if "tls" in doc:
            mapped.add("ja3")
        for k, v in s.items():
            if k not in mapped:
                rest[k] = v
    return rest or None


def _api_key(k: Any, doc: dict[str, Any], event_id: str, users: list[str]) -> dict[str, Any] | None:
    """Fills user from an API key actor (its user or service account); returns leftovers, which
    always hold the key id and type (ECS has no field for them)."""
    if type(k) is not dict:
        raise _unusable("actor.api_key", event_id)
    rest: dict[str, Any] = {}
    for key, value in k.items():
        if key == "user" and value is not None:
            user, user_rest = _user(value, "actor.api_key.user", event_id, users)
            if user:
                doc["user"] = user
            if user_rest:
                rest["user"] = user_rest
        elif key == "service_account" and value is not None:
            if type(value) is not dict:
                raise _unusable("actor.api_key.service_account", event_id)
            sid = value.get("id")
            if type(sid) is str:
                doc.setdefault("user", {"id": sid})
                users.append(sid)
                if len(value) > 1:
                    rest["service_account"] = {k2: v for k2, v in value.items() if k2 != "id"}
            elif value:
                rest["service_account"] = value
        else:
            rest[key] = value
    return rest or None


def _actor(actor: Any, doc: dict[str, Any], event_id: str, users: list[str]) -> dict | None:
    if type(actor) is not dict:
        raise MappingError("actor is neither an object nor null", event_id)
    rest: dict[str, Any] = {}
    for key, value in actor.items():
        if key == "session" and value is not None:
            r = _session(value, doc, event_id, users)
        elif key == "api_key" and value is not None:
            r = _api_key(value, doc, event_id, users)
        else:
            rest[key] = value
            continue
        if r:
            rest[key] = r
    return rest or None


def _target(
    plan: _Plan, payload: dict[str, Any], doc: dict[str, Any], users: list[str]
) -> dict[str, Any]:
    """Renders the target; returns the event object to use (group variant for principals)."""
    t = plan.target
    assert t is not None
    mode = plan.mode
    event = plan.event
    tid = t.id(payload) if t.id else None
    if mode == _PRINCIPAL:
        ptype = t.principal_type(payload) if t.principal_type else None
        if ptype == "group":
            if tid is not None:
                doc["group"] = {"id": tid}
            return plan.event_group
        mode = _USER
    if mode in (_USER, _PERSON_ENTITY):
        target: dict[str, Any] = {}
        if mode == _USER and tid is not None:
            target["id"] = tid
            users.append(tid)
        name = t.name(payload) if t.name else None
        if name is not None:
            target["name"] = name
        email = t.email(payload) if t.email else None
        if email is not None:
            target["email"] = email
            users.append(email)
        role = t.roles(payload) if t.roles else None
        if role is None and t.privileges and plan.action is Action.GRANT:
            role = t.privileges(payload)
            role = role if type(role) is str else None
        if role is not None:
            if plan.update_roles or plan.action is Action.GRANT:
                doc["user"]["changes"] = {"roles": [role]}
            else:
                target["roles"] = [role]
        if target:
            doc["user"]["target"] = target
        if mode == _PERSON_ENTITY and tid is not None:
            doc["entity"] = {"target": {"id": tid, "sub_type": plan.kind}}
        return event
    if mode == _GROUP:
        group: dict[str, Any] = {}
        if tid is not None:
            group["id"] = tid
        name = t.name(payload) if t.name else None
        if name is not None:
            group["name"] = name
        if group:
            doc["group"] = group
        member = t.member(payload) if t.member else None
        if member is not None:
            doc["user"]["target"] = {"id": member}
            users.append(member)
        return event
    # _ENTITY
    entity: dict[str, Any] = {"sub_type": plan.kind}
    if t.items is not None:
        ids, names = item_ids(payload, t.items)
        if ids:
            entity["id"] = ids
        if names:
            entity["name"] = names
    else:
        if tid is not None:
            entity["id"] = tid
        name = t.name(payload) if t.name else None
        if name is not None:
            entity["name"] = name
    if t.privileges:
        privileges = str_list(t.privileges(payload))
        if privileges is not None:
            entity["attributes"] = {"permissions": privileges}
    doc["entity"] = {"target": entity}
    return event


_KNOWN_TOP = frozenset({"id", "type", "effective_at", "actor", "project"})


def make_mapper(context: MappingContext) -> MapFunction:
    org = context.organization_id
    plans: dict[str, _Plan] = {}

    def plan_for(event_type: str) -> _Plan:
        plan = _Plan(spec_for(event_type))
        if len(plans) < 4096:  # unknown types are cached too, up to a bound
            plans[event_type] = plan
        return plan

    def map_ecs(event: dict[str, Any]) -> dict[str, Any]:
        event_id, event_type, ts = header(event)
        plan = plans.get(event_type) or plan_for(event_type)
        users: list[str] = []
        related: dict[str, Any] = {}
        doc: dict[str, Any] = {
            "@timestamp": iso_time(ts),
            "ecs": {"version": ECS_VERSION},
            "event": None,
            "related": related,
        }
        oa: dict[str, Any] = {}
        extra = len(event) - 3
        actor = event.get("actor")
        if actor is not None:
            extra -= 1
            rest = _actor(actor, doc, event_id, users)
            if rest:
                oa["actor"] = rest
        elif "actor" in event:
            extra -= 1
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
        if payload is not None:
            extra -= 1
            if type(payload) is not dict:
                raise MappingError(f"payload {event_type!r} is not an object", event_id)
            oa["payload"] = payload
            if plan.target is not None:
                if "user" not in doc:
                    doc["user"] = {}
                ev = _target(plan, payload, doc, users)
                if not doc["user"]:
                    del doc["user"]
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
            known = _KNOWN_TOP | {event_type}
            oa["extra"] = {k: v for k, v in event.items() if k not in known}
        event_obj = dict(ev)
        event_obj["id"] = event_id
        doc["event"] = event_obj
        if org is not None:
            doc["organization"] = {"id": org}
        if users:
            related["user"] = users if len(users) == 1 else list(dict.fromkeys(users))
        if not related:
            del doc["related"]
        doc["openai"] = {"audit": oa}
        return doc

    return map_ecs
