"""What an event needs to enter the pipeline (`forwarder/intake.py`), and deep JSON under one
recursion limit shared by all threads (`forwarder/deepjson.py`)."""

from __future__ import annotations

import sys
import threading
import time

import orjson
import pytest

from forwarder.deepjson import DEEP_NESTING, deep_recursion, dumps_deep, loads_deep
from forwarder.intake import MAX_NESTING, intake_problem, minimal_problem
from tests.conftest import REPO
from tests.fakes.events import ACTOR_KINDS, EVENT_TYPES, make_event


def test_every_sample_event_and_actor_variant_enters() -> None:
    now = time.time()
    for line in (REPO / "samples" / "audit-log.jsonl").read_bytes().splitlines():
        assert intake_problem(orjson.loads(line), now) is None
    for actor in ACTOR_KINDS:
        event = make_event(EVENT_TYPES[0], int(now) - 60, seq=1, actor=actor)
        assert intake_problem(event, now) is None


def test_unknown_types_and_extra_fields_enter() -> None:
    raw = {
        "id": "audit_log-1",
        "type": "vector_store.purged",
        "effective_at": int(time.time()) - 60,
        "vector_store.purged": {"id": "vs_1"},
        "brand_new": {"x": 1},
    }
    assert intake_problem(raw, time.time()) is None


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
    assert problem in (intake_problem(raw, time.time()) or "")


def test_a_time_out_of_range_or_nesting_too_deep_is_refused() -> None:
    now = time.time()
    event = {"id": "a", "type": "x", "effective_at": int(now) + 3 * 86400}
    assert "effective_at" in (intake_problem(event, now) or "")
    deep: dict = {}
    event = {"id": "a", "type": "x", "effective_at": int(now), "x": deep}
    for _ in range(MAX_NESTING):
        deep["d"] = deep = {}
    assert f"nested deeper than {MAX_NESTING}" in (intake_problem(event, now) or "")


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_deep_json_is_parsed_and_written_and_deeper_refused() -> None:
    value = loads_deep(_deep(3000))
    assert dumps_deep(value) == _deep(3000)
    with pytest.raises(ValueError, match=f"nested deeper than {DEEP_NESTING}"):
        loads_deep(_deep(3 * DEEP_NESTING + 10))
    assert dumps_deep(orjson.loads(_deep(1000))) is not None
    assert dumps_deep(1 << 70) == str(1 << 70)  # not a container: no depth to walk


def test_the_limit_is_lowered_only_when_the_last_thread_leaves() -> None:
    original = sys.getrecursionlimit()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with deep_recursion():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with deep_recursion():
            second_in.set()
            first_out.wait(10)
            seen["after the first left"] = sys.getrecursionlimit()
            loads_deep(_deep(3000))  # still parses: the limit is still raised

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen["after the first left"] > original
    assert sys.getrecursionlimit() == original


def test_reentrant_in_one_thread() -> None:
    original = sys.getrecursionlimit()
    with deep_recursion():
        raised = sys.getrecursionlimit()
        with deep_recursion():
            pass
        assert sys.getrecursionlimit() == raised > original
    assert sys.getrecursionlimit() == original


def test_threads_parsing_and_writing_deep_json_at_once_all_succeed_and_restore_the_limit() -> None:
    original = sys.getrecursionlimit()
    text = _deep(4000)
    value = orjson.loads(_deep(1000))
    for _ in range(3000):  # deeper than orjson writes, within the limit
        value = [value]
    failures: list[str] = []

    def work(n: int) -> None:
        for _ in range(15):
            try:
                if n % 2:
                    loads_deep(text)
                elif dumps_deep(value) is None:
                    failures.append("dumps_deep gave up")
            except (ValueError, RecursionError) as exc:
                failures.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert sys.getrecursionlimit() == original
