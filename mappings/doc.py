"""Renders the event catalog as a Markdown table (event type → ECS category/type → OCSF
class/activity): `python -m mappings.doc > docs/event-types.md`."""

from __future__ import annotations

import sys

from mappings.catalog import CATALOG, VERB_ACTIONS, Action, EventSpec, Realm, spec_for
from mappings.ecs import plan as ecs
from mappings.ocsf import classes as ocsf


def _ecs_cell(spec: EventSpec, realm: Realm | None = None) -> str:
    category, types = ecs.category_and_type(spec, realm)
    return f"{', '.join(category)} / {', '.join(types)}"


def _ocsf_cell(spec: EventSpec, cls: tuple[int, int]) -> str:
    class_uid, activity_id = cls
    name = ocsf.activity_name(spec, class_uid, activity_id)
    activity = "Other (99)" if activity_id == ocsf.OTHER else f"{name} ({activity_id})"
    return f"{ocsf.CLASS_NAMES[class_uid]} ({class_uid}) / {activity}"


def _rows(spec: EventSpec) -> list[tuple[str, str, str, str]]:
    """(target, ECS, OCSF, note) rows for one type: one, or one per variant."""
    target = spec.target.kind if spec.target is not None else "(actor)"
    if spec.action in (Action.GRANT, Action.REVOKE):
        return [
            (
                "user principal",
                _ecs_cell(spec),
                _ocsf_cell(spec, ocsf.classify(spec)),
                "principal_type user / service_account",
            ),
            (
                "group principal",
                _ecs_cell(spec, Realm.GROUP),
                _ocsf_cell(spec, ocsf.classify(spec, group_principal=True)),
                "principal_type group",
            ),
        ]
    if spec.action is Action.UPDATE and spec.target is not None and spec.target.roles:
        role = ocsf.classify(spec, role=True)
        other = ocsf.classify(spec, role=False)
        if role != other:
            return [
                (target, _ecs_cell(spec), _ocsf_cell(spec, role), "role changed"),
                (target, _ecs_cell(spec), _ocsf_cell(spec, other), "no role in the change"),
            ]
    return [(target, _ecs_cell(spec), _ocsf_cell(spec, ocsf.classify(spec)), "")]


def render() -> str:
    lines = [
        "# Event types and how they are mapped",
        "",
        "Generated from `mappings/catalog.py` by `python -m mappings.doc > docs/event-types.md`;",
        "a test checks that this file matches. Do not edit by hand.",
        "",
        "ECS: `event.category` / `event.type` (`event.outcome` is `failure` for `*.failed`,",
        "otherwise `success`). OCSF 1.8.0: class (`class_uid`) / activity (`activity_id`).",
        "When an event lacks what its OCSF class requires (for example a role assignment without",
        "a principal id, or a login without an actor), it is sent as Entity Management instead.",
        "",
        "| Event type | Target | ECS category / type | OCSF class / activity | Note |",
        "|---|---|---|---|---|",
    ]
    for event_type in sorted(CATALOG):
        for target, ecs_cell, ocsf_cell, note in _rows(CATALOG[event_type]):
            lines.append(f"| `{event_type}` | {target} | {ecs_cell} | {ocsf_cell} | {note} |")
    lines += [
        "",
        "## Types not in the catalog",
        "",
        "New types are never dropped. A leading `tenant.` is stripped, the last dotted part is",
        "the verb and the rest the noun. The verb decides the action; the noun decides the ECS",
        "category (group → iam/group; user, member, invite, service_account → iam/user; key,",
        "role, permission, policy, sso, scim, identity, token, grant → iam/admin; anything else",
        "→ configuration). OCSF: always Entity Management (3004).",
        "",
        "| Verb | Action | Example | ECS category / type | OCSF class / activity |",
        "|---|---|---|---|---|",
    ]
    for verb, action in VERB_ACTIONS.items():
        spec = spec_for(f"widget.{verb}")
        lines.append(
            f"| `{verb}` | {action.value} | `widget.{verb}` | {_ecs_cell(spec)} | "
            f"{_ocsf_cell(spec, ocsf.classify(spec))} |"
        )
    spec = spec_for("widget.purged")
    lines.append(
        f"| any other | other | `widget.purged` | {_ecs_cell(spec)} | "
        f"{_ocsf_cell(spec, ocsf.classify(spec))} |"
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
