"""Deterministic factory of OpenAI audit-log events shaped like the real API sends them: every
documented event type with a realistic payload, every actor variant, optional hostile strings."""

from __future__ import annotations

import gc
import hashlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "data" / "openai-audit-log.openapi.json"

_SCHEMAS = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))["components"]["schemas"]

#: Every value of AuditLogEventType in the committed OpenAPI excerpt, in document order.
DOCUMENTED_TYPES: list[str] = list(_SCHEMAS["AuditLogEventType"]["enum"])
#: Event types with a payload schema under AuditLog.properties[<type>].
SCHEMA_PAYLOAD_TYPES: frozenset[str] = frozenset(
    k for k in _SCHEMAS["AuditLog"]["properties"] if k in set(DOCUMENTED_TYPES)
)
#: Plausible future types that the API may add; consumers must pass them through.
UNKNOWN_TYPES: list[str] = [
    "vector_store.file.purged",
    "tenant.audit_export.enabled",
    "model.fine_tune.cancelled",
    "assistant.archived",
]
EVENT_TYPES: list[str] = DOCUMENTED_TYPES + UNKNOWN_TYPES

#: Tenant-scoped types (the API lists them only with tenant_only=true).
TENANT_SCOPED_EXTRA = frozenset({"role.bound_to_resource", "role.unbound_from_resource"})


def is_tenant_scoped(event_type: str) -> bool:
    """Whether the API lists this type only under tenant_only=true."""
    return event_type.startswith("tenant.") or event_type in TENANT_SCOPED_EXTRA


ACTOR_KINDS = ("session", "api_key_user", "api_key_service_account", "null", "absent")

HOSTILE_STRINGS: list[str] = [
    "line one\nline two",
    "carriage\rreturn\r\nand crlf",
    "double \"quoted\" and 'single'",
    "back\\slash \\n not a newline \\",
    "bracket ] close [ open ]]",
    "pipe | and equals = and key=value",
    "nul\u0000byte inside",
    "ünïcödé Größe 日本語 emoji 🔐",
    "rtl \u202eevil\u202c mark \u200f\u200e",
    "<script>alert(1)</script> & %s %n {0} ${jndi:ldap://x}",
    "tab\there\x1b[31m escape \x7f",
    "CEF:0|spoofed|header|1.0|100|name|10|",
    "long-" + "A" * 10_000,
]

