"""pySigma processing pipelines from the detection rules' field names (`detections/`) to our
ECS and OCSF documents, and to the column names a SIEM gives those documents (Splunk's `{}`
for arrays, the Sentinel table's columns). One table says where each rule field lives; the
pipelines are built from it. Needs the `detections` extra (pySigma)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMAS = ("ecs", "ocsf")


@dataclass(frozen=True)
class RuleField:
    """A field the rules use. Paths are dotted document paths; `[]` marks a list (a list of
    strings at the end, a list of objects in the middle: `user.groups[].name`). Several paths
    are alternatives (the value lives in one of them, depending on the event type)."""

    name: str
    meaning: str
    ecs: tuple[str, ...]
    ocsf: tuple[str, ...]
    column: str  # the column of the Sentinel table (docs/detections.md)
    multi: bool = False  # several values per event (a list that is not always of one)

    def paths(self, schema: str) -> tuple[str, ...]:
        return self.ecs if schema == "ecs" else self.ocsf


_LIMIT_MEANING = "the new limit of a rate_limit.updated"


def _limit(name: str, column: str) -> RuleField:
    return RuleField(
        name,
        _LIMIT_MEANING,
        (f"entity.target.metrics.{name}",),
        (f"entity_result.data.{name}",),
        column,
    )


FIELDS: tuple[RuleField, ...] = (
    RuleField(
        "type", "the audit-log event type", ("event.action",), ("metadata.event_code",), "EventType"
    ),
    RuleField(
        "actor.id",
        "who acted: the user id, or the service account id of an API key",
        ("user.id",),
        ("actor.user.uid",),
        "ActorId",
    ),
    RuleField(
        "actor.email",
        "the acting user's email (sessions and user API keys)",
        ("user.email",),
        ("actor.user.email_addr",),
        "ActorEmail",
    ),
    RuleField(
        "actor.ip",
        "the session's source IP address",
        ("source.ip",),
        ("src_endpoint.ip",),
        "ActorIp",
    ),
    RuleField(
        "error.code",
        "the error code of a *.failed event",
        ("error.code",),
        ("status_code",),
        "ErrorCode",
    ),
    RuleField(
        "error.message",
        "the error message of a *.failed event",
        ("error.message",),
        ("status_detail",),
        "ErrorMessage",
    ),
    RuleField(
        "target.role",
        "the role given to a user, service account or invitee (owner, member, reader)",
        ("user.target.roles[]", "user.changes.roles[]"),
        ("privileges[]", "user.groups[].name", "entity.data.role"),
        "TargetRole",
    ),
    RuleField(
        "allowed_ips",
        "the CIDR ranges of an IP allowlist",
        ("entity.target.raw.allowed_ips[]",),
        ("entity.data.allowed_ips[]", "entity_result.data.allowed_ips[]"),
        "AllowedIps",
        multi=True,
    ),
    RuleField(
        "api_call_logging",
        "organization.updated: the API-call logging mode asked for",
        ("entity.target.raw.api_call_logging",),
        ("entity_result.data.api_call_logging",),
        "ApiCallLogging",
    ),
    RuleField(
        "permissions",
        "what a role or API key grants (permissions added, scopes)",
        ("entity.target.attributes.permissions[]",),
        (
            "entity.data.permissions[]",
            "entity.data.scopes[]",
            "entity_result.data.permissions[]",
            "entity_result.data.permissions_added[]",
            "entity_result.data.scopes[]",
        ),
        "Permissions",
        multi=True,
    ),
    RuleField(
        "resource_type",
        "the scope of a role (api.organization, api.project, ...)",
        ("entity.target.raw.resource_type",),
        ("entity.data.resource_type", "entity_result.data.resource_type"),
        "ResourceType",
    ),
    _limit("max_requests_per_1_minute", "MaxRequestsPerMinute"),
    _limit("max_tokens_per_1_minute", "MaxTokensPerMinute"),
    _limit("max_requests_per_1_day", "MaxRequestsPerDay"),
    _limit("batch_1_day_max_input_tokens", "BatchMaxInputTokensPerDay"),
)
BY_NAME = {f.name: f for f in FIELDS}

#: Where each schema's documents keep the event time and id (the SQLite table's columns).
TIME_FIELD = {"ecs": "@timestamp", "ocsf": "time"}
ID_FIELD = {"ecs": "event.id", "ocsf": "metadata.original_event_uid"}
#: Document subtrees whose keys vary by event type: Elasticsearch maps them `flattened`, which
#: ES|QL cannot read.
FLATTENED = {
    "ecs": ("entity.target.raw.", "entity.target.attributes."),
    "ocsf": ("entity.data.", "entity_result.data."),
}
#: Where the documents are found, per target and schema.
SPLUNK_INDEX = "openai_audit"  # as in packaging/splunk/inputs.conf.example and docs/deploy.md
SPLUNK_SOURCETYPE = {"ecs": "openai:audit:ecs", "ocsf": "openai:audit:ocsf"}
ELASTIC_INDEX = {"ecs": "logs-openai_audit_forwarder.audit-*", "ocsf": "openai-audit-ocsf-*"}
SENTINEL_TABLE = {"ecs": "OpenAIAudit_CL", "ocsf": "OpenAIAuditOCSF_CL"}


def plain(path: str) -> str:
    """The dotted name of a path (SQLite column, Elasticsearch field)."""
    return path.replace("[]", "")


def splunk(path: str) -> str:
    """The name Splunk's JSON extraction (KV_MODE=json) gives a path: `{}` after a list."""
    return path.replace("[]", "{}")


