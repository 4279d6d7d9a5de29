"""End to end against the fake API: every event reaches the file sink exactly once, through
backfill and live sweeps, with rate limits, server errors and late-arriving events."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.conftest import ORG_TYPES, raw_file_sink, read_ndjson, recent_events, run_cli
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI


def ids_in(path: Path) -> Counter[str]:
    return Counter(doc["id"] for doc in read_ndjson(path))


def test_backfill_then_run_once_deliver_every_event_exactly_once_despite_429_and_5xx(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    events = recent_events(5200, hours=4, seed=7, same_second_ratio=0.5)
    fake_api.add_events(events)
    fake_api.set_faults(rate_429=0.10, rate_5xx=0.05, retry_after=0.01)
    boundary = int(time.time()) - 2 * 3600  # backfill up to here, live from here
    out, common = raw_file_sink(tmp_path)

    backfill = run_cli(
        "backfill",
        "--since",
        str(events[0]["effective_at"]),
        "--until",
        str(boundary),
        "--window",
        "20m",
        "--concurrency",
        "4",
        *common,
        cwd=tmp_path,
        env=api_env,
    )
    assert backfill.code == 0, backfill.stderr
    assert "backfill complete" in backfill.stderr
    once = run_cli(
        "run",
        "--once",
        "--start-at",
        str(boundary),
        "--lag",
        "60s",
        *common,
        cwd=tmp_path,
        env=api_env,
    )
    assert once.code == 0, once.stderr

    delivered = ids_in(out)
    expected = set(fake_api.listing())  # tenant-scoped events need their own stream
    assert len(expected) >= 5000
    assert set(delivered) == expected
    assert max(delivered.values()) == 1
    counts = fake_api.counts
    assert counts[429] > 0 and sum(counts[s] for s in (500, 502, 503)) > 0


def test_many_events_in_one_second_across_page_boundaries_arrive_once(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    second = int(time.time()) - 600
    events = make_events(737, start=second, end=second + 1, seed=3, types=ORG_TYPES)
    fake_api.add_events(events)
    out, to_file = raw_file_sink(tmp_path)
    result = run_cli(
        "run",
        "--once",
        "--start-at",
        str(second - 5),
        *to_file,
        cwd=tmp_path,
        env=api_env,
    )
    assert result.code == 0, result.stderr
    delivered = ids_in(out)
    assert set(delivered) == set(fake_api.listing()) and max(delivered.values()) == 1


def test_late_events_inside_the_overlap_are_delivered_exactly_once(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    now = int(time.time())
    first = make_events(300, start=now - 1800, end=now - 120, seed=1, types=ORG_TYPES)
    fake_api.add_events(first)
    out, to_file = raw_file_sink(tmp_path)
    common = [
        "run",
        "--once",
        "--lag",
        "60s",
        "--overlap",
        "10m",
        "--start-at",
        str(now - 1800),
        *to_file,
    ]
    assert run_cli(*common, cwd=tmp_path, env=api_env).code == 0
    # Late arrivals: effective_at older than the watermark (now - 60s), inside the overlap,
    # one of them in the very second of an event already delivered.
    late = make_events(40, start=now - 400, end=now - 90, seed=2, first_seq=10_000, types=ORG_TYPES)
    late[0]["effective_at"] = first[-1]["effective_at"]
    fake_api.add_events(late)
    # And one too old for the overlap: documented as the limit of --overlap.
    too_old = make_events(
        1, start=now - 1700, end=now - 1699, seed=4, first_seq=20_000, types=ORG_TYPES
    )
    fake_api.add_events(too_old)
    time.sleep(1.1)  # the next sweep has a new second to ask for, or it makes no request
    assert run_cli(*common, cwd=tmp_path, env=api_env).code == 0
    assert run_cli(*common, cwd=tmp_path, env=api_env).code == 0

    delivered = ids_in(out)
    assert set(fake_api.listing()) - {too_old[0]["id"]} == set(delivered)
    assert max(delivered.values()) == 1
    assert too_old[0]["id"] not in delivered


def test_run_once_twice_in_a_row_delivers_nothing_new(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    events = recent_events(400, hours=1, seed=5)
    fake_api.add_events(events)
    out, to_file = raw_file_sink(tmp_path)
    common = [
        "run",
        "--once",
        "--start-at",
        "2h",
        *to_file,
    ]
    assert run_cli(*common, cwd=tmp_path, env=api_env).code == 0
    size = out.stat().st_size
    assert run_cli(*common, cwd=tmp_path, env=api_env).code == 0
    assert out.stat().st_size == size
    assert len(ids_in(out)) == len(fake_api.listing())


def test_rerunning_an_interrupted_backfill_resumes_without_duplicates(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    events = recent_events(2000, hours=6, seed=11, same_second_ratio=0.3)
    fake_api.add_events(events)
    out, to_file = raw_file_sink(tmp_path)
    args = [
        "backfill",
        "--since",
        "7h",
        "--until",
        "1m",
        "--window",
        "30m",
        "--concurrency",
        "3",
        *to_file,
    ]
    # The API fails hard half way through: the run gives up, committed windows are kept.
    fake_api.set_faults(latency=0.02)

    def break_after_some_pages() -> None:
        deadline = time.monotonic() + 60
        while len(fake_api.requests) < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
        fake_api.set_faults(rate_5xx=1.0)

    threading.Thread(target=break_after_some_pages, daemon=True).start()
    env = {**api_env, "AUDIT_FORWARDER_REQUEST_RETRIES": "2"}
    failed = run_cli(*args, cwd=tmp_path, env=env)
    assert failed.code == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("openai-audit-forwarder: error: ")
    partial = ids_in(out)
    assert 0 < len(partial) < len(fake_api.listing()) and max(partial.values()) == 1
    fake_api.set_faults(rate_5xx=0.0)
    again = run_cli(*args, cwd=tmp_path, env=api_env)
    assert again.code == 0, again.stderr
    delivered = ids_in(out)
    assert set(delivered) == set(fake_api.listing()) and max(delivered.values()) == 1
    third = run_cli(*args, cwd=tmp_path, env=api_env)
    assert third.code == 0 and "already complete" in third.stderr
    assert ids_in(out) == delivered


def test_a_window_denser_than_the_page_budget_is_split_and_still_complete(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    events = recent_events(3000, hours=1, seed=13, same_second_ratio=0.4)
    fake_api.add_events(events)
    out, to_file = raw_file_sink(tmp_path)
    result = run_cli(
        "backfill",
        "--since",
        "2h",
        "--until",
        "1m",
        "--window",
        "2h",
        "--page-budget",
        "3",
        "--concurrency",
        "4",
        *to_file,
        cwd=tmp_path,
        env=api_env,
    )
    assert result.code == 0, result.stderr
    delivered = ids_in(out)
    assert set(delivered) == set(fake_api.listing()) and max(delivered.values()) == 1
    show = run_cli("checkpoint", "show", "--json", "--state", str(tmp_path / "s.db"), cwd=tmp_path)
    jobs = orjson.loads(show.stdout)["backfills"]
    assert jobs[0]["windows"] > 1  # the single 2h window was split
    assert jobs[0]["events"] == len(fake_api.listing())
