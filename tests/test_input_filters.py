"""`--actor-id`, `--actor-email` and `--resource-id` apply to `--input` as the API applies them:
the same events, served by the fake API and read from a file, are listed alike under every
filter (the fake follows the API reference: actor ids are user, service account and API key
tracking ids; resource ids the payload's `id` and `*_id` fields)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from forwarder.sources.jsonl import JsonlSource
from forwarder.sources.openai_api import OpenAIAuditLogSource
from tests.conftest import (
    ADMIN_KEY,
    ORG_TYPES,
    raw_file_sink,
    read_ndjson,
    run_cli,
    write_jsonl,
)
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI

END = int(time.time()) - 3600
START = END - 6 * 3600


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return make_events(800, start=START, end=END, seed=23, types=ORG_TYPES)


def _first(events: list[dict[str, Any]], path: tuple[str, ...]) -> str:
    for event in events:
        value: Any = event
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str):
            return value
    raise AssertionError(f"no event has {'.'.join(path)}")


def _filters(events: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    user = _first(events, ("actor", "session", "user", "id"))
    email = _first(events, ("actor", "session", "user", "email"))
    key = _first(events, ("actor", "api_key", "id"))
    account = _first(events, ("actor", "api_key", "service_account", "id"))
    key_user_email = _first(events, ("actor", "api_key", "user", "email"))
    project = _first(events, ("project.updated", "id"))
    binding = _first(events, ("role.assignment.created", "resource_id"))
    # One event's session user and payload id, so that both filters together match.
    both = next(
        e
        for e in events
        if (e.get("actor") or {}).get("session") and isinstance(e[e["type"]].get("id"), str)
    )
    return {
        "session user id": {"actor_ids": [user]},
        "api key tracking id": {"actor_ids": [key]},
        "service account id": {"actor_ids": [account]},
        "two actor ids": {"actor_ids": [user, account]},
        "email": {"actor_emails": [email]},
        "email of an api key's user": {"actor_emails": [key_user_email]},
        "payload id": {"resource_ids": [project]},
        "nested resource_id": {"resource_ids": [binding]},
        "actor and resource": {
            "actor_ids": [both["actor"]["session"]["user"]["id"]],
            "resource_ids": [both[both["type"]]["id"], binding],
        },
        "nobody": {"actor_emails": ["nobody@example.invalid"]},
    }


def _ids(pages: Any) -> set[str]:
    return {event["id"] for page in pages for event in page}


def test_the_file_source_lists_what_the_api_lists_under_each_filter(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    source_file = write_jsonl(tmp_path / "events.jsonl", events)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        for name, given in _filters(events).items():
            api = OpenAIAuditLogSource(
                base_url=fake.base_url, admin_key=ADMIN_KEY, filters=given, retries=0
            )
            try:
                from_api = _ids(api.pages(START, END + 1))
            finally:
                api.close()
            from_file = _ids(JsonlSource(str(source_file), given).pages(START, END + 1))
            assert from_file == from_api, name
            assert len(from_file) < len(events), name
            assert from_file or name == "nobody", name


def test_run_input_with_actor_and_resource_filters_delivers_only_the_matching_events(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    source_file = write_jsonl(tmp_path / "events.jsonl", events)
    given = _filters(events)["actor and resource"]
    expected = _ids(JsonlSource(str(source_file), given).pages(START, END + 1))
    out, common = raw_file_sink(tmp_path)
    result = run_cli(
        "run",
        "--once",
        "--input",
        str(source_file),
        "--actor-id",
        given["actor_ids"][0],
        "--resource-id",
        given["resource_ids"][0],
        "--resource-id",
        given["resource_ids"][1],
        *common,
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    delivered = [event["id"] for event in read_ndjson(out)]
    assert sorted(delivered) == sorted(expected) and delivered
    assert len(delivered) < len(events)
