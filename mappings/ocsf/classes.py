"""Which OCSF 1.8.0 Identity & Access Management class and activity a catalog entry is
(Account Change, Authentication, Entity Management, User Access, Group Management), and the
constant head of its documents (class, category, activity, type and status, with their
names)."""

from __future__ import annotations

from typing import Any

from mappings.catalog import Action, EventSpec, Realm

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
USER_KINDS = frozenset({"user", "service_account"})
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
    if kind in USER_KINDS:
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


def class_head(spec: EventSpec, class_uid: int, activity_id: int) -> dict[str, Any]:
    """The attributes every document of this entry, class and activity starts with."""
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
