"""The OCSF rendering of an event's actor: the acting user (a session's user, an API key's user
or service account, with the key as its programmatic credential), `src_endpoint` with its
location and TLS fingerprints, and `http_request`; what has no OCSF attribute comes back as
leftovers for `unmapped`."""

from __future__ import annotations

from typing import Any

from mappings.ocsf.classes import OTHER
from mappings.registry import MappingError
from mappings.values import as_number, coordinate, valid_email, valid_ip


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


def render_actor(actor: Any, doc: dict[str, Any], event_id: str) -> dict[str, Any] | None:
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