_rng0 = random.Random(20260101)
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _token(rng: random.Random, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_FIRST = [
    "ada", "grace", "alan", "barbara", "edsger", "frances", "ken", "margaret", "linus",
    "radia", "dennis", "katherine", "john", "hedy", "donald", "shafi", "leslie", "anita",
    "tim", "sophie", "guido", "yukihiro", "mei", "amir", "chidi", "ingrid", "pablo", "olga",
]  # fmt: skip
_LAST = [
    "lovelace", "hopper", "turing", "liskov", "dijkstra", "allen", "thompson", "hamilton",
    "torvalds", "perlman", "ritchie", "johnson", "mccarthy", "lamarr", "knuth", "goldwasser",
    "lamport", "borg", "berners-lee", "wilson", "van-rossum", "matsumoto", "chen", "haddad",
]  # fmt: skip

_USERS: list[tuple[str, str]] = []
for _i in range(48):
    _f, _l = _FIRST[_i % len(_FIRST)], _LAST[(_i * 7) % len(_LAST)]
    _USERS.append((f"user-{_token(_rng0, 24)}", f"{_f}.{_l}@example.com"))
_PROJECTS: list[tuple[str, str]] = [
    (f"proj_{_token(_rng0, 24)}", name)
    for name in (
        "Default project", "Production API", "Staging", "Support bot", "Data science",
        "Evaluations", "Mobile app", "Internal tools",
    )
]  # fmt: skip
_ORG_ID = f"org-{_token(_rng0, 24)}"
_KEYS_USER = [f"key_{_token(_rng0, 16)}" for _ in range(24)]
_KEYS_SVC = [f"key_{_token(_rng0, 16)}" for _ in range(12)]
_SVC_ACCTS = [f"svc_acct_{_token(_rng0, 24)}" for _ in range(12)]
_IPS = [
    *(f"203.0.113.{i}" for i in (7, 19, 44, 101, 200)),
    *(f"198.51.100.{i}" for i in (3, 58, 142)),
    "192.0.2.33",
    "2001:db8:85a3::8a2e:370:7334",
    "2001:db8::1f",
]
_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
]
_GEO = [
    {"country": "US", "city": "San Francisco", "region": "California", "region_code": "CA",
     "asn": "13335", "latitude": "37.77490", "longitude": "-122.41940"},
    {"country": "US", "city": "New York", "region": "New York", "region_code": "NY",
     "asn": "7922", "latitude": "40.71280", "longitude": "-74.00600"},
    {"country": "DE", "city": "Berlin", "region": "Land Berlin", "region_code": "BE",
     "asn": "3320", "latitude": "52.52000", "longitude": "13.40500"},
    {"country": "IE", "city": "Dublin", "region": "Leinster", "region_code": "L",
     "asn": "16509", "latitude": "53.34980", "longitude": "-6.26030"},
    {"country": "JP", "city": "Tokyo", "region": "Tokyo", "region_code": "13",
     "asn": "2516", "latitude": "35.67620", "longitude": "139.65030"},
]  # fmt: skip
_JA3 = [hashlib.md5(f"ja3-{i}".encode()).hexdigest() for i in range(16)]
_JA4 = [
    f"t13d{1516 + i}h2_{hashlib.sha256(f'a{i}'.encode()).hexdigest()[:12]}_"
    f"{hashlib.sha256(f'b{i}'.encode()).hexdigest()[:12]}"
    for i in range(16)
]

_ID_POOLS: dict[tuple[str, int], list[str]] = {}


def _rid(prefix: str, n: int, length: int = 24) -> str:
    """A resource id from a fixed per-prefix pool (997 ids): the same resources recur."""
    pool = _ID_POOLS.get((prefix, length))
    if pool is None:
        r = random.Random(f"{prefix}{length}")
        pool = _ID_POOLS[(prefix, length)] = [
            prefix + "".join(r.choices(_ALNUM, k=length)) for _ in range(997)
        ]
    return pool[n % 997]


def _user(n: int) -> tuple[str, str]:
    return _USERS[n % len(_USERS)]


def _email(n: int, t: str | None) -> str:
    email = _USERS[n % len(_USERS)][1]
    # Hostile strings go into a quoted local part, which RFC 5322 allows.
    return email if t is None else f'"{t}"@example.com'


_SCOPES = [
    "api.model.read", "api.model.request", "api.files.write", "api.files.read",
    "api.assistants.write", "api.threads.read", "api.fine_tuning.jobs.write",
    "api.vector_stores.read", "api.batch.write", "api.responses.write",
]  # fmt: skip
_ROLES = ["owner", "reader", "member"]
_PERMS = [
    "api.organization.projects.read", "api.organization.users.write", "api.audit_logs.read",
    "api.model.request", "api.files.write", "chatgpt.connectors.use", "api.usage.read",
]  # fmt: skip
_CIDRS = [
    ["203.0.113.0/24", "198.51.100.14/32"],
    ["10.20.0.0/16"],
    ["192.0.2.0/28", "2001:db8::/48", "203.0.113.77/32"],
    ["2001:db8:1234::/64"],
]
_LOGIN_ERRORS = [
    ("invalid_password", "The password you entered is incorrect."),
    ("mfa_required", "Multi-factor authentication is required for this account."),
    ("user_blocked", "This user is blocked by the organization's SSO policy."),
    ("invalid_mfa_code", "The verification code is invalid or expired."),
]
_LOGOUT_ERRORS = [("session_expired", "The session had already expired."),
                  ("csrf_mismatch", "The logout request failed CSRF validation.")]  # fmt: skip
