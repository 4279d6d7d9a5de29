"""The ECS rendering of an event's actor: `user` (a session's user, an API key's user or
service account, with their ECS entity types), `source` with its geo and AS, `user_agent`,
`tls` and `related`; what ECS has no field for comes back as leftovers for
`openai.audit.actor`."""

from __future__ import annotations

from typing import Any

from mappings.registry import MappingError
from mappings.values import as_number, coordinate, valid_ip

# Who acted, as ECS 9 entity types: a person or a service account (ECS counts both as `user`
# entities); the sub-type is OpenAI's own word, as in actor.api_key.type.
PERSON = {"type": ["user"], "sub_type": "user"}
SERVICE_ACCOUNT = {"type": ["user"], "sub_type": "service_account"}


def _unusable(where: str, event_id: str) -> MappingError:
    return MappingError(f"{where} is not an object", event_id)


def _rest(d: dict[str, Any], mapped: tuple[str, ...], rest: dict[str, Any]) -> dict[str, Any]:
    """Adds the entries of d whose keys are not in `mapped`, or whose value is null, to rest
    (the slow path, taken only when the API sends fields this mapper does not know)."""
    for k, v in d.items():
        if k not in mapped or v is None:
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


def _person(
    u: Any, where: str, doc: dict[str, Any], rest: dict[str, Any], event_id: str, users: list[str]
) -> None:
    """Fills `user` (a person) from an actor user object; its leftovers go to rest["user"]."""
    user, user_rest = _user(u, where, event_id, users)
    if user:
        user["entity"] = PERSON
        doc["user"] = user
    if user_rest:
        rest["user"] = user_rest


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
        _person(u, "actor.session.user", doc, rest, event_id, users)
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
        _rest(s, _SESSION_MAPPED, rest)
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
        _person(u, "actor.api_key.user", doc, rest, event_id, users)
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
        _rest(k, ("id", "type", "user", "service_account"), rest)
    return rest


def render_actor(actor: Any, doc: dict[str, Any], event_id: str, users: list[str]) -> dict | None:
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
        _rest(actor, ("type", "session", "api_key"), rest)
    return rest or None
