"""A hostile audit-log API (issue 11, items 4 and 5), from the one in-repo fake with its hostile
modes (`FakeOpenAI.set_faults`): cursors that cycle, `has_more` forever, events outside the
requested window. Each test checks the outcome and that no event is lost once the API behaves
again."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.deadletter import read_dead_letters
from tests.conftest import ADMIN_KEY, ORG_TYPES, cli_env, raw_file_sink, read_ndjson, run_cli
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI

# Pages of 20: the listing of the window has several, so that a cursor can come back.
PAGE_SIZE = "20"


@pytest.fixture
def events() -> list[dict[str, Any]]:
    now = int(time.time())
    events = make_events(150, start=now - 3000, end=now - 120, seed=71, types=ORG_TYPES)
    # One event without a type: it goes to the dead letters, never lost.
    return [*events, {"object": "organization.audit_log", "id": "audit_log-untyped",
                      "effective_at": now - 1000}]  # fmt: skip


@pytest.fixture
def api(events: list[dict[str, Any]]) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(events[:-1], admin_key=ADMIN_KEY) as fake:
        untyped = events[-1]
        fake.add_raw(orjson.dumps(untyped), untyped["effective_at"], "login.failed")
        yield fake


def run_once(tmp_path: Path, api: FakeOpenAI, *extra: str) -> Any:
    _, to_file = raw_file_sink(tmp_path)
    env = cli_env(
        OPENAI_ADMIN_KEY=ADMIN_KEY,
        OPENAI_BASE_URL=api.base_url,
        AUDIT_FORWARDER_PAGE_SIZE=PAGE_SIZE,
    )
    args = ["run", "--once", "--without-tenant", "--start-at", "1h", *extra, *to_file]
    return run_cli(*args, cwd=tmp_path, env=env)


def watermark(tmp_path: Path) -> int | None:
    shown = run_cli("checkpoint", "show", "--json", "--state", str(tmp_path / "s.db"), cwd=tmp_path)
    streams = orjson.loads(shown.stdout)["streams"] if shown.code == 0 else []
    return next((s["watermark_unix"] for s in streams if s["stream"] == "default"), None)


def received_plus_dead_lettered(tmp_path: Path) -> Counter[str]:
    got = Counter(doc["id"] for doc in read_ndjson(tmp_path / "out.ndjson"))
    got.update(
        letter["event"]["id"] for _, _, letter in read_dead_letters(tmp_path / "dead-letter")
    )
    return got


@pytest.mark.parametrize("mode", ["cycle", "endless"])
def test_paging_that_never_ends_fails_the_sweep_at_once_and_keeps_the_watermark(
    tmp_path: Path, api: FakeOpenAI, events: list[dict[str, Any]], mode: str
) -> None:
    api.set_faults(paging=mode)
    failed = run_once(tmp_path, api)
    assert failed.code == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("openai-audit-forwarder: error: OpenAI API: ")
    assert ("came back" if mode == "cycle" else "pages in a row") in last
    assert "the watermark stays" in last
    assert len(api.requests) <= 5
    assert watermark(tmp_path) is None

    api.set_faults(paging="")  # the API is fixed: the same command delivers everything, once
    again = run_once(tmp_path, api)
    assert again.code == 0, again.stderr
    assert received_plus_dead_lettered(tmp_path) == Counter(e["id"] for e in events)


def test_events_outside_the_requested_window_are_dropped_and_never_delivered_twice(
    tmp_path: Path, api: FakeOpenAI, events: list[dict[str, Any]]
) -> None:
    start = events[-1]["effective_at"] + 1  # the oldest events lie before the first window
    inside = [e for e in events if e["effective_at"] >= start]
    api.set_faults(strays=True)
    first = run_once(tmp_path, api, "--start-at", str(start), "-vv")  # a debug line
    assert first.code == 0, first.stderr
    assert "dropped 4 events outside the requested window" in first.stderr
    again = run_once(tmp_path, api, "--start-at", str(start))  # re-reads the overlap
    assert again.code == 0, again.stderr
    assert received_plus_dead_lettered(tmp_path) == Counter(e["id"] for e in inside)
