"""What a live catch-up costs against the fake API: requests follow the events, not the length
of the span (issue 10), and a long catch-up stays exactly once under faults and kill -9."""

from __future__ import annotations

import math
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, ORG_TYPES, cli_env, raw_file_sink, read_ndjson, run_cli
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI
from tests.waiting import wait_for

DAY = 86_400
SPANS = {"1 day": DAY, "30 days": 30 * DAY, "2 years": 730 * DAY}
DENSITIES = ("none", "1 per day", "1 per minute", "5000 in one second")


def budget(events: int) -> float:
    return 3 + 1.2 * math.ceil(events / 100)


def events_for(density: str, start: int, end: int) -> list[dict]:
    span = end - start
    if density == "none":
        return []
    if density == "5000 in one second":
        second = start + span // 3
        return make_events(5000, start=second, end=second + 1, seed=5, types=ORG_TYPES)
    if density == "1 per day":
        return make_events(max(1, span // DAY), start=start, end=end, seed=3, types=ORG_TYPES)
    # Up to a million events: lean ones (id, type, time), so the test measures the collector.
    lean = {"object": "organization.audit_log", "type": "login.succeeded"}
    return [
        {**lean, "id": f"audit_log-{at:016x}", "effective_at": at}
        for at in range(start + 30, end, 60)
    ]


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("span", list(SPANS))
def test_a_catch_up_costs_requests_by_its_events_not_by_its_length(
    tmp_path: Path, span: str, density: str
) -> None:
    now = int(time.time())
    start = now - SPANS[span]
    events = events_for(density, start, now - 120)
    with FakeOpenAI(admin_key=ADMIN_KEY) as fake:
        fake.add_events(events)
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        result = run_cli(
            "run", "--once", "--start-at", str(start), *to_file, cwd=tmp_path, env=env, timeout=600
        )
        assert result.code == 0, result.stderr
        requests = len(fake.requests)
        tenant = sum(1 for _, params in fake.requests if params.get("tenant_only") == ["true"])
    delivered = Counter(doc["id"] for doc in read_ndjson(out))
    assert set(delivered) == {e["id"] for e in events} and max(delivered.values(), default=1) == 1
    print(
        f"\n{span}, {density}: {len(events)} events, {requests} requests "
        f"({tenant} of them the tenant listing), budget {budget(len(events)):.0f}"
    )
    assert requests <= budget(len(events))


def two_years_of_events(now: int) -> tuple[int, list[dict]]:
    start = now - 730 * DAY
    # Sparse history with a busy last day, bursts of one second included.
    events = make_events(4000, start=start, end=now - DAY, seed=17, types=ORG_TYPES)
    events += make_events(
        2000, start=now - DAY, end=now - 120, seed=18, first_seq=10_000, same_second_ratio=0.3,
        types=ORG_TYPES,
    )  # fmt: skip
    return start, events


def test_two_years_of_catch_up_under_429_and_5xx_is_delivered_exactly_once_within_a_minute(
    tmp_path: Path,
) -> None:
    now = int(time.time())
    start, events = two_years_of_events(now)
    with FakeOpenAI(admin_key=ADMIN_KEY, seed=7) as fake:
        fake.add_events(events)
        fake.set_faults(rate_429=0.10, rate_5xx=0.05, retry_after=0.01)
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        began = time.monotonic()
        result = run_cli("run", "--once", "--start-at", str(start), *to_file, cwd=tmp_path, env=env)
        elapsed = time.monotonic() - began
        counts = fake.counts
    assert result.code == 0, result.stderr
    delivered = Counter(doc["id"] for doc in read_ndjson(out))
    assert set(delivered) == {e["id"] for e in events} and max(delivered.values()) == 1
    assert counts[429] > 0 and sum(counts[s] for s in (500, 502, 503)) > 0
    print(f"\n6000 events over 2 years: {sum(counts.values())} requests, {elapsed:.1f}s")
    assert elapsed < 60


def test_kill_9_at_twenty_points_of_a_two_year_catch_up_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261201)
    now = int(time.time())
    start, events = two_years_of_events(now)
    with FakeOpenAI(admin_key=ADMIN_KEY, seed=9) as fake:
        fake.add_events(events)
        fake.set_faults(rate_429=0.05, rate_5xx=0.05, retry_after=0.01, latency=0.01)
        out, to_file = raw_file_sink(tmp_path)
        # Pages of 20: the catch-up takes some 360 requests, room for 20 kills.
        env = cli_env(
            OPENAI_ADMIN_KEY=ADMIN_KEY,
            OPENAI_BASE_URL=fake.base_url,
            AUDIT_FORWARDER_PAGE_SIZE="20",
        )
        args = ["run", "--once", "--start-at", str(start), "--batch-size", "70", *to_file]
        kills = finished = 0
        while kills < 20 and finished < 2:
            seen = len(fake.requests)
            process = subprocess.Popen(
                [sys.executable, "-m", "forwarder", *args],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # Kill after a random number of answered requests: anywhere in the catch-up.
            target = seen + rng.randint(1, 16)
            wait_for(
                lambda p=process, n=target: len(fake.requests) >= n or p.poll() is not None,
                30,
                "the catch-up to make progress",
                interval=0.002,
            )
            time.sleep(rng.uniform(0, 0.03))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            else:
                finished += 1
            process.wait(timeout=30)
        assert kills == 20, f"the catch-up ended after {kills} kills"
        result = run_cli(*args, cwd=tmp_path, env=env)
        assert result.code == 0, result.stderr
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file ends in a torn line"
    delivered = Counter(doc["id"] for doc in read_ndjson(out))
    missing = {e["id"] for e in events} - set(delivered)
    repeated = [i for i, n in delivered.items() if n > 1]
    print(f"\n20 kills: {len(missing)} lost, {len(repeated)} duplicated")
    assert not missing and not repeated