_MODELS = ["gpt-4o", "gpt-4o-mini", "o3", "gpt-4.1", "text-embedding-3-large", "dall-e-3"]
_NAMES = ["Platform team", "Security", "Finance", "Research", "Support", "Marketing"]

Payload = dict[str, Any]
Builder = Callable[[int, str | None], Any]


def _pick(seq: Sequence[Any], n: int) -> Any:
    return seq[n % len(seq)]


def _name(n: int, t: str | None, choices: Sequence[str] = _NAMES) -> str:
    return t if t is not None else choices[n % len(choices)]


def _idonly(prefix: str) -> Builder:
    return lambda n, t: {"id": _rid(prefix, n)}


def _rate_limit_changes(n: int) -> dict[str, int]:
    base = (1 + n % 9) * 500
    ch = {"max_requests_per_1_minute": base, "max_tokens_per_1_minute": base * 400}
    if n % 3 == 0:
        ch["max_requests_per_1_day"] = base * 1000
        ch["batch_1_day_max_input_tokens"] = base * 20_000
    if n % 4 == 1:
        ch["max_images_per_1_minute"] = 5 + n % 50
        ch["max_audio_megabytes_per_1_minute"] = 10 + n % 90
    return ch


def _role_binding(n: int, t: str | None) -> Payload:
    ws = _rid("ws-", n, 20)
    conn = _rid("connector_", n >> 3, 16)
    return {
        "id": _rid("rb_", n),
        "role_id": _rid("role_", n >> 2),
        "resource_id": f"{ws}__{conn}",
        "resource_type": "workspace_connector",
        "permissions": _PERMS[n % 3 : n % 3 + 2],
        "workspace_id": ws,
        "connector_id": conn,
        "connector_name": _name(n, t, ["Google Drive", "GitHub", "SharePoint", "Slack"]),
        "enabled": n % 2 == 0,
        "source": _pick(
            [
                "role_toggle",
                "role_connector_update",
                "role_delete",
                "workspace_permissions",
                "connector_publish",
            ],
            n,
        ),
    }


def _role_assignment(n: int, t: str | None) -> Payload:
    kind = n % 3
    principal = (
        _user(n)[0] if kind == 0 else (_rid("group_", n) if kind == 1 else _pick(_SVC_ACCTS, n))
    )
    return {
        "id": _rid("ra_", n),
        "principal_id": principal,
        "principal_type": ("user", "group", "service_account")[kind],
        "resource_id": _pick(_PROJECTS, n)[0] if n % 2 else _ORG_ID,
        "resource_type": "api.project" if n % 2 else "api.organization",
    }


