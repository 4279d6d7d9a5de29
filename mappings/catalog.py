"""What every audit-log event type means, stated once and schema-neutral: resource noun, verb,
action, realm, outcome and which payload fields name the target. ECS and OCSF render it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Path = tuple[str, ...]


class Action(StrEnum):
    """What happened to the target."""

    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"
    ENABLE = "enable"
    DISABLE = "disable"
    LOGON = "logon"
    LOGOFF = "logoff"
    GRANT = "grant"  # privileges assigned to a principal (user or group)
    REVOKE = "revoke"  # privileges taken from a principal
    ADD_MEMBER = "add_member"  # a user joins a group
    REMOVE_MEMBER = "remove_member"
    OTHER = "other"


class Realm(StrEnum):
    """The area the event belongs to; decides ECS category and the IAM flavour."""

    AUTHENTICATION = "authentication"  # sign-in and sign-out of a person
    USER = "user"  # user and service accounts, invites, memberships
    GROUP = "group"  # groups and their members
    ACCESS = "access"  # keys, roles, permissions, identity providers, policies, SSO, SCIM
    CONFIGURATION = "configuration"  # projects, limits, allowlists, certificates, settings


@dataclass(frozen=True)
class Target:
    """Where the payload names the thing acted on. Each field is a tuple of alternative paths
    into the payload; the first one that holds a usable value wins."""

    kind: str
    id: tuple[Path, ...] = (("id",),)
    name: tuple[Path, ...] = (("name",),)
    email: tuple[Path, ...] = ()
    roles: tuple[Path, ...] = ()  # a role string given to the target
    privileges: tuple[Path, ...] = ()  # a list of permission / scope strings
    items: Path | None = None  # a list of {id, name} objects (several targets at once)
    principal_type: tuple[Path, ...] = ()  # role assignments: "user" | "group" | ...
    member: tuple[Path, ...] = ()  # group membership: the user id
    resource_id: tuple[Path, ...] = ()
    resource_type: tuple[Path, ...] = ()
    # Named values that describe the target or the change asked for, each read from alternative
    # payload paths: what detections look at (an allowlist's CIDRs, the API-call logging mode,
    # rate limits, a role's scope). ECS puts numbers in entity.target.metrics and the rest in
    # entity.target.raw; OCSF puts them in entity.data (entity_result.data for updates).
    details: tuple[tuple[str, tuple[Path, ...]], ...] = ()


@dataclass(frozen=True)
class EventSpec:
    """One event type. `known` is False for types resolved by the verb-suffix rules."""

    type: str
    noun: str
    verb: str
    action: Action
    realm: Realm
    outcome: str  # "success" | "failure" | "unknown"
    target: Target | None
    known: bool = True
    error_code: tuple[Path, ...] = field(default=())
    error_message: tuple[Path, ...] = field(default=())


# --- the table --------------------------------------------------------------------------------

A, R = Action, Realm
_DATA_OR_CHANGES = ("data", "changes_requested")


def _p(*alternatives: str) -> tuple[Path, ...]:
    """Paths written as dotted strings: _p("data.group_name", "group_name")."""
    return tuple(tuple(a.split(".")) for a in alternatives)


def _t(kind: str, **kw: Any) -> Target:
    return Target(kind=kind, **kw)


_ERR = {"error_code": _p("error_code"), "error_message": _p("error_message")}
_NAME_ANY = _p("name", "data.name", "changes_requested.name")
_USER_T = {
    "email": _p("email", "data.email", "changes_requested.email"),
    "roles": _p("data.role", "changes_requested.role", "role"),
    "name": _p("name", "data.name"),
}
_GROUP_T = {"name": _p("data.group_name", "changes_requested.group_name", "group_name", "name")}
_ASSIGN_T = {
    "id": _p("principal_id", "data.principal_id"),
    "name": (),
    "principal_type": _p("principal_type", "data.principal_type"),
    "privileges": _p("role_name", "data.role_name", "role_id", "data.role_id", "role"),
    "resource_id": _p("resource_id", "data.resource_id"),
    "resource_type": _p("resource_type", "data.resource_type"),
}


def _d(*names: str, under: str = "") -> tuple[tuple[str, tuple[Path, ...]], ...]:
    """Details read from the payload keys of the same name (under `under.` when given)."""
    return tuple((n, _p(f"{under}.{n}" if under else n)) for n in names)


# The CIDR ranges of an allowlist: what detections look at (0.0.0.0/0 opens it to everyone).
_IPAL_T = {"details": _d("allowed_ips")}
# The settings organization.updated may change: API-call logging is an audit trail of its own.
_ORG_SETTINGS = _d(
    "api_call_logging",
    "api_call_logging_project_ids",
    "threads_ui_visibility",
    "usage_dashboard_visibility",
    under="changes_requested",
)
_RATE_LIMITS = _d(
    "max_requests_per_1_minute",
    "max_tokens_per_1_minute",
    "max_images_per_1_minute",
    "max_audio_megabytes_per_1_minute",
    "max_requests_per_1_day",
    "batch_1_day_max_input_tokens",
    under="changes_requested",
)
# What a role grants and its scope (api.organization or api.project).
_ROLE_BINDING = _d("permissions", "resource_type", "resource_id")
_ROLE_CHANGE = (
    *_d("resource_type", "resource_id", under="changes_requested"),
    ("permissions_removed", _p("changes_requested.permissions_removed")),
)
_WIP_MAPPING_T = {"details": _d("identity_provider_id")}

# type: (action, realm, target, extra spec fields)
_TABLE: dict[str, tuple[Action, Realm, Target | None, dict[str, Any]]] = {
    "api_key.created": (A.CREATE, R.ACCESS, _t("api_key", privileges=_p("data.scopes")), {}),
    "api_key.updated": (
        A.UPDATE,
        R.ACCESS,
        _t("api_key", privileges=_p("changes_requested.scopes", "data.scopes")),
        {},
    ),
    "api_key.deleted": (A.DELETE, R.ACCESS, _t("api_key"), {}),
    "certificate.created": (A.CREATE, R.CONFIGURATION, _t("certificate"), {}),
    "certificate.updated": (A.UPDATE, R.CONFIGURATION, _t("certificate"), {}),
    "certificate.deleted": (A.DELETE, R.CONFIGURATION, _t("certificate"), {}),
    "certificates.activated": (
        A.ENABLE,
        R.CONFIGURATION,
        _t("certificate", items=("certificates",)),
        {},
    ),
    "certificates.deactivated": (
        A.DISABLE,
        R.CONFIGURATION,
        _t("certificate", items=("certificates",)),
        {},
    ),
    "checkpoint.permission.created": (
        A.CREATE,
        R.ACCESS,
        _t("checkpoint_permission", name=_p("data.fine_tuned_model_checkpoint")),
        {},
    ),
    "checkpoint.permission.deleted": (A.DELETE, R.ACCESS, _t("checkpoint_permission"), {}),
    "external_key.registered": (A.CREATE, R.CONFIGURATION, _t("external_key"), {}),
    "external_key.removed": (A.DELETE, R.CONFIGURATION, _t("external_key"), {}),
    "group.created": (A.CREATE, R.GROUP, _t("group", **_GROUP_T), {}),
    "group.updated": (A.UPDATE, R.GROUP, _t("group", **_GROUP_T), {}),
    "group.deleted": (A.DELETE, R.GROUP, _t("group", **_GROUP_T), {}),
    "invite.sent": (A.CREATE, R.USER, _t("invite", **_USER_T), {}),
    "invite.accepted": (A.UPDATE, R.USER, _t("invite", **_USER_T), {}),
    "invite.deleted": (A.DELETE, R.USER, _t("invite", **_USER_T), {}),
    "ip_allowlist.created": (A.CREATE, R.CONFIGURATION, _t("ip_allowlist", **_IPAL_T), {}),
    "ip_allowlist.updated": (A.UPDATE, R.CONFIGURATION, _t("ip_allowlist", **_IPAL_T), {}),
    "ip_allowlist.deleted": (A.DELETE, R.CONFIGURATION, _t("ip_allowlist", **_IPAL_T), {}),
    "ip_allowlist.config.activated": (
        A.ENABLE,
        R.CONFIGURATION,
        _t("ip_allowlist", items=("configs",)),
        {},
    ),
    "ip_allowlist.config.deactivated": (
        A.DISABLE,
        R.CONFIGURATION,
        _t("ip_allowlist", items=("configs",)),
        {},
    ),
    "login.succeeded": (A.LOGON, R.AUTHENTICATION, None, {}),
    "login.failed": (A.LOGON, R.AUTHENTICATION, None, _ERR),
    "logout.succeeded": (A.LOGOFF, R.AUTHENTICATION, None, {}),
    "logout.failed": (A.LOGOFF, R.AUTHENTICATION, None, _ERR),
    "organization.updated": (
        A.UPDATE,
        R.CONFIGURATION,
        _t(
            "organization",
            name=_p("name", "changes_requested.name", "changes_requested.title"),
            details=_ORG_SETTINGS,
        ),
        {},
    ),
    "project.created": (A.CREATE, R.CONFIGURATION, _t("project", name=_p("data.name")), {}),
    "project.updated": (
        A.UPDATE,
        R.CONFIGURATION,
        _t("project", name=_p("changes_requested.title")),
        {},
    ),
    "project.archived": (A.DISABLE, R.CONFIGURATION, _t("project"), {}),
    "project.deleted": (A.DELETE, R.CONFIGURATION, _t("project"), {}),
    "rate_limit.updated": (
        A.UPDATE,
        R.CONFIGURATION,
        _t("rate_limit", details=_RATE_LIMITS),
        {},
    ),
    "rate_limit.deleted": (A.DELETE, R.CONFIGURATION, _t("rate_limit"), {}),
    "resource.deleted": (A.DELETE, R.CONFIGURATION, _t("resource"), {}),
    "tunnel.created": (A.CREATE, R.CONFIGURATION, _t("tunnel", name=_NAME_ANY), {}),
    "tunnel.updated": (A.UPDATE, R.CONFIGURATION, _t("tunnel", name=_NAME_ANY), {}),
    "tunnel.deleted": (A.DELETE, R.CONFIGURATION, _t("tunnel"), {}),
    "workload_identity_provider.created": (
        A.CREATE,
        R.ACCESS,
        _t("workload_identity_provider", name=_NAME_ANY),
        {},
    ),
    "workload_identity_provider.updated": (
        A.UPDATE,
        R.ACCESS,
        _t("workload_identity_provider", name=_NAME_ANY),
        {},
    ),
    "workload_identity_provider.deleted": (
        A.DELETE,
        R.ACCESS,
        _t("workload_identity_provider"),
        {},
    ),
    "workload_identity_provider_mapping.created": (
        A.CREATE,
        R.ACCESS,
        _t("workload_identity_provider_mapping", **_WIP_MAPPING_T),
        {},
    ),
    "workload_identity_provider_mapping.updated": (
        A.UPDATE,
        R.ACCESS,
        _t("workload_identity_provider_mapping", **_WIP_MAPPING_T),
        {},
    ),
    "workload_identity_provider_mapping.deleted": (
        A.DELETE,
        R.ACCESS,
        _t("workload_identity_provider_mapping", **_WIP_MAPPING_T),
        {},
    ),
    "role.created": (
        A.CREATE,
        R.ACCESS,
        _t("role", name=_p("role_name"), privileges=_p("permissions"), details=_ROLE_BINDING),
        {},
    ),
    "role.updated": (
        A.UPDATE,
        R.ACCESS,
        _t(
            "role",
            name=_p("changes_requested.role_name"),
            privileges=_p("changes_requested.permissions_added"),
            details=_ROLE_CHANGE,
        ),
        {},
    ),
    "role.deleted": (A.DELETE, R.ACCESS, _t("role"), {}),
    "role.assignment.created": (A.GRANT, R.USER, _t("principal", **_ASSIGN_T), {}),
    "role.assignment.deleted": (A.REVOKE, R.USER, _t("principal", **_ASSIGN_T), {}),
    "role.bound_to_resource": (
        A.UPDATE,
        R.ACCESS,
        _t(
            "role",
            id=_p("role_id"),
            name=(),
            privileges=_p("permissions"),
            resource_id=_p("resource_id"),
            resource_type=_p("resource_type"),
            details=_ROLE_BINDING,
        ),
        {},
    ),
    "role.unbound_from_resource": (
        A.UPDATE,
        R.ACCESS,
        _t(
            "role",
            id=_p("role_id"),
            name=(),
            privileges=_p("permissions"),
            resource_id=_p("resource_id"),
            resource_type=_p("resource_type"),
            details=_ROLE_BINDING,
        ),
        {},
    ),
    "scim.enabled": (A.ENABLE, R.ACCESS, _t("scim"), {}),
    "scim.disabled": (A.DISABLE, R.ACCESS, _t("scim"), {}),
    "service_account.created": (A.CREATE, R.USER, _t("service_account", **_USER_T), {}),
    "service_account.updated": (A.UPDATE, R.USER, _t("service_account", **_USER_T), {}),
    "service_account.deleted": (A.DELETE, R.USER, _t("service_account", **_USER_T), {}),
    "user.added": (A.CREATE, R.USER, _t("user", **_USER_T), {}),
    # The excerpt documents user.updated's `id` as "the project ID"; the API sends the user id.
    "user.updated": (A.UPDATE, R.USER, _t("user", **_USER_T), {}),
    "user.deleted": (A.DELETE, R.USER, _t("user", **_USER_T), {}),
}

# Tenant-scoped types: the excerpt documents no payloads for them, so targets use the shapes the
# documented types use (id, name, data.* on create, changes_requested.* on update).
_TENANT: dict[str, tuple[Action, Realm, str]] = {
    "metadata.updated": (A.UPDATE, R.CONFIGURATION, "tenant"),
    "microsoft_entra_mapping.upserted": (A.UPDATE, R.ACCESS, "microsoft_entra_mapping"),
    "microsoft_entra_mapping.deleted": (A.DELETE, R.ACCESS, "microsoft_entra_mapping"),
    "workload_identity.provider.created": (A.CREATE, R.ACCESS, "workload_identity_provider"),
    "workload_identity.provider.updated": (A.UPDATE, R.ACCESS, "workload_identity_provider"),
    "workload_identity.provider.archived": (A.DISABLE, R.ACCESS, "workload_identity_provider"),
    "workload_identity.mapping.created": (A.CREATE, R.ACCESS, "workload_identity_mapping"),
    "workload_identity.mapping.updated": (A.UPDATE, R.ACCESS, "workload_identity_mapping"),
    "workload_identity.mapping.archived": (A.DISABLE, R.ACCESS, "workload_identity_mapping"),
    "workload_identity.binding.created": (A.CREATE, R.ACCESS, "workload_identity_binding"),
    "workload_identity.principal.provisioned": (
        A.CREATE,
        R.ACCESS,
        "workload_identity_principal",
    ),
    "workload_identity.access_token.issued": (A.CREATE, R.ACCESS, "access_token"),
    "admin_api_key.created": (A.CREATE, R.ACCESS, "admin_api_key"),
    "admin_api_key.updated": (A.UPDATE, R.ACCESS, "admin_api_key"),
    "admin_api_key.deleted": (A.DELETE, R.ACCESS, "admin_api_key"),
    "project_api_key.created": (A.CREATE, R.ACCESS, "api_key"),
    "chatgpt_access_token.revoked": (A.DELETE, R.ACCESS, "access_token"),
    "migration.completed": (A.UPDATE, R.CONFIGURATION, "tenant"),
    "sso.migrated": (A.UPDATE, R.ACCESS, "sso"),
    "domains.migrated": (A.UPDATE, R.CONFIGURATION, "domain"),
    "sso_connection.created": (A.CREATE, R.ACCESS, "sso_connection"),
    "sso_connection.updated": (A.UPDATE, R.ACCESS, "sso_connection"),
    "sso_connection.deleted": (A.DELETE, R.ACCESS, "sso_connection"),
    "sso_connection.setup.started": (A.OTHER, R.ACCESS, "sso_connection"),
    "policy.created": (A.CREATE, R.ACCESS, "policy"),
    "policy.updated": (A.UPDATE, R.ACCESS, "policy"),
    "policy.deleted": (A.DELETE, R.ACCESS, "policy"),
    "policy.attached": (A.UPDATE, R.ACCESS, "policy"),
    "policy.detached": (A.UPDATE, R.ACCESS, "policy"),
    "principal_authentication_policy.resolved": (
        A.OTHER,
        R.ACCESS,
        "principal_authentication_policy",
    ),
    "scim.setup.started": (A.OTHER, R.ACCESS, "scim"),
    "scim.deletion.requested": (A.OTHER, R.ACCESS, "scim"),
    "scim.directory.created": (A.CREATE, R.ACCESS, "scim_directory"),
    "product_access_policy.updated": (A.UPDATE, R.ACCESS, "product_access_policy"),
    "resource_share_grant.created": (A.CREATE, R.ACCESS, "resource_share_grant"),
    "resource_share_grant.updated": (A.UPDATE, R.ACCESS, "resource_share_grant"),
    "resource_share_grant.accepted": (A.UPDATE, R.ACCESS, "resource_share_grant"),
    "resource_share_grant.declined": (A.UPDATE, R.ACCESS, "resource_share_grant"),
    "resource_share_grant.revoked": (A.DELETE, R.ACCESS, "resource_share_grant"),
    "resource_share_grant.deleted": (A.DELETE, R.ACCESS, "resource_share_grant"),
    "service_account.updated": (A.UPDATE, R.USER, "service_account"),
    "service_account.deleted": (A.DELETE, R.USER, "service_account"),
    "service_account.token.revoked": (A.DELETE, R.ACCESS, "service_account_token"),
    "billing.overage_limit.updated": (A.UPDATE, R.CONFIGURATION, "billing_overage_limit"),
    "billing.alerts.updated": (A.UPDATE, R.CONFIGURATION, "billing_alerts"),
    "billing.info.updated": (A.UPDATE, R.CONFIGURATION, "billing_info"),
    "usage_limit.workspace.updated": (A.UPDATE, R.CONFIGURATION, "usage_limit"),
    "usage_limit.group.updated": (A.UPDATE, R.CONFIGURATION, "usage_limit"),
    "usage_limit.user.updated": (A.UPDATE, R.CONFIGURATION, "usage_limit"),
    "usage_limit.increase_request.updated": (A.UPDATE, R.CONFIGURATION, "usage_limit_request"),
    "usage_limit.increase_request.resolved": (A.OTHER, R.CONFIGURATION, "usage_limit_request"),
    "group.created": (A.CREATE, R.GROUP, "group"),
    "group.updated": (A.UPDATE, R.GROUP, "group"),
    "group.deleted": (A.DELETE, R.GROUP, "group"),
    "group.member.added": (A.ADD_MEMBER, R.GROUP, "group"),
    "group.member.removed": (A.REMOVE_MEMBER, R.GROUP, "group"),
    "migration_rollout.status.updated": (A.UPDATE, R.CONFIGURATION, "migration_rollout"),
    "migration_rollout.tier.updated": (A.UPDATE, R.CONFIGURATION, "migration_rollout"),
    "role.metadata.updated": (A.UPDATE, R.ACCESS, "role"),
    "custom_role.created": (A.CREATE, R.ACCESS, "role"),
    "custom_role.updated": (A.UPDATE, R.ACCESS, "role"),
    "custom_role.deleted": (A.DELETE, R.ACCESS, "role"),
    "role_assignment.created": (A.GRANT, R.USER, "principal"),
    "role_assignment.deleted": (A.REVOKE, R.USER, "principal"),
    "resource_role_assignment.created": (A.GRANT, R.USER, "principal"),
    "resource_role_assignment.deleted": (A.REVOKE, R.USER, "principal"),
    "resource_access.updated": (A.UPDATE, R.ACCESS, "resource_access"),
    "resource_access.deleted": (A.DELETE, R.ACCESS, "resource_access"),
    "ads_account.onboarding.redemption": (A.OTHER, R.CONFIGURATION, "ads_account"),
    "session_policy.created": (A.CREATE, R.ACCESS, "session_policy"),
    "session_policy.updated": (A.UPDATE, R.ACCESS, "session_policy"),
    "session_policy.deleted": (A.DELETE, R.ACCESS, "session_policy"),
    "session_revocation.started": (A.OTHER, R.ACCESS, "session_revocation"),
    "third_party_app_policy.updated": (A.UPDATE, R.ACCESS, "third_party_app_policy"),
    "user.added": (A.CREATE, R.USER, "user"),
    "user.updated": (A.UPDATE, R.USER, "user"),
    "user.removed": (A.DELETE, R.USER, "user"),
    "user.looked_up": (A.READ, R.USER, "user"),
    "user.invited": (A.CREATE, R.USER, "invite"),
    "membership.revoked": (A.DELETE, R.USER, "membership"),
    "api_organization_invite.upserted": (A.UPDATE, R.USER, "invite"),
    "api_organization_invite.deleted": (A.DELETE, R.USER, "invite"),
    "chatgpt_workspace_invite.upserted": (A.UPDATE, R.USER, "invite"),
    "membership.accepted": (A.UPDATE, R.USER, "membership"),
    "membership.declined": (A.UPDATE, R.USER, "membership"),
    "workspace_invite_email_settings.updated": (
        A.UPDATE,
        R.CONFIGURATION,
        "workspace_invite_settings",
    ),
}

_TENANT_NAME = _p(
    "name",
    "data.name",
    "changes_requested.name",
    "data.group_name",
    "changes_requested.group_name",
    "data.role_name",
    "changes_requested.role_name",
    "data.policy_name",
    "changes_requested.policy_name",
)


def _tenant_target(kind: str) -> Target:
    if kind in ("user", "service_account", "invite", "membership"):
        return Target(
            kind=kind,
            id=_p("id", "data.user_id", "user_id"),
            name=_p("name", "data.name"),
            email=_p("email", "data.email", "changes_requested.email"),
            roles=_p("data.role", "changes_requested.role", "role"),
        )
    if kind == "group":
        return Target(
            kind=kind,
            id=_p("id", "group_id", "data.group_id"),
            name=_TENANT_NAME,
            member=_p("data.user_id", "user_id", "changes_requested.user_id"),
        )
    if kind == "principal":
        return Target(
            kind=kind,
            id=_p("principal_id", "data.principal_id"),
            name=(),
            principal_type=_p("principal_type", "data.principal_type"),
            privileges=_p("role_name", "data.role_name", "role_id", "data.role_id", "role"),
            resource_id=_p("resource_id", "data.resource_id"),
            resource_type=_p("resource_type", "data.resource_type"),
        )
    return Target(kind=kind, name=_TENANT_NAME)


# --- verb-suffix rules for types the table does not know ---------------------------------------

VERB_ACTIONS: dict[str, Action] = {
    **dict.fromkeys(("created", "added", "registered", "sent", "issued"), A.CREATE),
    **dict.fromkeys(
        ("updated", "changed", "accepted", "rotated", "bound", "unbound"), Action.UPDATE
    ),
    **dict.fromkeys(("deleted", "removed", "revoked"), A.DELETE),
    **dict.fromkeys(("enabled", "activated"), A.ENABLE),
    **dict.fromkeys(("disabled", "deactivated", "archived"), A.DISABLE),
    **dict.fromkeys(("succeeded", "failed"), A.OTHER),
}

_REALM_HINTS: tuple[tuple[tuple[str, ...], Realm], ...] = (
    (("group",), R.GROUP),
    (("user", "member", "invite", "service_account"), R.USER),
    (
        ("key", "role", "permission", "policy", "sso", "scim", "identity", "token", "grant"),
        R.ACCESS,
    ),
)


def split_type(event_type: str) -> tuple[str, str]:
    """(noun, verb): the last dotted part is the verb; a leading `tenant.` is not the noun."""
    body = event_type.removeprefix("tenant.") if event_type != "tenant." else event_type
    noun, _, verb = body.rpartition(".")
    return (noun or verb or event_type), verb if noun else ""


def _realm_for(noun: str) -> Realm:
    for hints, realm in _REALM_HINTS:
        if any(h in noun for h in hints):
            return realm
    return R.CONFIGURATION


def fallback_spec(event_type: str) -> EventSpec:
    """The spec of a type the table does not list, from its verb suffix."""
    noun, verb = split_type(event_type)
    action = VERB_ACTIONS.get(verb, A.OTHER)
    if verb == "failed":
        outcome = "failure"
    elif verb in VERB_ACTIONS:
        outcome = "success"
    else:
        outcome = "unknown"
    kind = noun.replace(".", "_")
    return EventSpec(
        type=event_type,
        noun=noun,
        verb=verb,
        action=action,
        realm=_realm_for(noun),
        outcome=outcome,
        target=Target(kind=kind, name=_NAME_ANY),
        known=False,
        error_code=_p("error_code"),
        error_message=_p("error_message"),
    )


def _build() -> dict[str, EventSpec]:
    specs: dict[str, EventSpec] = {}
    for event_type, (action, realm, target, extra) in _TABLE.items():
        noun, verb = split_type(event_type)
        specs[event_type] = EventSpec(
            type=event_type,
            noun=noun,
            verb=verb,
            action=action,
            realm=realm,
            outcome="failure" if verb == "failed" else "success",
            target=target,
            **extra,
        )
    for suffix, (action, realm, kind) in _TENANT.items():
        event_type = "tenant." + suffix
        noun, verb = split_type(event_type)
        specs[event_type] = EventSpec(
            type=event_type,
            noun=noun,
            verb=verb,
            action=action,
            realm=realm,
            outcome="success",
            target=_tenant_target(kind),
        )
    return specs


CATALOG: dict[str, EventSpec] = _build()


def spec_for(event_type: str) -> EventSpec:
    """The catalog entry for a type, or the verb-suffix fallback for an unknown one."""
    spec = CATALOG.get(event_type)
    return spec if spec is not None else fallback_spec(event_type)


def lookup(payload: Any, paths: tuple[Path, ...]) -> Any:
    """The first value found at one of `paths` inside nested dicts, or None."""
    for path in paths:
        value = payload
        for key in path:
            if type(value) is not dict:
                value = None
                break
            value = value.get(key)
        if value is not None:
            return value
    return None
