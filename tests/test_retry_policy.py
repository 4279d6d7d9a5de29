"""The one retry policy (forwarder/retry.py) and its users: the wait honours the server's
`retry-after` within the cap, the stop signal wakes a waiting retry at once with `Stopped`,
what a layer's classifier calls final is tried once, each budget (attempts, seconds) holds,
each retry is logged once and counted with its labels, and nothing outside the policy sleeps."""

from __future__ import annotations

import http.server
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tenacity import RetryCallState, Retrying, wait_none

from forwarder import metrics
from forwarder.deadletter import DeadLetters
from forwarder.delivery import Delivery
from forwarder.errors import AuthError, DeliveryError, SourceError, Stopped
from forwarder.retry import Backoff, retrying
from forwarder.sinks import open_sink
from forwarder.sinks.base import (
    Record,
    Sink,
    SinkError,
    SinkSpec,
    parse_sink_url,
    sink_failure_is_passing,
)
from forwarder.sinks.retrying import sink_retrying
from forwarder.sources.openai_api import (
    OpenAIAuditLogSource,
    TenantRefused,
    api_failure_is_passing,
    refusal_status,
)
from forwarder.sources.transport import BodyTooLarge, Malformed
from mappings.registry import load_mapper
from tests.conftest import ADMIN_KEY, recent_events
from tests.fakes.openai_api import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]