def _tenant_payload(event_type: str) -> Builder:
    """A realistic payload for a tenant.* type (undocumented in the excerpt): id plus fields that
    fit the noun, shaped like the documented ones (data on create, changes_requested on update)."""
    parts = event_type.split(".")
    verb = parts[-1]
    noun = "_".join(parts[1:-1]) or parts[1]
    prefix = noun.split("_")[0][:12] + "_"

    if "api_key" in noun or "token" in noun:
        kind = "key"
    elif "group" in noun:
        kind = "group_member" if "member" in noun else "group"
    elif "invite" in noun:
        kind = "invite"
    elif "user" in noun or "membership" in noun:
        kind = "user"
    elif "policy" in noun:
        kind = "policy"
    elif "sso" in noun or "domains" in noun:
        kind = "sso"
    elif "billing" in noun:
        kind = "billing"
    elif "usage_limit" in noun:
        kind = "usage_limit"
    elif "workload_identity" in noun or "entra" in noun:
        kind = "wid"
    elif "role" in noun:
        kind = "role_assignment" if "assignment" in noun else "role"
    elif "resource" in noun:
        kind = "resource"
    elif "service_account" in noun:
        kind = "service_account"
    elif "scim" in noun:
        kind = "scim"
    else:
        kind = "other"
    user_target = "user" in event_type
    wrap = (
        "changes_requested"
        if verb in ("updated", "upserted")
        else "data"
        if verb in ("created", "added", "invited", "provisioned", "issued", "registered")
        else None
    )

    def build(n: int, t: str | None) -> Payload:
        rid: str | None = None
        p: Payload
        if kind == "key":
            rid = _rid("key_", n, 16)
            p = {
                "name": _name(n, t, ["ci-deploy", "terraform", "siem-export", "ops-laptop"]),
                "redacted_value": "sk-...." + _rid("", n, 4),
            }
        elif kind == "group" or kind == "group_member":
            rid = _rid("group_", n)
            p = {"group_name": _name(n, t)}
            if kind == "group_member":
                p["user_id"] = _user(n)[0]
        elif kind == "invite" or kind == "user":
            rid = _user(n)[0] if kind == "user" else _rid("invite-", n)
            p = {"email": _email(n, t), "role": _pick(_ROLES, n)}
        elif kind == "policy":
            rid = _rid("pol_", n)
            p = {
                "policy_name": _name(n, t) + " policy",
                "enforcement": _pick(["enforced", "audit_only"], n),
            }
        elif kind == "sso":
            rid = _rid("conn_", n)
            p = {
                "domain": _pick(["example.com", "corp.example.net", "example.org"], n),
                "protocol": _pick(["saml", "oidc"], n),
            }
        elif kind == "billing":
            rid = _ORG_ID
            p = {"amount_usd": (1 + n % 50) * 100}
        elif kind == "usage_limit":
            rid = _rid("ulim_", n)
            p = {
                "monthly_limit_usd": (1 + n % 20) * 250,
                "target_id": _user(n)[0] if user_target else _rid("ws-", n, 20),
            }
        elif kind == "wid":
            p = {
                "identity_provider_id": _rid("wip_", n >> 1),
                "name": _name(n, t, ["github-actions", "gke-prod", "azure-entra"]),
            }
        elif kind == "role" or kind == "role_assignment":
            rid = _rid("role_", n)
            p = {"role_name": _name(n, t, ["Auditor", "Billing admin", "Connector manager"])}
            if kind == "role_assignment":
                p["principal_id"] = _user(n)[0]
                p["principal_type"] = "user"
        elif kind == "resource":
            p = {
                "resource_id": _pick(_PROJECTS, n)[0],
                "resource_type": "api.project",
                "grantee_organization_id": _rid("org-", n, 24),
            }
        elif kind == "service_account":
            rid = _pick(_SVC_ACCTS, n)
            p = {}
        elif kind == "scim":
            rid = _rid("dir_", n)
            p = {"provider": _pick(["okta", "azure_ad", "onelogin"], n)}
        else:
            p = {"name": _name(n, t)}
        if rid is None:
            rid = _rid(prefix, n)
        if wrap is not None:
            return {"id": rid, wrap: p}
        return {"id": rid, **p}

    return build


