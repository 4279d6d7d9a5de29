"""The event catalog: one entry for every documented type, and verb-suffix rules that give unknown
types a sensible meaning; spot checks of what the ECS and OCSF renderers make of key types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings.catalog import CATALOG, Action, Realm, spec_for, split_type
from mappings.registry import MappingContext, load_mapper
from tests.fakes.events import make_event
from tests.test_mapping_schemas import ecs_problems, ocsf_problems

ENUM = json.loads((Path(__file__).parent / "data" / "openai-audit-log.openapi.json").read_text())[
    "components"
]["schemas"]["AuditLogEventType"]["enum"]
T0 = 1_720_804_090


@pytest.fixture(scope="module")
def ecs():
    return load_mapper("ecs", MappingContext(organization_id="org-1"))


@pytest.fixture(scope="module")
def ocsf():
    return load_mapper("ocsf", MappingContext(organization_id="org-1"))


def test_catalog_has_exactly_the_documented_event_types_tenant_ones_included() -> None:
    assert set(CATALOG) == set(ENUM)
    assert any(t.startswith("tenant.") for t in CATALOG)
    assert all(spec.known for spec in CATALOG.values())


def test_tenant_prefix_is_not_part_of_the_noun() -> None:
    assert split_type("tenant.group.member.added") == ("group.member", "added")
    assert CATALOG["tenant.user.removed"].noun == "user"
    assert split_type("login.failed") == ("login", "failed")


@pytest.mark.parametrize(
    ("verb", "action"),
    [
        ("created", Action.CREATE),
        ("added", Action.CREATE),
        ("registered", Action.CREATE),
        ("sent", Action.CREATE),
        ("issued", Action.CREATE),
        ("updated", Action.UPDATE),
        ("changed", Action.UPDATE),
        ("accepted", Action.UPDATE),
        ("rotated", Action.UPDATE),
        ("bound", Action.UPDATE),
        ("unbound", Action.UPDATE),
        ("deleted", Action.DELETE),
        ("removed", Action.DELETE),
        ("revoked", Action.DELETE),
        ("enabled", Action.ENABLE),
        ("activated", Action.ENABLE),
        ("disabled", Action.DISABLE),
        ("deactivated", Action.DISABLE),
        ("archived", Action.DISABLE),
    ],
)
def test_unknown_types_take_their_action_from_the_verb_suffix(verb: str, action: Action) -> None:
    for event_type in (f"widget.{verb}", f"tenant.widget.part.{verb}"):
        spec = spec_for(event_type)
        assert not spec.known
        assert spec.action is action
        assert spec.outcome == "success"
        assert spec.noun in ("widget", "widget.part")


def test_unknown_succeeded_and_failed_types_carry_the_outcome() -> None:
    assert spec_for("widget.sync.succeeded").outcome == "success"
    assert spec_for("widget.sync.failed").outcome == "failure"
    assert spec_for("widget.sync.purged").outcome == "unknown"
    assert spec_for("widget.sync.purged").action is Action.OTHER


def test_unknown_types_land_in_entity_management_with_the_matching_activity(ocsf, ecs) -> None:
    cases = {
        "widget.created": 1,
        "widget.updated": 3,
        "widget.deleted": 4,
        "widget.enabled": 8,
        "widget.archived": 9,
        "widget.purged": 99,
    }
    for event_type, activity in cases.items():
        event = {"id": "a1", "type": event_type, "effective_at": T0, event_type: {"id": "w1"}}
        doc = ocsf(event)
        assert (doc["class_uid"], doc["activity_id"]) == (3004, activity), event_type
        assert doc["entity"]["uid"] == "w1"
        if activity == 99:
            assert doc["activity_name"] == event_type
        assert not ocsf_problems(doc)
        assert not ecs_problems(ecs(event))


def test_unknown_failed_type_reports_failure_with_the_error(ocsf, ecs) -> None:
    event = {
        "id": "a2",
        "type": "tenant.export.failed",
        "effective_at": T0,
        "tenant.export.failed": {"error_code": "quota", "error_message": "Quota exceeded"},
    }
    o, e = ocsf(event), ecs(event)
    assert (o["status_id"], o["status_code"], o["status_detail"]) == (2, "quota", "Quota exceeded")
    assert e["event"]["outcome"] == "failure"
    assert e["error"] == {"code": "quota", "message": "Quota exceeded"}


def test_realms_follow_the_catalog() -> None:
    assert CATALOG["login.succeeded"].realm is Realm.AUTHENTICATION
    assert CATALOG["group.created"].realm is Realm.GROUP
    assert CATALOG["api_key.created"].realm is Realm.ACCESS
    assert CATALOG["project.archived"].realm is Realm.CONFIGURATION
    assert CATALOG["user.deleted"].realm is Realm.USER


# --- spot checks (acceptance point 2) -----------------------------------------------------------


def test_login_failed_is_a_failed_authentication_start_with_the_error(ecs, ocsf) -> None:
    event = make_event("login.failed", T0, seq=1, actor="session")
    payload = event["login.failed"]
    e = ecs(event)
    assert list(e["event"]["category"]) == ["authentication", "session"]
    assert list(e["event"]["type"]) == ["start"]
    assert e["event"]["outcome"] == "failure"
    assert e["error"] == {"code": payload["error_code"], "message": payload["error_message"]}
    assert e["user"]["id"] == event["actor"]["session"]["user"]["id"]
    assert e["source"]["ip"] == event["actor"]["session"]["ip_address"]
    o = ocsf(event)
    assert (o["class_uid"], o["activity_id"], o["type_uid"]) == (3002, 1, 300201)
    assert (o["status_id"], o["status"]) == (2, "Failure")
    assert o["status_code"] == payload["error_code"]
    assert o["status_detail"] == payload["error_message"]
    assert o["user"]["uid"] == event["actor"]["session"]["user"]["id"]
    assert o["service"]["name"]
    assert o["src_endpoint"]["ip"] == event["actor"]["session"]["ip_address"]


def test_logout_is_an_authentication_end_and_logoff(ecs, ocsf) -> None:
    event = make_event("logout.succeeded", T0, seq=2, actor="session")
    assert list(ecs(event)["event"]["type"]) == ["end"]
    assert ecs(event)["event"]["outcome"] == "success"
    assert (ocsf(event)["class_uid"], ocsf(event)["activity_id"]) == (3002, 2)


def test_api_key_created_is_iam_creation_and_entity_create_with_key_and_scopes(ecs, ocsf) -> None:
    event = make_event("api_key.created", T0, seq=3, actor="api_key_user")
    payload = event["api_key.created"]
    e = ecs(event)
    assert list(e["event"]["category"]) == ["iam"]
    assert "creation" in e["event"]["type"]
    assert e["entity"]["target"]["id"] == payload["id"]
    assert e["entity"]["target"]["attributes"]["permissions"] == payload["data"]["scopes"]
    o = ocsf(event)
    assert (o["class_uid"], o["activity_id"]) == (3004, 1)
    assert o["entity"]["uid"] == payload["id"]
    assert o["entity"]["type"] == "api_key"
    assert o["entity"]["data"]["scopes"] == payload["data"]["scopes"]
    assert (
        o["actor"]["user"]["programmatic_credentials"][0]["uid"] == event["actor"]["api_key"]["id"]
    )


def test_user_deleted_is_account_delete_of_the_target_user(ecs, ocsf) -> None:
    event = make_event("user.deleted", T0, seq=4, actor="session")
    target = event["user.deleted"]["id"]
    o = ocsf(event)
    assert (o["class_uid"], o["activity_id"]) == (3001, 6)
    assert o["user"]["uid"] == target
    e = ecs(event)
    assert list(e["event"]["type"]) == ["deletion", "user"]
    assert e["user"]["target"]["id"] == target
    assert target in e["related"]["user"]


def test_project_archived_is_a_configuration_change_and_entity_disable(ecs, ocsf) -> None:
    event = make_event("project.archived", T0, seq=5, actor="api_key_service_account")
    e = ecs(event)
    assert (list(e["event"]["category"]), list(e["event"]["type"])) == (
        ["configuration"],
        ["change"],
    )
    o = ocsf(event)
    assert (o["class_uid"], o["activity_id"], o["activity_name"]) == (3004, 9, "Disable")
    assert o["entity"] == {"type": "project", "uid": event["project.archived"]["id"]}


def test_role_assignment_goes_to_user_access_or_group_management_by_principal(ocsf) -> None:
    base = {"id": "a", "type": "role.assignment.created", "effective_at": T0}
    payload = {"id": "ra_1", "principal_id": "user-1", "resource_id": "proj_1"}
    user = ocsf({**base, "role.assignment.created": {**payload, "principal_type": "user"}})
    assert (user["class_uid"], user["activity_id"]) == (3005, 1)
    assert user["user"] == {"uid": "user-1"}
    assert user["privileges"] == ["ra_1"]
    # User Access Management: `resources` (its `resource` is deprecated since OCSF 1.5).
    assert user["resources"] == [{"uid": "proj_1"}]
    assert "resource" not in user
    group = ocsf(
        {
            **base,
            "role.assignment.created": {
                **payload,
                "principal_type": "group",
                "role_name": "r",
                "resource_type": "api.project",
            },
        }
    )
    assert (group["class_uid"], group["activity_id"]) == (3006, 1)
    assert group["group"] == {"uid": "user-1"}
    assert group["privileges"] == ["r"]
    assert group["resource"] == {"uid": "proj_1", "type": "api.project"}
    revoke = ocsf(
        {
            **base,
            "type": "role.assignment.deleted",
            "role.assignment.deleted": {**payload, "principal_type": "user"},
        }
    )
    assert (revoke["class_uid"], revoke["activity_id"]) == (3005, 2)


def test_user_role_change_is_user_access_but_other_updates_are_account_change(ocsf, ecs) -> None:
    base = {"id": "a", "type": "user.updated", "effective_at": T0}
    role = {**base, "user.updated": {"id": "user-1", "changes_requested": {"role": "owner"}}}
    o = ocsf(role)
    assert (o["class_uid"], o["activity_id"], o["privileges"]) == (3005, 1, ["owner"])
    assert ecs(role)["user"]["changes"]["roles"] == ["owner"]
    other = ocsf({**base, "user.updated": {"id": "user-1", "changes_requested": {"x": 1}}})
    assert (other["class_uid"], other["activity_id"]) == (3001, 99)
    assert other["activity_name"] == "user.updated"


def test_group_events_are_group_management(ocsf, ecs) -> None:
    created = make_event("group.created", T0, seq=6, actor="session")
    o = ocsf(created)
    assert (o["class_uid"], o["activity_id"]) == (3006, 6)
    assert o["group"]["uid"] == created["group.created"]["id"]
    assert o["group"]["name"] == created["group.created"]["data"]["group_name"]
    e = ecs(created)
    assert list(e["event"]["type"]) == ["creation", "group"]
    assert e["group"]["id"] == created["group.created"]["id"]
    member = make_event("tenant.group.member.added", T0, seq=7, actor="null")
    o = ocsf(member)
    assert (o["class_uid"], o["activity_id"]) == (3006, 3)
    assert o["user"]["uid"] == member["tenant.group.member.added"]["data"]["user_id"]


def test_session_geo_becomes_typed_source_fields(ecs, ocsf) -> None:
    event = make_event("project.created", T0, seq=8, actor="session")
    details = event["actor"]["session"]["ip_address_details"]
    e = ecs(event)
    assert e["source"]["geo"]["location"] == {
        "lat": float(details["latitude"]),
        "lon": float(details["longitude"]),
    }
    assert e["source"]["as"]["number"] == int(details["asn"])
    assert e["source"]["geo"]["country_iso_code"] == details["country"]
    assert e["tls"]["client"]["ja3"] == event["actor"]["session"]["ja3"]
    assert e["openai"]["audit"]["actor"]["session"]["ja4"] == event["actor"]["session"]["ja4"]
    assert e["related"]["ip"] == [event["actor"]["session"]["ip_address"]]
    loc = ocsf(event)["src_endpoint"]["location"]
    assert (loc["lat"], loc["long"]) == (float(details["latitude"]), float(details["longitude"]))


def test_an_invalid_ip_is_kept_under_openai_audit_not_in_source_ip(ecs, ocsf) -> None:
    event = make_event("project.created", T0, seq=9, actor="session")
    event["actor"]["session"]["ip_address"] = "10.0.0.300"
    e = ecs(event)
    assert "ip" not in e.get("source", {})
    assert "ip" not in e.get("related", {})
    assert e["openai"]["audit"]["actor"]["session"]["ip_address"] == "10.0.0.300"
    assert not ecs_problems(e)
    o = ocsf(event)
    assert "src_endpoint" not in o
    assert o["unmapped"]["actor"]["session"]["ip_address"] == "10.0.0.300"
    assert not ocsf_problems(o)


# --- fields peers surface (issue 12) ------------------------------------------------------------


def test_the_object_field_of_real_events_is_known_not_an_extra(ecs, ocsf) -> None:
    event = make_event("project.created", T0, seq=3, actor="session")
    assert event["object"] == "organization.audit_log"
    e, o = ecs(event), ocsf(event)
    assert e["openai"]["audit"]["object"] == "organization.audit_log"
    assert "extra" not in e["openai"]["audit"]
    assert o["metadata"]["log_name"] == "organization.audit_log"
    assert "extra" not in o.get("unmapped", {})
    # A field the API adds one day still lands in `extra`, and only that one.
    added = ecs({**event, "request_id": "req_1"})["openai"]["audit"]["extra"]
    assert added == {"request_id": "req_1"}
    assert ocsf({**event, "request_id": "req_1"})["unmapped"]["extra"] == {"request_id": "req_1"}


def test_a_service_account_actor_is_flagged_in_standard_fields(ecs, ocsf) -> None:
    kinds = {
        "session": ("user", 1, "User"),
        "api_key_user": ("user", 1, "User"),
        "api_key_service_account": ("service_account", 4, "Service"),
    }
    for actor, (sub_type, type_id, type_name) in kinds.items():
        event = make_event("api_key.deleted", T0, seq=7, actor=actor)
        e, o = ecs(event), ocsf(event)
        assert e["user"]["entity"] == {"type": ["user"], "sub_type": sub_type}, actor
        assert (o["actor"]["user"]["type_id"], o["actor"]["user"]["type"]) == (type_id, type_name)
        assert not ecs_problems(e) and not ocsf_problems(o)
    assert "user" not in ecs(make_event("api_key.deleted", T0, seq=7, actor="null"))


def test_organization_updated_names_its_target_from_the_requested_change(ecs, ocsf) -> None:
    base = {"id": "a", "type": "organization.updated", "effective_at": T0}
    for changes, name in (
        ({"title": "Acme"}, "Acme"),
        ({"name": "acme-org", "title": "A"}, "acme-org"),
    ):
        event = {**base, "organization.updated": {"id": "org-1", "changes_requested": changes}}
        assert ecs(event)["entity"]["target"] == {
            "id": "org-1",
            "name": name,
            "sub_type": "organization",
        }
        assert ocsf(event)["entity"]["name"] == name
        assert ocsf(event)["entity_result"]["data"] == changes  # the payload stays whole


def test_role_assignment_surfaces_its_scope_and_role(ecs, ocsf) -> None:
    base = {"id": "a", "type": "role.assignment.created", "effective_at": T0}
    payload = {
        "id": "ra_1",
        "principal_id": "user-1",
        "principal_type": "user",
        "resource_id": "proj_1",
        "resource_type": "api.project",
    }
    e = ecs({**base, "role.assignment.created": payload})
    assert e["entity"]["target"] == {"id": "proj_1", "sub_type": "api.project"}
    assert e["user"]["target"]["id"] == "user-1"
    assert "changes" not in e["user"]  # the documented payload names no role
    with_role = {**base, "role.assignment.created": {**payload, "role_name": "Auditor"}}
    assert ecs(with_role)["user"]["changes"]["roles"] == ["Auditor"]
    assert ocsf(with_role)["privileges"] == ["Auditor"]
    revoke = {**base, "type": "role.assignment.deleted", "role.assignment.deleted": payload}
    assert ecs(revoke)["entity"]["target"]["id"] == "proj_1"
    assert ocsf(revoke)["resources"] == [{"uid": "proj_1", "type": "api.project"}]
    service = {**payload, "principal_id": "svc_1", "principal_type": "service_account"}
    s = ecs({**base, "role.assignment.created": service})
    assert s["user"]["target"] == {
        "id": "svc_1",
        "entity": {"type": ["user"], "sub_type": "service_account"},
    }
    assert ocsf({**base, "role.assignment.created": service})["user"]["type_id"] == 4
    for doc in (e, ecs(with_role), ecs(revoke), s):
        assert not ecs_problems(doc)
    assert e["openai"]["audit"]["payload"] == payload  # kept whole


def test_ip_allowlist_ranges_are_surfaced_on_the_target(ecs, ocsf) -> None:
    ranges = ["0.0.0.0/0", "2001:db8::/48"]
    for verb in ("created", "updated", "deleted"):
        event_type = f"ip_allowlist.{verb}"
        event = {
            "id": "a",
            "type": event_type,
            "effective_at": T0,
            event_type: {"id": "ipal_1", "name": "Office", "allowed_ips": ranges},
        }
        e, o = ecs(event), ocsf(event)
        assert e["entity"]["target"]["raw"] == {"allowed_ips": ranges}, verb
        assert e["openai"]["audit"]["payload"]["allowed_ips"] == ranges  # kept whole
        where = o["entity_result"] if verb == "updated" else o["entity"]
        assert where["data"] == {"allowed_ips": ranges}, verb
        assert not ecs_problems(e) and not ocsf_problems(o)
