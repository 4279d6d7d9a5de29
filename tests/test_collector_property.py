"""Property: whatever the event times (bursts in one second, late arrivals inside the overlap),
page sizes, batch sizes, sweep times and crash points, the live collector delivers every event
exactly once to a file sink."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.collector import Collector
from forwarder.deadletter import DeadLetters
from forwarder.delivery import Delivery
from forwarder.sinks.base import Record, Rejection, parse_sink_url
from forwarder.sinks.file import FileSink
from forwarder.sources.openai_api import OpenAIAuditLogSource
from forwarder.state import State
from mappings.registry import load_mapper
from tests.conftest import ADMIN_KEY, ORG_TYPES
from tests.fakes.events import make_event
from tests.fakes.openai_api import FakeOpenAI

# A past time: the intake refuses event times more than a day ahead of the real clock.
BASE = 1_760_000_000  # 2025-10-09
OVERLAP = 120
LAG = 10


class CrashingFileSink(FileSink):
    """A file sink whose process 'dies' after writing the Nth batch, before the commit."""

    crash_after: int | None = None

    def write(self, records: list[Record]) -> list[Rejection]:
        result = list(super().write(records))
        if self.crash_after is not None:
            self.crash_after -= 1
            if self.crash_after < 0:
                raise Crash
        return result


class Crash(BaseException):
    pass


def collector_for(
    fake: FakeOpenAI, tmp: Path, page_size: int, batch_size: int, crash_after: int | None
) -> tuple[Collector, State, CrashingFileSink]:
    state = State(tmp / "s.db")
    sink = CrashingFileSink(
        parse_sink_url(f"file:{tmp / 'out.ndjson'}", "raw"), tmp / "out.ndjson", fsync=False
    )
    sink.crash_after = crash_after
    delivery = Delivery(
        [sink],
        {"raw": load_mapper("raw")},
        DeadLetters(tmp / "dl", "p"),
        stream="p",
        retry_timeout=0,
    )
    adopted = delivery.open(state.sink_position)
    if adopted:
        state.set_sink_positions(adopted)
    source = OpenAIAuditLogSource(
        base_url=fake.base_url, admin_key=ADMIN_KEY, page_size=page_size, retries=0
    )
    collector = Collector(
        stream="p",
        source=source,
        delivery=delivery,
        state=state,
        lag=LAG,
        overlap=OVERLAP,
        batch_size=batch_size,
        start_at=lambda: BASE,
    )
    return collector, state, sink


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    offsets=st.lists(st.integers(0, 900), min_size=1, max_size=150),
    late=st.lists(st.integers(0, OVERLAP - LAG - 1), max_size=40),
    page_size=st.sampled_from([1, 3, 7, 20, 100]),
    batch_size=st.integers(1, 300),
    sweeps=st.lists(st.integers(1, 400), min_size=1, max_size=5),
    crashes=st.lists(st.integers(0, 6), max_size=3),
    seed=st.integers(0, 2**16),
)
def test_sweeps_with_bursts_late_events_and_crashes_deliver_each_event_once(
    tmp_path_factory, offsets, late, page_size, batch_size, sweeps, crashes, seed
) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("prop")
    rng = random.Random(seed)
    # Many events share a second: offsets are drawn from a small range of seconds.
    events = [
        make_event(rng.choice(ORG_TYPES), BASE + off, seq=i, actor="null")
        for i, off in enumerate(offsets)
    ]
    visible = [e for e in events if e["effective_at"] < BASE + 900]
    with FakeOpenAI(visible[: len(visible) // 2], admin_key=ADMIN_KEY) as fake:
        pending = visible[len(visible) // 2 :]
        now = BASE
        seq = len(events)
        crash_plan = list(crashes)
        for step in sweeps:
            now += step
            # Events become visible as time passes (those already older than now - lag are
            # "late" but still within the overlap of the previous watermark).
            arrived = [e for e in pending if e["effective_at"] <= now - LAG]
            pending = [e for e in pending if e["effective_at"] > now - LAG]
            fake.add_events(arrived)
            # Late arrivals: older than the last watermark but inside the overlap (and never
            # before where the stream started).
            extra = [
                make_event(
                    rng.choice(ORG_TYPES),
                    max(BASE, now - LAG - back - 1),
                    seq=seq + j,
                    actor="null",
                )
                for j, back in enumerate(late[:3])
            ]
            seq += len(extra)
            late = late[3:]
            fake.add_events(extra)
            while True:
                crash_after = crash_plan.pop() if crash_plan else None
                collector, state, sink = collector_for(
                    fake, tmp, page_size, batch_size, crash_after
                )
                try:
                    collector.sweep(now=now)
                    break
                except Crash:
                    continue  # restart, as after kill -9
                finally:
                    sink.close()
                    state.close()
                    collector.source.close()
        # A last sweep long after everything arrived.
        fake.add_events(pending)
        collector, state, sink = collector_for(fake, tmp, page_size, batch_size, None)
        collector.sweep(now=max(now, BASE + 900) + LAG + 1)
        sink.close()
        state.close()
        collector.source.close()
        expected = Counter(fake.listing())
    lines = (tmp / "out.ndjson").read_bytes().splitlines()
    delivered = Counter(orjson.loads(line)["id"] for line in lines)
    assert delivered == expected


def test_a_sweep_in_the_same_second_as_the_last_commit_still_rereads_the_overlap(
    tmp_path: Path,
) -> None:
    """Two `run --once` in one wall-clock second: the second has no new span to sweep, yet
    late events that arrived in between (inside the overlap) must be delivered by it."""
    now = BASE + 600
    first = [make_event(ORG_TYPES[0], BASE + i, seq=i, actor="null") for i in range(0, 500, 7)]
    late = [make_event(ORG_TYPES[1], now - LAG - 30 - i, seq=1000 + i) for i in range(5)]
    with FakeOpenAI(first, admin_key=ADMIN_KEY) as fake:
        for added in ([], late):
            fake.add_events(added)
            collector, state, sink = collector_for(fake, tmp_path, 3, 50, None)
            try:
                collector.sweep(now=now)
                assert state.watermark("p") == now - LAG
            finally:
                sink.close()
                state.close()
                collector.source.close()
        expected = Counter(fake.listing())
    lines = (tmp_path / "out.ndjson").read_bytes().splitlines()
    assert Counter(orjson.loads(line)["id"] for line in lines) == expected


def test_a_catch_up_stopped_part_way_resumes_below_the_part_already_delivered(
    tmp_path: Path,
) -> None:
    """The listing runs newest first: after a crash, the rerun lists only what lies below the
    committed LiveSpan, and the watermark still moves only when the whole span is done."""
    now = BASE + 900
    events = [make_event(ORG_TYPES[i % 5], BASE + i * 2, seq=i, actor="null") for i in range(400)]
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        collector, state, sink = collector_for(fake, tmp_path, 20, 50, crash_after=3)
        try:
            with pytest.raises(Crash):
                collector.sweep(now=now)
            span = state.live_span("p")
            assert state.watermark("p") is None
            assert span is not None and (span.start, span.end) == (BASE, now - LAG)
            assert BASE < span.done_from < now - LAG
        finally:
            sink.close()
            state.close()
            collector.source.close()
        fake.reset_log()
        collector, state, sink = collector_for(fake, tmp_path, 20, 50, None)
        try:
            collector.sweep(now=now)
            assert state.watermark("p") == now - LAG and state.live_span("p") is None
        finally:
            sink.close()
            state.close()
            collector.source.close()
        first_request = fake.requests[0][1]
        assert first_request["effective_at[lt]"] == [str(span.done_from)]
        expected = Counter(fake.listing())
    lines = (tmp_path / "out.ndjson").read_bytes().splitlines()
    assert Counter(orjson.loads(line)["id"] for line in lines) == expected
