"""True-positive and true-negative sequences of raw audit-log events for every rule in
`detections/`, keyed by the rule's file name. A positive sequence must make the rule fire, a
negative one must not; each negative differs from a positive in the one thing the rule looks at
(the type, a value, the count, the time window, the group, the order)."""

from __future__ import annotations

from itertools import count
from typing import Any

T0 = 1_750_000_000
_seq = count(1)

Event = dict[str, Any]
Sequence = list[Event]

ALICE = ("user-alice000000000000000001", "alice@example.com")
BOB = ("user-bob00000000000000000002", "bob@example.com")
SVC = "svc_acct_cleanup0000000000001"


def user(n: int) -> tuple[str, str]:
    return f"user-{n:024d}", f"user{n}@example.com"


def ev(
    event_type: str,
    at: int = 0,
    payload: dict[str, Any] | None = None,
    *,
    who: tuple[str, str] = ALICE,
    ip: str = "203.0.113.7",
    service_account: str | None = None,
) -> Event:
    """An event `at` seconds after T0, by a session of `who` from `ip` (or by an API key of a
    service account)."""
    if service_account is not None:
        actor = {
            "type": "api_key",
            "api_key": {
                "id": "key_cleanup0000001",
                "type": "service_account",
                "service_account": {"id": service_account},
            },
        }
    else:
        actor = {
            "type": "session",
            "session": {
                "user": {"id": who[0], "email": who[1]},
                "ip_address": ip,
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101",
            },
        }
    return {
        "object": "organization.audit_log",
        "id": f"audit_log-{next(_seq):016x}",
        "type": event_type,
        "effective_at": T0 + at,
        "actor": actor,
        event_type: payload if payload is not None else {"id": f"res_{event_type}"},
    }


def failed(at: int, who: tuple[str, str] = ALICE, ip: str = "203.0.113.7", code: str = "") -> Event:
    code = code or "invalid_password"
    message = {
        "invalid_password": "The password you entered is incorrect.",
        "invalid_mfa_code": "The verification code is invalid or expired.",
        "mfa_required": "Multi-factor authentication is required for this account.",
        "code_rejected": "The verification code is invalid or expired.",
    }[code]
    return ev("login.failed", at, {"error_code": code, "error_message": message}, who=who, ip=ip)


def _every(n: int, step: int, make: Any) -> Sequence:
    return [make(i * step) for i in range(n)]


def _role(event_type: str, role: str, key: str = "data") -> Event:
    return ev(event_type, 0, {"id": "user-target00000000000000001", key: {"role": role}})


_DELETIONS = [
    "project.archived",
    "project.deleted",
    "api_key.deleted",
    "user.deleted",
    "service_account.deleted",
]


def _deletions(n: int, step: int, by_many: bool = False) -> Sequence:
    return [
        ev(
            _DELETIONS[i % len(_DELETIONS)],
            i * step,
            {"id": f"res_{i}"},
            service_account=f"{SVC[:-1]}{i}" if by_many else SVC,
        )
        for i in range(n)
    ]


def _allowlist(event_type: str, *cidrs: str) -> Event:
    return ev(event_type, 0, {"id": "ipal_1", "name": "office", "allowed_ips": list(cidrs)})


def _role_event(event_type: str, scope: str, *permissions: str) -> Event:
    if event_type == "role.updated":
        payload = {
            "id": "role_1",
            "changes_requested": {
                "resource_type": scope,
                "resource_id": "org-1",
                "permissions_added": list(permissions),
            },
        }
    else:
        payload = {
            "id": "role_1",
            "role_id": "role_1",
            "role_name": "Group managers",
            "permissions": list(permissions),
            "resource_type": scope,
            "resource_id": "org-1",
        }
    return ev(event_type, 0, payload)


def _rate_limit(**limits: int) -> Event:
    return ev("rate_limit.updated", 0, {"id": "rl-gpt-4o", "changes_requested": limits})


def _spray(n_users: int, *, ip_per_user: bool = False, step: int = 60) -> Sequence:
    return [
        failed(i * step, who=user(i), ip=f"198.51.100.{i + 1}" if ip_per_user else "192.0.2.33")
        for i in range(n_users)
    ]


