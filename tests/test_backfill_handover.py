"""A backfill up to now hands over to the live stream: `run` continues where it ended, with
no gap, no duplicate, and late events inside the overlap still delivered. A backfill with an
explicit end, or a live stream that has a checkpoint already, leaves the live checkpoint
alone."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson

from forwarder.timeparse import parse_when
from tests.conftest import ORG_TYPES, raw_file_sink, read_ndjson, run_cli
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI


def _live_watermark(tmp_path: Path, common: list[str], env: dict[str, str]) -> int | None:
    shown = run_cli("checkpoint", "show", "--json", "--state", common[-1], cwd=tmp_path, env=env)
    assert shown.code == 0, shown.stderr
    streams = {s["stream"]: s for s in orjson.loads(shown.stdout)["streams"]}
    live = streams.get("default")
    return None if live is None else parse_when(live["watermark"])


def _add_last_three_hours(fake_api: FakeOpenAI, n: int, seed: int) -> None:
    now = int(time.time())
    fake_api.add_events(
        make_events(n, start=now - 3 * 3600, end=now - 120, seed=seed, types=ORG_TYPES)
    )


def test_a_backfill_up_to_now_hands_over_to_a_fresh_live_stream_without_gap_or_duplicate(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    now = int(time.time())
    fake_api.add_events(
        make_events(3000, start=now - 4 * 3600 + 300, end=now - 120, seed=11, types=ORG_TYPES)
    )
    out, common = raw_file_sink(tmp_path)
    backfill = run_cli(
        "backfill",
        "--since",
        "4h",
        "--lag",
        "1h",  # the backfill ends an hour ago; the live stream takes the last hour
        "--window",
        "20m",
        "--concurrency",
        "4",
        *common,
        cwd=tmp_path,
        env=api_env,
    )
    assert backfill.code == 0, backfill.stderr
    assert "the live stream continues from" in backfill.stderr
    until = _live_watermark(tmp_path, common, api_env)
    assert until is not None and abs(until - (now - 3600)) <= 60
    backfilled = Counter(doc["id"] for doc in read_ndjson(out))
    assert backfilled and max(backfilled.values()) == 1

    # Late events: some inside the overlap before the hand-over point (the backfill read that
    # window before they arrived), and one in the same second as the hand-over point. `run`
    # re-reads a longer overlap than the backfill's default 10 minutes.
    late = make_events(
        25, start=until - 1700, end=until, seed=12, first_seq=90_000, types=ORG_TYPES
    )
    late += make_events(1, start=until, end=until + 1, seed=13, first_seq=95_000, types=ORG_TYPES)
    fake_api.add_events(late)
    once = run_cli(
        "run", "--once", "--lag", "60s", "--overlap", "30m", *common, cwd=tmp_path, env=api_env
    )
    assert once.code == 0, once.stderr

    delivered = Counter(doc["id"] for doc in read_ndjson(out))
    assert set(delivered) == set(fake_api.listing())
    assert max(delivered.values()) == 1
    assert all(event["id"] in delivered for event in late)


def test_a_backfill_with_an_explicit_end_leaves_the_live_stream_unstarted(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    _add_last_three_hours(fake_api, 200, seed=21)
    _, common = raw_file_sink(tmp_path)
    backfill = run_cli(
        "backfill", "--since", "3h", "--until", "1h", *common, cwd=tmp_path, env=api_env
    )
    assert backfill.code == 0, backfill.stderr
    assert "live stream" not in backfill.stderr
    assert _live_watermark(tmp_path, common, api_env) is None


def test_a_backfill_does_not_move_a_live_checkpoint_that_exists(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    _add_last_three_hours(fake_api, 300, seed=31)
    _, common = raw_file_sink(tmp_path)
    live = run_cli("run", "--once", "--start-at", "30m", *common, cwd=tmp_path, env=api_env)
    assert live.code == 0, live.stderr
    before = _live_watermark(tmp_path, common, api_env)
    assert before is not None
    backfill = run_cli(
        "backfill", "--since", "3h", "--lag", "1h", *common, cwd=tmp_path, env=api_env
    )
    assert backfill.code == 0, backfill.stderr
    assert "the live stream has a checkpoint already and keeps it" in backfill.stderr
    assert _live_watermark(tmp_path, common, api_env) == before