_PAYLOADS: dict[str, Builder] = {
    "api_key.created": lambda n, t: {
        "id": _pick(_KEYS_USER, n),
        "data": {"scopes": _SCOPES[n % 7 : n % 7 + 1 + n % 3]},
    },
    "api_key.updated": lambda n, t: {
        "id": _pick(_KEYS_USER, n),
        "changes_requested": {"scopes": _SCOPES[n % 5 : n % 5 + 2]},
    },
    "api_key.deleted": lambda n, t: {"id": _pick(_KEYS_USER, n)},
    "certificate.created": lambda n, t: {"id": _rid("cert_", n), "name": _name(n, t) + " mTLS"},
    "certificate.updated": lambda n, t: {"id": _rid("cert_", n), "name": _name(n, t) + " CA"},
    "certificate.deleted": lambda n, t: {
        "id": _rid("cert_", n),
        "name": _name(n, t),
        "certificate": "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU"
        + _rid("", n, 32)
        + "\n-----END CERTIFICATE-----\n",
    },
    "certificates.activated": lambda n, t: {
        "certificates": [{"id": _rid("cert_", n + i), "name": _name(n + i, t)} for i in range(2)]
    },
    "certificates.deactivated": lambda n, t: {
        "certificates": [{"id": _rid("cert_", n), "name": _name(n, t)}]
    },
    "checkpoint.permission.created": lambda n, t: {
        "id": _rid("cp_", n),
        "data": {
            "project_id": _pick(_PROJECTS, n)[0],
            "fine_tuned_model_checkpoint": f"ft:gpt-4o-mini-2024-07-18:acme::{_rid('', n, 8)}"
            f":ckpt-step-{(n % 9 + 1) * 100}",
        },
    },
    "checkpoint.permission.deleted": _idonly("cp_"),
    "external_key.registered": lambda n, t: {
        "id": _rid("ekm_", n),
        "data": {
            "provider": _pick(["aws_kms", "gcp_kms", "azure_key_vault"], n),
            "key_arn": f"arn:aws:kms:us-east-1:111122223333:key/{_rid('', n, 32)}",
        },
    },
    "external_key.removed": _idonly("ekm_"),
    "group.created": lambda n, t: {"id": _rid("group_", n), "data": {"group_name": _name(n, t)}},
    "group.updated": lambda n, t: {
        "id": _rid("group_", n),
        "changes_requested": {"group_name": _name(n + 1, t)},
    },
    "group.deleted": _idonly("group_"),
    "invite.sent": lambda n, t: {
        "id": _rid("invite-", n),
        "data": {"email": _email(n + 5, t), "role": _pick(_ROLES[:2], n)},
    },
    "invite.accepted": _idonly("invite-"),
    "invite.deleted": _idonly("invite-"),
    "ip_allowlist.created": lambda n, t: {
        "id": _rid("ipal_", n),
        "name": _name(n, t, ["Office egress", "VPN", "CI runners"]),
        "allowed_ips": _pick(_CIDRS, n),
    },
    "ip_allowlist.updated": lambda n, t: {"id": _rid("ipal_", n), "allowed_ips": _pick(_CIDRS, n)},
    "ip_allowlist.deleted": lambda n, t: {
        "id": _rid("ipal_", n),
        "name": _name(n, t, ["Office egress", "VPN", "CI runners"]),
        "allowed_ips": _pick(_CIDRS, n),
    },
    "ip_allowlist.config.activated": lambda n, t: {
        "configs": [{"id": _rid("ipal_", n), "name": _name(n, t, ["Office egress", "VPN"])}]
    },
    "ip_allowlist.config.deactivated": lambda n, t: {
        "configs": [{"id": _rid("ipal_", n), "name": _name(n, t, ["CI runners"])}]
    },
    "login.succeeded": lambda n, t: {},
    "login.failed": lambda n, t: {
        "error_code": _pick(_LOGIN_ERRORS, n)[0],
        "error_message": t if t is not None else _pick(_LOGIN_ERRORS, n)[1],
    },
    "logout.succeeded": lambda n, t: {},
    "logout.failed": lambda n, t: {
        "error_code": _pick(_LOGOUT_ERRORS, n)[0],
        "error_message": t if t is not None else _pick(_LOGOUT_ERRORS, n)[1],
    },
    "organization.updated": lambda n, t: {
        "id": _ORG_ID,
        "changes_requested": (
            {"title": _name(n, t, ["Acme Corp", "Acme Research"]), "description": "Acme org"}
            if n % 3 == 0
            else {
                "api_call_logging": "enabled_per_project",
                "api_call_logging_project_ids": _pick(_PROJECTS, n)[0],
            }
            if n % 3 == 1
            else {"threads_ui_visibility": "NONE", "usage_dashboard_visibility": "ANY_ROLE"}
        ),
    },
    "project.created": lambda n, t: {
        "id": _pick(_PROJECTS, n)[0],
        "data": {"name": _name(n, t, [p[1] for p in _PROJECTS]), "title": _pick(_PROJECTS, n)[1]},
    },
    "project.updated": lambda n, t: {
        "id": _pick(_PROJECTS, n)[0],
        "changes_requested": {"title": _name(n, t, [p[1] + " (renamed)" for p in _PROJECTS])},
    },
    "project.archived": lambda n, t: {"id": _pick(_PROJECTS, n)[0]},
    "project.deleted": lambda n, t: {"id": _pick(_PROJECTS, n)[0]},
    "rate_limit.updated": lambda n, t: {
        "id": "rl-" + _pick(_MODELS, n),
        "changes_requested": _rate_limit_changes(n),
    },
    "rate_limit.deleted": lambda n, t: {"id": "rl-" + _pick(_MODELS, n)},
    "resource.deleted": lambda n, t: {
        "id": _rid("file-", n),
        "resource_type": _pick(["file", "vector_store", "assistant", "batch"], n),
    },
    "tunnel.created": lambda n, t: {
        "id": _rid("tun_", n),
        "data": {"name": _name(n, t, ["on-prem-gw", "vpc-east"]), "region": "us-east-1"},
    },
    "tunnel.updated": lambda n, t: {
        "id": _rid("tun_", n),
        "changes_requested": {"name": _name(n, t, ["on-prem-gw-2"])},
    },
    "tunnel.deleted": _idonly("tun_"),
    "workload_identity_provider.created": lambda n, t: {
        "id": _rid("wip_", n),
        "data": {
            "name": _name(n, t, ["github-actions", "gke-prod"]),
            "issuer": "https://token.actions.githubusercontent.com",
        },
    },
    "workload_identity_provider.updated": lambda n, t: {
        "id": _rid("wip_", n),
        "changes_requested": {"audience": "https://api.openai.com"},
    },
    "workload_identity_provider.deleted": lambda n, t: {
        "id": _rid("wip_", n),
        "name": _name(n, t, ["github-actions", "gke-prod"]),
    },
    "workload_identity_provider_mapping.created": lambda n, t: {
        "id": _rid("wipm_", n),
        "identity_provider_id": _rid("wip_", n),
        "data": {
            "subject": "repo:acme/api:ref:refs/heads/main",
            "project_id": _pick(_PROJECTS, n)[0],
        },
    },
    "workload_identity_provider_mapping.updated": lambda n, t: {
        "id": _rid("wipm_", n),
        "identity_provider_id": _rid("wip_", n),
        "changes_requested": {"subject": "repo:acme/api:environment:production"},
    },
    "workload_identity_provider_mapping.deleted": lambda n, t: {
        "id": _rid("wipm_", n),
        "identity_provider_id": _rid("wip_", n),
        "project_id": _pick(_PROJECTS, n)[0],
        "service_account_id": _pick(_SVC_ACCTS, n),
    },
    "role.created": lambda n, t: {
        "id": _rid("role_", n),
        "role_name": _name(n, t, ["Auditor", "Key manager", "Billing viewer"]),
        "permissions": _PERMS[n % 4 : n % 4 + 3],
        "resource_type": "api.organization",
        "resource_id": _ORG_ID,
    },
    "role.updated": lambda n, t: {
        "id": _rid("role_", n),
        "changes_requested": {
            "role_name": _name(n, t, ["Auditor (read only)"]),
            "permissions_added": [_pick(_PERMS, n)],
            "permissions_removed": [_pick(_PERMS, n + 1)],
            "description": "Read-only access to audit logs",
            "metadata": {"ticket": f"SEC-{1000 + n % 9000}"},
        },
    },
    "role.deleted": _idonly("role_"),
    "role.assignment.created": _role_assignment,
    "role.assignment.deleted": _role_assignment,
    "role.bound_to_resource": _role_binding,
    "role.unbound_from_resource": _role_binding,
    "scim.enabled": lambda n, t: {"id": _rid("dir_", n)},
    "scim.disabled": lambda n, t: {"id": _rid("dir_", n)},
    "service_account.created": lambda n, t: {
        "id": _pick(_SVC_ACCTS, n),
        "data": {"role": _pick(["owner", "member"], n)},
    },
    "service_account.updated": lambda n, t: {
        "id": _pick(_SVC_ACCTS, n),
        "changes_requested": {"role": _pick(["member", "owner"], n)},
    },
    "service_account.deleted": lambda n, t: {"id": _pick(_SVC_ACCTS, n)},
    "user.added": lambda n, t: {"id": _user(n)[0], "data": {"role": _pick(_ROLES[:2], n)}},
    "user.updated": lambda n, t: {
        "id": _user(n)[0],
        "changes_requested": {"role": _pick(_ROLES[:2], n + 1)},
    },
    "user.deleted": lambda n, t: {"id": _user(n)[0]},
    # Plausible future types (not in the excerpt).
    "vector_store.file.purged": lambda n, t: {
        "id": _rid("file-", n),
        "vector_store_id": _rid("vs_", n),
    },
    "tenant.audit_export.enabled": lambda n, t: {
        "id": _rid("exp_", n),
        "data": {"destination": "s3://acme-audit/openai/"},
    },
    "model.fine_tune.cancelled": lambda n, t: {
        "id": _rid("ftjob-", n),
        "model": "gpt-4o-mini-2024-07-18",
    },
    "assistant.archived": lambda n, t: {"id": _rid("asst_", n), "name": _name(n, t)},
}
for _t in EVENT_TYPES:
    if _t not in _PAYLOADS:
        _PAYLOADS[_t] = _tenant_payload(_t) if _t.startswith("tenant.") else _idonly("res_")

