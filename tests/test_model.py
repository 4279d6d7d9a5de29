"""The pydantic AuditLog model: typed actor and project, payload keyed by type, tolerant of
new event types, extra fields and a null or absent actor."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from forwarder.model import AuditLog, minimal_problem
from tests.conftest import REPO
from tests.fakes.events import ACTOR_KINDS, EVENT_TYPES, make_event


def test_every_sample_event_validates_with_its_payload_under_its_type() -> None:
    for line in (REPO / "samples" / "audit-log.jsonl").read_bytes().splitlines():
        raw = orjson.loads(line)
        event = AuditLog.model_validate(raw)
        assert event.payload == raw.get(raw["type"])
        assert minimal_problem(raw) is None


@pytest.mark.parametrize("actor", ACTOR_KINDS)
def test_actor_variants_are_typed(actor: str) -> None:
    event = AuditLog.model_validate(make_event(EVENT_TYPES[0], 1767225600, seq=1, actor=actor))
    if actor in {"null", "absent"}:
        assert event.actor is None
    elif actor == "session":
        assert event.actor and event.actor.session and event.actor.session.user
        assert event.actor.session.user.email
    elif actor == "api_key_user":
        assert event.actor and event.actor.api_key and event.actor.api_key.type == "user"
        assert event.actor.api_key.user and event.actor.api_key.user.id
    else:
        assert event.actor and event.actor.api_key
        assert event.actor.api_key.service_account and event.actor.api_key.service_account.id


def test_unknown_types_and_extra_fields_are_kept() -> None:
    raw = {
        "id": "audit_log-1",
        "type": "vector_store.purged",
        "effective_at": 1,
        "vector_store.purged": {"id": "vs_1"},
        "brand_new": {"x": 1},
    }
    event = AuditLog.model_validate(raw)
    assert event.payload == {"id": "vs_1"}
    assert event.model_dump(exclude_none=True) == raw


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"type": "x", "effective_at": 1}, "'id'"),
        ({"id": "a", "effective_at": 1}, "'type'"),
        ({"id": "a", "type": "x", "effective_at": "1"}, "'effective_at'"),
        ({"id": "a", "type": "x", "effective_at": True}, "'effective_at'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_events_without_a_usable_id_type_or_time_are_refused(raw: object, problem: str) -> None:
    assert problem in (minimal_problem(raw) or "")
    with pytest.raises(ValidationError):
        AuditLog.model_validate(raw)


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValidationError, match="payload 'x' must be an object"):
        AuditLog.model_validate({"id": "a", "type": "x", "effective_at": 1, "x": [1]})