CASES: dict[str, dict[str, list[Sequence]]] = {
    "openai_login_failed": {
        "positive": [[failed(0)]],
        "negative": [[ev("login.succeeded")], [ev("logout.failed", 0, {"error_code": "x"})]],
    },
    "openai_login_succeeded": {
        "positive": [[ev("login.succeeded")]],
        "negative": [[failed(0)], [ev("logout.succeeded")]],
    },
    "openai_mfa_code_failed": {
        "positive": [[failed(0, code="invalid_mfa_code")], [failed(0, code="code_rejected")]],
        "negative": [[failed(0, code="mfa_required")], [failed(0)]],
    },
    "openai_destructive_action": {
        "positive": [[ev(t)] for t in _DELETIONS],
        "negative": [[ev("project.created")], [ev("api_key.updated")]],
    },
    "correlation_openai_failed_login_burst": {
        "positive": [_every(5, 60, failed), _every(8, 30, failed)],
        "negative": [
            _every(4, 60, failed),  # one short
            _every(5, 12 * 60, failed),  # five, but spread over 48 minutes
            [failed(i * 60, who=user(i)) for i in range(5)],  # five users, once each
            _every(5, 60, lambda at: ev("login.succeeded", at)),
        ],
    },
    "correlation_openai_password_spraying": {
        "positive": [_spray(5), _spray(7, step=500)],
        "negative": [
            _spray(4),  # four users
            _spray(5, ip_per_user=True),  # five users, five addresses
            _spray(5, step=3600),  # five users in five hours
            [failed(i * 60, ip="192.0.2.33") for i in range(12)],  # one user, many times
        ],
    },
    "correlation_openai_login_after_failed_burst": {
        "positive": [
            [*_every(5, 60, failed), ev("login.succeeded", 600)],
            [*_every(6, 30, failed), ev("login.succeeded", 300 + 25 * 60)],
        ],
        "negative": [
            [ev("login.succeeded", 0), *[failed(60 + i * 60) for i in range(5)]],  # wrong order
            [*_every(5, 60, failed), ev("login.succeeded", 2 * 3600)],  # too late
            [*_every(5, 60, failed), ev("login.succeeded", 600, who=BOB)],  # another user
            [*_every(3, 60, failed), ev("login.succeeded", 600)],  # no burst
        ],
    },
    "correlation_openai_mfa_failure_burst": {
        "positive": [
            _every(3, 60, lambda at: failed(at, code="invalid_mfa_code")),
            _every(4, 120, lambda at: failed(at, code="code_rejected")),
        ],
        "negative": [
            _every(3, 60, failed),  # wrong passwords, not codes
            _every(3, 60, lambda at: failed(at, code="mfa_required")),  # prompts
            _every(3, 30 * 60, lambda at: failed(at, code="invalid_mfa_code")),  # an hour
            _every(2, 60, lambda at: failed(at, code="invalid_mfa_code")),
        ],
    },
    "correlation_openai_mass_destruction": {
        "positive": [_deletions(10, 30), _deletions(15, 20)],
        "negative": [
            _deletions(9, 30),
            _deletions(10, 30, by_many=True),
            _deletions(10, 15 * 60),
            [ev("project.created", i * 30, service_account=SVC) for i in range(12)],
        ],
    },
    "openai_admin_api_key_created": {
        "positive": [[ev("tenant.admin_api_key.created", 0, {"id": "key_1", "data": {}})]],
        "negative": [[ev("api_key.created")], [ev("tenant.admin_api_key.updated")]],
    },
    "openai_owner_role_granted": {
        "positive": [
            [_role("user.updated", "owner", "changes_requested")],
            [_role("user.added", "owner")],
            [_role("invite.sent", "owner")],
            [_role("service_account.created", "owner")],
            [_role("service_account.updated", "owner", "changes_requested")],
            [_role("tenant.user.added", "owner")],
        ],
        "negative": [
            [_role("user.updated", "reader", "changes_requested")],
            [_role("service_account.created", "member")],
            [_role("user.deleted", "owner")],
            [
                ev(
                    "role.assignment.created",
                    0,
                    {
                        "id": "ra_1",
                        "principal_id": "user-target00000000000000001",
                        "principal_type": "user",
                        "resource_id": "org-1",
                        "resource_type": "api.organization",
                    },
                )
            ],
        ],
    },
    "openai_ip_allowlist_removed": {
        "positive": [
            [_allowlist("ip_allowlist.deleted", "203.0.113.0/24")],
            [ev("ip_allowlist.config.deactivated", 0, {"configs": [{"id": "ipal_1"}]})],
        ],
        "negative": [
            [_allowlist("ip_allowlist.created", "203.0.113.0/24")],
            [ev("ip_allowlist.config.activated", 0, {"configs": [{"id": "ipal_1"}]})],
        ],
    },
    "openai_ip_allowlist_opened_wide": {
        "positive": [
            [_allowlist("ip_allowlist.updated", "203.0.113.0/24", "0.0.0.0/0")],
            [_allowlist("ip_allowlist.created", "10.0.0.0/8")],
            [_allowlist("ip_allowlist.updated", "2001:db8::/48", "::/0")],
        ],
        "negative": [
            [_allowlist("ip_allowlist.updated", "203.0.113.0/24", "198.51.100.14/32")],
            [_allowlist("ip_allowlist.created", "10.0.0.0/10", "172.16.0.0/18")],
            [_allowlist("ip_allowlist.deleted", "0.0.0.0/0")],
        ],
    },
    "openai_sso_scim_disabled": {
        "positive": [[ev("scim.disabled")], [ev("tenant.sso_connection.deleted")]],
        "negative": [[ev("scim.enabled")], [ev("tenant.sso_connection.created")]],
    },
    "openai_identity_provider_changed": {
        "positive": [
            [ev("scim.enabled")],
            [ev("tenant.sso_connection.updated", 0, {"id": "sso_1", "changes_requested": {}})],
            [ev("tenant.microsoft_entra_mapping.upserted")],
        ],
        "negative": [[ev("scim.disabled")], [ev("login.succeeded")]],
    },
    "openai_access_policy_weakened": {
        "positive": [[ev("tenant.session_policy.updated")], [ev("tenant.policy.detached")]],
        "negative": [[ev("tenant.session_policy.created")], [ev("tenant.policy.attached")]],
    },
    "openai_data_shared_outside": {
        "positive": [
            [ev("tenant.resource_share_grant.created")],
            [
                ev(
                    "checkpoint.permission.created",
                    0,
                    {
                        "id": "cp_1",
                        "data": {"project_id": "proj_other", "fine_tuned_model_checkpoint": "ft:x"},
                    },
                )
            ],
        ],
        "negative": [
            [ev("checkpoint.permission.deleted")],
            [ev("tenant.resource_share_grant.revoked")],
        ],
    },
    "openai_new_trust_anchor": {
        "positive": [
            [
                ev(
                    "workload_identity_provider_mapping.created",
                    0,
                    {"id": "wipm_1", "identity_provider_id": "wip_1", "data": {"subject": "x"}},
                )
            ],
            [ev("external_key.registered")],
            [ev("certificates.activated", 0, {"certificates": [{"id": "cert_1", "name": "c"}]})],
        ],
        "negative": [[ev("certificate.deleted")], [ev("workload_identity_provider.deleted")]],
    },
    "openai_audit_logging_reduced": {
        "positive": [
            [
                ev(
                    "organization.updated",
                    0,
                    {"id": "org-1", "changes_requested": {"api_call_logging": "disabled"}},
                )
            ],
            [ev("tenant.admin_api_key.deleted")],
        ],
        "negative": [
            [
                ev(
                    "organization.updated",
                    0,
                    {
                        "id": "org-1",
                        "changes_requested": {"api_call_logging": "enabled_for_all_projects"},
                    },
                )
            ],
            [ev("organization.updated", 0, {"id": "org-1", "changes_requested": {"title": "x"}})],
            [ev("api_key.deleted")],
        ],
    },
    "openai_rate_limit_raised": {
        "positive": [
            [_rate_limit(max_requests_per_1_minute=20_000, max_tokens_per_1_minute=400_000)],
            [_rate_limit(max_tokens_per_1_minute=40_000_000)],
            [ev("rate_limit.deleted")],
        ],
        "negative": [
            [_rate_limit(max_requests_per_1_minute=3_000, max_tokens_per_1_minute=1_200_000)],
            [_rate_limit(max_requests_per_1_minute=9_999)],
        ],
    },
    "openai_spend_limit_changed": {
        "positive": [
            [ev("tenant.billing.overage_limit.updated")],
            [ev("tenant.usage_limit.user.updated")],
        ],
        "negative": [[ev("tenant.billing.info.updated")], [ev("tenant.billing.alerts.updated")]],
    },
    "openai_org_role_write_permissions": {
        "positive": [
            [
                _role_event(
                    "role.created", "api.organization", "api.groups.read", "api.groups.write"
                )
            ],
            [_role_event("role.updated", "api.organization", "api.users.write")],
            [_role_event("role.bound_to_resource", "api.organization", "api.roles.write")],
        ],
        "negative": [
            [_role_event("role.created", "api.project", "api.files.write")],
            [_role_event("role.created", "api.organization", "api.groups.read")],
            [_role_event("role.deleted", "api.organization", "api.groups.write")],
        ],
    },
}