# Events about a project carry the `project` object; the others carry it only sometimes.
_PROJECT_SCOPED_PREFIXES = (
    "api_key.",
    "service_account.",
    "rate_limit.",
    "project.",
    "checkpoint.",
    "workload_identity_provider_mapping.",
)


_PROJECT_SCOPE: dict[str, int] = {}


def _project_scope(event_type: str) -> int:
    """2: the event always names its project; 1: sometimes; 0: never (tenant/org level)."""
    if event_type.startswith(_PROJECT_SCOPED_PREFIXES):
        return 2
    return 0 if is_tenant_scoped(event_type) or event_type.startswith("organization.") else 1


def _actor(kind: str, n: int, t: str | None) -> dict[str, Any] | None:
    if kind == "session":
        uid, email = _USERS[n % len(_USERS)]
        return {
            "type": "session",
            "session": {
                "user": {"id": uid, "email": email if t is None else _email(n, t)},
                "ip_address": _IPS[n % len(_IPS)],
                "user_agent": _UAS[n % len(_UAS)] if t is None else t,
                "ja3": _JA3[n % 16],
                "ja4": _JA4[n % 16],
                "ip_address_details": dict(_GEO[n % len(_GEO)]),
            },
        }
    if kind == "api_key_user":
        uid, email = _USERS[(n >> 2) % len(_USERS)]
        return {
            "type": "api_key",
            "api_key": {
                "id": _KEYS_USER[n % len(_KEYS_USER)],
                "type": "user",
                "user": {"id": uid, "email": email if t is None else _email(n, t)},
            },
        }
    if kind == "api_key_service_account":
        i = n % len(_KEYS_SVC)
        return {
            "type": "api_key",
            "api_key": {
                "id": _KEYS_SVC[i],
                "type": "service_account",
                "service_account": {"id": _SVC_ACCTS[i]},
            },
        }
    if kind == "null":
        return None
    raise ValueError(f"unknown actor kind {kind!r}; expected one of {ACTOR_KINDS}")