def is_list(path: str) -> bool:
    return "[]" in path


def is_flattened(schema: str, path: str) -> bool:
    return plain(path).startswith(FLATTENED[schema])


def list_paths(schema: str) -> set[str]:
    """Plain names of the list fields the rules read in `schema`'s documents."""
    return {plain(p) for f in FIELDS for p in f.paths(schema) if is_list(p)}


def field_names(schema: str, target: str) -> dict[str, list[str]]:
    """Rule field → the field names `target` knows them by in `schema`'s documents."""
    if target == "kusto":
        return {f.name: [f.column] for f in FIELDS}
    name = splunk if target == "splunk" else plain
    return {f.name: [name(p) for p in f.paths(schema)] for f in FIELDS}


def pipeline_dict(schema: str, target: str = "sqlite") -> dict[str, Any]:
    """The pipeline that maps the rules' fields for `target` over `schema` documents and tells
    the target where the documents are (Splunk macro, Elastic index, Sentinel table), in
    pySigma's pipeline file format (`sigma convert -p FILE`)."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; expected one of {', '.join(SCHEMAS)}")
    mapping = {k: v[0] if len(v) == 1 else v for k, v in field_names(schema, target).items()}
    spec: dict[str, Any] = {
        "name": f"openai-audit-forwarder {schema.upper()} fields ({target})",
        "priority": 20,
        "transformations": [
            {
                "id": f"openai_audit_{schema}_fields",
                "type": "field_name_mapping",
                "mapping": mapping,
                "rule_conditions": [{"type": "logsource", "product": "openai", "service": "audit"}],
            }
        ],
    }
    if target == "splunk":
        spec["transformations"].insert(
            0,
            {
                "id": "openai_audit_splunk_source",
                "type": "add_condition",
                "conditions": {"index": SPLUNK_INDEX, "sourcetype": SPLUNK_SOURCETYPE[schema]},
            },
        )
    elif target in ("esql", "eql"):
        spec["transformations"].append(
            {
                "id": "openai_audit_index",
                "type": "set_state",
                "key": "index",
                "val": ELASTIC_INDEX[schema],
            }
        )
    elif target == "kusto":
        spec["postprocessing"] = [
            {"type": "embed", "prefix": f"{SENTINEL_TABLE[schema]}\n| where "}
        ]
    return spec


def pipeline(schema: str, target: str = "sqlite"):  # -> sigma ProcessingPipeline
    """`pipeline_dict` as a pySigma ProcessingPipeline (needs the `detections` extra)."""
    from sigma.processing.pipeline import ProcessingPipeline

    return ProcessingPipeline.from_dict(pipeline_dict(schema, target))