class Hinted(SinkError):
    """A passing failure that carries the server's own wait."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


def state_after(exc: BaseException, attempt: int, since_start: float = 0.0) -> RetryCallState:
    """The tenacity state after attempt number `attempt` failed with `exc`."""
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    state.outcome_timestamp = state.start_time + since_start
    return state


def failing(exc: BaseException, calls: list[float]) -> Any:
    def attempt() -> None:
        calls.append(time.monotonic())
        raise exc

    return attempt


# -- the wait --------------------------------------------------------------------------------


def test_the_backoff_is_jittered_exponential_and_capped() -> None:
    wait = Backoff(0.5, 30.0)
    for attempt, high in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (500, 30.0)]:
        waits = [wait(state_after(SinkError("x"), attempt)) for _ in range(200)]
        assert all(high / 2 <= w <= high for w in waits), (attempt, min(waits), max(waits))
        assert len(set(waits)) > 100  # jittered: clients that failed together spread apart


def test_retry_after_is_honoured_and_still_capped() -> None:
    wait = Backoff(0.5, 60.0)
    assert all(wait(state_after(Hinted(7.0), 1)) == 7.0 for _ in range(50))
    assert wait(state_after(Hinted(600.0), 1)) == 60.0  # x-ratelimit-reset: 10m, capped
    # A hint of 0 still leaves a quarter of the backoff, so a server saying "now" every time
    # is not hammered.
    assert all(1.0 <= wait(state_after(Hinted(0.0), 5)) <= 2.0 for _ in range(50))
    assert 0.25 <= wait(state_after(Hinted(None), 1)) <= 0.5


def test_the_wait_never_runs_past_the_budget() -> None:
    wait = Backoff(0.5, 30.0, budget=10.0)
    assert wait(state_after(SinkError("x"), 8, since_start=9.5)) == pytest.approx(0.5)
    assert wait(state_after(SinkError("x"), 8, since_start=12.0)) == 0.0


def test_the_source_waits_what_retry_after_asks_through_the_policy() -> None:
    with FakeOpenAI(recent_events(30, hours=1, seed=5), admin_key=ADMIN_KEY) as fake:
        fake.fail_next(429, 2, retry_after=7.0)
        source = OpenAIAuditLogSource(base_url=fake.base_url, admin_key=ADMIN_KEY, page_size=50)
        slept: list[float] = []
        source._retrying = source._retrying.copy(sleep=slept.append)
        pages = list(source.pages(0, None))
        source.close()
    assert slept == [7.0, 7.0]
    assert sum(len(page) for page in pages) == 30


# -- the sleep wakes on stop -------------------------------------------------------------------


def test_the_stop_signal_wakes_a_waiting_retry_at_once_with_stopped() -> None:
    stop = threading.Event()
    calls: list[float] = []
    retrier = sink_retrying(
        stop=stop, what="sink x", attempts=5, backoff=60.0, cap=60.0, give_up=lambda e, n: e
    )
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped, match="stopped while waiting to retry sink x"):
        retrier(failing(SinkError("down"), calls))
    assert time.monotonic() - started < 5  # not the 30-60 s backoff
    assert len(calls) == 1  # and no attempt after the stop (tenacity's event sleep makes one)


def test_a_stop_that_came_during_the_attempt_ends_with_stopped_not_a_give_up() -> None:
    stop = threading.Event()

    def attempt() -> None:
        stop.set()
        raise SinkError("down")

    retrier = sink_retrying(
        stop=stop, what="sink x", attempts=3, backoff=0, cap=0, give_up=lambda e, n: e
    )
    with pytest.raises(Stopped):
        retrier(attempt)


# -- classifiers --------------------------------------------------------------------------------


def test_a_permanent_sink_error_is_tried_once() -> None:
    calls: list[float] = []
    retrier = sink_retrying(
        stop=threading.Event(), what="s", attempts=5, backoff=0, cap=0, give_up=lambda e, n: e
    )
    with pytest.raises(SinkError, match="no such bucket") as info:
        retrier(failing(SinkError("no such bucket", permanent=True), calls))
    assert info.value.permanent and len(calls) == 1
    assert sink_failure_is_passing(SinkError("reset"))
    assert not sink_failure_is_passing(ValueError("a bug is not retried"))


@pytest.mark.parametrize(
    ("failure", "passing"),
    [
        (SourceError("HTTP 429", status=429), True),
        (SourceError("HTTP 503", status=503), True),
        (SourceError("HTTP 408", status=408), True),
        (Malformed("malformed JSON in a 200 response"), True),
        (BodyTooLarge(), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.ConnectError("refused"), True),
        (AuthError("HTTP 401", status=401), False),
        (AuthError("HTTP 403", status=403), False),
        (SourceError("refused: HTTP 400", status=400), False),
        (SourceError("refused: HTTP 404", status=404), False),
        (SourceError("TLS certificate rejected"), False),
        (Stopped("stopped"), False),
    ],
)
def test_the_source_classifier(failure: BaseException, passing: bool) -> None:
    assert api_failure_is_passing(failure) is passing


def test_final_api_answers_are_not_retried_and_carry_their_status() -> None:
    with FakeOpenAI(recent_events(5, hours=1, seed=6), admin_key=ADMIN_KEY) as fake:
        wrong = OpenAIAuditLogSource(base_url=fake.base_url, admin_key=ADMIN_KEY + "x")
        with pytest.raises(AuthError) as info:
            list(wrong.pages(0, None))
        wrong.close()
        assert info.value.status == 401 and fake.counts[401] == 1
        fake.fail_next(400, 1)
        source = OpenAIAuditLogSource(base_url=fake.base_url, admin_key=ADMIN_KEY)
        with pytest.raises(SourceError) as refused:
            list(source.pages(0, None))
        source.close()
    assert refused.value.status == 400 and fake.counts[400] == 1
    assert refusal_status(refused.value) == 400
    # The status is read from the exception, not from its text.
    assert refusal_status(SourceError("the text says HTTP 403", status=None)) is None
    assert refusal_status(SourceError("no number here", status=404)) == 404
    assert TenantRefused("refused", 403).status == 403


# -- budgets, warnings, metrics ----------------------------------------------------------------


def test_the_attempt_budget_holds_and_the_give_up_names_it() -> None:
    calls: list[float] = []
    retrier = sink_retrying(
        stop=threading.Event(),
        what="s",
        attempts=3,
        backoff=0.01,
        cap=0.01,
        give_up=lambda exc, n: SinkError(f"{exc} (after {n} attempts)"),
    )
    with pytest.raises(SinkError, match=r"^down \(after 3 attempts\)$"):
        retrier(failing(SinkError("down"), calls))
    assert len(calls) == 3


def test_the_source_makes_retries_plus_one_attempts_and_counts_each_retry() -> None:
    retries = metrics.API_RETRIES.labels("budget-test")
    before = retries._value.get()
    with FakeOpenAI(recent_events(5, hours=1, seed=7), admin_key=ADMIN_KEY) as fake:
        fake.fail_next(503, 10)
        source = OpenAIAuditLogSource(
            base_url=fake.base_url, admin_key=ADMIN_KEY, retries=2, stream="budget-test"
        )
        source._retrying = source._retrying.copy(wait=wait_none())
        with pytest.raises(SourceError, match="giving up after 3 attempts; last: HTTP 503"):
            list(source.pages(0, None))
        source.close()
    assert fake.counts[503] == 3
    assert retries._value.get() - before == 2


class FlakySink(Sink):
    """Fails the first `failures` writes with a passing SinkError."""

    def __init__(self, failures: int, permanent: bool = False) -> None:
        super().__init__(parse_sink_url("file:/nonexistent/flaky?schema=raw"))
        self.failures = failures
        self.permanent = permanent
        self.writes = 0

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> FlakySink:
        raise NotImplementedError

    def write(self, records: Any) -> list:
        self.writes += 1
        if self.writes <= self.failures:
            raise SinkError("receiver down", permanent=self.permanent)
        return []

    def check(self) -> str:
        return "ok"


def record_events(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"evt_{i}", "type": "login.succeeded", "effective_at": int(time.time()) - 60}
        for i in range(n)
    ]


def delivery(sink: Sink, tmp_path: Path, **kwargs: Any) -> Delivery:
    return Delivery(
        [sink],
        {"raw": load_mapper("raw")},
        DeadLetters(tmp_path / "dl", "retry-test"),
        stream="retry-test",
        **kwargs,
    )


def test_delivery_retries_a_passing_failure_logs_each_retry_once_and_counts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FlakySink(failures=2)
    counted = metrics.SINK_RETRIES.labels("retry-test", sink.name)
    before = counted._value.get()
    caplog.set_level(logging.WARNING)
    delivery(sink, tmp_path, backoff_cap=0.01).deliver(record_events(3))
    assert sink.writes == 3
    assert counted._value.get() - before == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    first = rf"sink {re.escape(sink.name)}: receiver down; retry 1 in \S+s"
    assert re.fullmatch(first, warnings[0]), warnings
    assert all(getattr(r, "stream", None) == "retry-test" for r in caplog.records)


def test_delivery_gives_up_at_its_deadline_and_a_permanent_failure_at_once(
    tmp_path: Path,
) -> None:
    down = FlakySink(failures=10**6)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"receiver down \(gave up after \d+ attempts\)"):
        delivery(down, tmp_path, retry_timeout=1.0, backoff_cap=0.2).deliver(record_events(1))
    took = time.monotonic() - started
    assert 1.0 <= took < 10, took  # the last attempt comes at the deadline, not long after
    assert down.writes >= 3
    refused = FlakySink(failures=1, permanent=True)
    with pytest.raises(DeliveryError, match=r"^sink .*: receiver down$"):
        delivery(refused, tmp_path, retry_timeout=60.0).deliver(record_events(1))
    assert refused.writes == 1


def test_delivery_binds_its_stop_signal_to_every_sink(tmp_path: Path) -> None:
    stop = threading.Event()
    sink = FlakySink(failures=0)
    delivery(sink, tmp_path, stop=stop)
    assert sink.stop is stop
    relp = open_sink("syslog+relp://127.0.0.1:1?schema=raw")
    delivery(relp, tmp_path, stop=stop)
    assert relp.stop is stop and relp._relp is not None and relp._relp.stop is stop
    assert relp._stream is not None and relp._stream.stop is stop  # its connects and sends


def test_a_retrier_copy_without_waits_keeps_the_budget() -> None:
    calls: list[float] = []
    retrier = retrying(
        stop=threading.Event(),
        what="x",
        passing=lambda exc: True,
        base=60.0,
        cap=60.0,
        attempts=4,
    ).copy(wait=wait_none())
    with pytest.raises(ValueError, match="boom"):  # no give_up: the last failure itself
        retrier(failing(ValueError("boom"), calls))
    assert len(calls) == 4


# -- botocore makes one attempt: Delivery's policy is the only layer -----------------------------


@pytest.fixture
def failing_s3() -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            requests.append(self.path)
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(503)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", requests
    server.shutdown()
    server.server_close()


def test_s3_makes_one_request_per_object_and_leaves_retrying_to_delivery(
    failing_s3: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, requests = failing_s3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    sink = open_sink(f"s3://bucket/prefix?endpoint_url={endpoint}&region=us-east-1")
    record = Record("evt_1", "login.succeeded", 1_700_000_000, {"id": "evt_1"})
    with pytest.raises(SinkError) as info:
        sink.write([record])
    sink.close()
    assert not info.value.permanent  # a 503 may pass: Delivery retries the batch
    assert len(requests) == 1  # botocore's standard mode would have made 4


# -- nothing outside the policy sleeps -----------------------------------------------------------


def test_no_module_sleeps_outside_the_retry_policy_but_the_state_wal_poll() -> None:
    sleepers = {
        str(path.relative_to(REPO))
        for path in (REPO / "forwarder").rglob("*.py")
        if re.search(r"\btime\.sleep\(|\bfrom time import .*\bsleep\b", path.read_text())
    }
    assert sleepers == {"forwarder/state/schema.py"}


def progressing(attempts_with_progress: int) -> tuple[Any, list[float], list[int]]:
    """An attempt that always fails, the first `attempts_with_progress` times after getting
    something through; its calls, and the progress count."""
    calls: list[float] = []
    acknowledged = [0]

    def attempt() -> None:
        calls.append(time.monotonic())
        if len(calls) <= attempts_with_progress:
            acknowledged[0] += 1
        raise SinkError("reset")

    return attempt, calls, acknowledged


def test_with_progress_the_budget_counts_only_attempts_in_a_row_without_it() -> None:
    """RELP's `retries=`: failures in a row without a message acknowledged (sink-syslog.md)."""
    attempt, calls, acknowledged = progressing(6)
    retrier = sink_retrying(
        stop=threading.Event(),
        what="s",
        attempts=2,
        backoff=0,
        cap=0,
        give_up=lambda exc, n: SinkError(f"{exc} after {n}"),
        progress=lambda: acknowledged[0],
    )
    with pytest.raises(SinkError, match="reset after 7"):
        retrier(attempt)
    assert len(calls) == 7  # six with progress, then two in a row without (the 6th counts)


def test_progress_restarts_the_backoff() -> None:
    attempt, calls, acknowledged = progressing(3)
    slept: list[float] = []
    retrier = sink_retrying(
        stop=threading.Event(),
        what="s",
        attempts=4,
        backoff=1.0,
        cap=100.0,
        give_up=lambda exc, n: exc,
        progress=lambda: acknowledged[0],
    ).copy(sleep=slept.append)
    with pytest.raises(SinkError):
        retrier(attempt)
    assert len(calls) == 6  # 3 with progress; the 3rd starts the run of 4 failures
    highs = [1.0, 1.0, 1.0, 2.0, 4.0]  # back to the first step after each bit of progress
    assert all(high / 2 <= wait <= high for wait, high in zip(slept, highs, strict=True)), slept