_MASK64 = (1 << 64) - 1


def _mix(seq: int) -> int:
    """A bijection on 64-bit integers, so distinct seqs give distinct, unordered ids."""
    x = (seq * 0x9E3779B97F4A7C15) & _MASK64
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    return x ^ (x >> 29)


def event_id(seq: int) -> str:
    """The id of the event with this seq: unique per seq, not ordered like seqs."""
    return f"audit_log-{_mix(seq + 0x5EED):016x}"


def make_event(
    event_type: str,
    effective_at: int,
    *,
    seq: int,
    actor: str = "session",
    rng: random.Random | None = None,
    hostile: bool = False,
) -> dict[str, Any]:
    """One audit-log object as the API returns it. Deterministic in (type, time, seq, actor)
    unless `rng` is given; `hostile` puts hostile strings into names, emails, agents, messages."""
    n = rng.getrandbits(30) if rng is not None else _mix(seq) >> 34
    t = HOSTILE_STRINGS[seq % len(HOSTILE_STRINGS)] if hostile else None
    ev: dict[str, Any] = {
        "object": "organization.audit_log",  # as on every event the API returns
        "id": event_id(seq),
        "type": event_type,
        "effective_at": effective_at,
    }
    scope = _PROJECT_SCOPE.get(event_type)
    if scope is None:
        scope = _PROJECT_SCOPE[event_type] = _project_scope(event_type)
    if scope == 2 or (scope == 1 and n % 3 == 0):
        # Same pick as the project.* payloads, so their `project.id` equals the payload id.
        pid, pname = _PROJECTS[n % 8]
        ev["project"] = {"id": pid, "name": pname if t is None else t}
    if actor != "absent":
        ev["actor"] = _actor(actor, n >> 3, t)
    builder = _PAYLOADS.get(event_type)
    ev[event_type] = (
        builder(n, t) if builder is not None else {"id": _rid("res_", n), "name": _name(n, t)}
    )
    return ev


