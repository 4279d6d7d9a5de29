"""`--batch-size` caps every commit of a backfill, also when a page holds more (a file's pages
are 500 events, the API's 100) and when a window ends with what its last pages left."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from forwarder.backfill import BackfillRequest, run_backfill
from forwarder.config import load_settings
from forwarder.state import Commit, State
from tests.conftest import ADMIN_KEY, ORG_TYPES, read_ndjson, write_jsonl
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of events of every commit the state writes (the real commit runs)."""
    sizes: list[int] = []
    commit = State.commit

    def recording(self: State, change: Commit) -> None:
        commit(self, change)
        sizes.append(len(change.delivered))

    monkeypatch.setattr(State, "commit", recording)
    return sizes


def _backfill(tmp_path: Path, since: int, until: int, **settings: Any) -> list[dict[str, Any]]:
    out = tmp_path / "out.ndjson"
    loaded = load_settings(
        sinks=[f"file:{out}"],
        output_schema="raw",
        state=tmp_path / "state.db",
        window="1h",
        batch_size=50,
        with_tenant=False,
        **settings,
    )
    request = BackfillRequest(str(since), str(until), concurrency=2)
    report = run_backfill(loaded, request, threading.Event())
    assert report.windows >= 3
    return read_ndjson(out)


def test_a_backfill_of_a_file_commits_at_most_batch_size_events_at_once(
    tmp_path: Path, commits: list[int]
) -> None:
    start = int(time.time()) - 10 * 3600
    events = make_events(1500, start=start, end=start + 3 * 3600, seed=3, types=ORG_TYPES)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    delivered = _backfill(tmp_path, start, start + 3 * 3600, input=str(source))
    assert sorted(e["id"] for e in delivered) == sorted(e["id"] for e in events)
    assert sum(commits) == len(events)
    assert max(commits) == 50


def test_a_backfill_from_the_api_commits_at_most_batch_size_events_at_once(
    tmp_path: Path, fake_api: FakeOpenAI, commits: list[int]
) -> None:
    start = int(time.time()) - 10 * 3600
    events = make_events(1500, start=start, end=start + 3 * 3600, seed=4, types=ORG_TYPES)
    fake_api.add_events(events)
    delivered = _backfill(
        tmp_path,
        start,
        start + 3 * 3600,
        admin_key=ADMIN_KEY,
        base_url=fake_api.base_url,
        page_size=100,
    )
    assert len({e["id"] for e in delivered}) == len(delivered) == len(events)
    assert sum(commits) == len(events)
    assert max(commits) == 50