def iter_events(
    n: int,
    *,
    start: int,
    end: int,
    seed: int = 0,
    same_second_ratio: float = 0.0,
    types: Sequence[str] | None = None,
    hostile_ratio: float = 0.0,
    first_seq: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yield `n` events with effective_at in [start, end), non-decreasing, cycling through
    `types` (default EVENT_TYPES) and ACTOR_KINDS. About `same_second_ratio` of them fall in
    bursts of 30..300 events sharing one second (so bursts straddle pages of 100). Event seqs
    are first_seq .. first_seq+n-1, so ids are unique across calls with disjoint seq ranges."""
    if end <= start:
        raise ValueError("end must be greater than start")
    types = list(types) if types is not None else EVENT_TYPES
    ntypes = len(types)
    span = end - start
    rng = random.Random(seed)
    mean_burst = 165
    r = min(max(same_second_ratio, 0.0), 1.0)
    p_burst = r / (mean_burst * (1 - r) + r) if r < 1 else 1.0
    burst_left = 0
    burst_t = start
    kinds = ACTOR_KINDS
    # Shift the actor cycle once per type cycle so that every type meets every actor kind.
    step = 1 if (ntypes + 1) % 5 else 2
    for i in range(n):
        t = start + (i * span) // n
        if burst_left > 0:
            burst_left -= 1
            t = burst_t
        elif p_burst and rng.random() < p_burst:
            burst_left = rng.randint(30, 300) - 1
            burst_t = t
        seq = first_seq + i
        yield make_event(
            types[i % ntypes],
            t,
            seq=seq,
            actor=kinds[(i + (i // ntypes) * step) % 5],
            rng=rng,
            hostile=bool(hostile_ratio) and rng.random() < hostile_ratio,
        )


def make_events(
    n: int,
    *,
    start: int,
    end: int,
    seed: int = 0,
    same_second_ratio: float = 0.0,
    types: Sequence[str] | None = None,
    hostile_ratio: float = 0.0,
    first_seq: int = 0,
) -> list[dict[str, Any]]:
    """The list form of iter_events (same arguments, same events)."""
    # Cyclic GC passes over a growing list of fresh dicts make big lists quadratic; pause them.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _list_events(n, start, end, seed, same_second_ratio, types, hostile_ratio, first_seq)
    finally:
        if was_enabled:
            gc.enable()


def _list_events(
    n: int,
    start: int,
    end: int,
    seed: int,
    same_second_ratio: float,
    types: Sequence[str] | None,
    hostile_ratio: float,
    first_seq: int,
) -> list[dict[str, Any]]:
    return list(
        iter_events(
            n,
            start=start,
            end=end,
            seed=seed,
            same_second_ratio=same_second_ratio,
            types=types,
            hostile_ratio=hostile_ratio,
            first_seq=first_seq,
        )
    )
