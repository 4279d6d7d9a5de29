"""A listing that breaks the API's rules (issue 15, items 2, 3, 8 and 9), from the one in-repo
fake with its hostile modes (`FakeOpenAI.set_faults`): one absurd time on a first page, a page
without `has_more` (or with `data: null`, or `has_more` without a cursor), pages listed oldest
first, and a server that ignores `tenant_only`. Each test counts the events in and out
(delivered + dead-lettered = listed), checks the exit code and the one line printed, and
reruns against a server that behaves again: nothing lost, nothing repeated."""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from forwarder import metrics
from forwarder.backfill import BackfillReport, BackfillRequest, backfill_streams
from forwarder.config import load_settings
from forwarder.deadletter import read_dead_letters
from forwarder.state import BackfillJob, Commit, State, Window, backfill_scope
from tests.conftest import ADMIN_KEY, ORG_TYPES, cli_env, raw_file_sink, read_ndjson, run_cli
from tests.fakes.events import EVENT_TYPES, is_tenant_scoped, make_events
from tests.fakes.openai_api import MALFORMED_PAGES, FakeOpenAI
from tests.peers import free_port
from tests.waiting import wait_for

ERROR = "openai-audit-forwarder: error: "
# Retries of a malformed page: few and short, so that giving up takes a second or two.
FAST_RETRIES = {"AUDIT_FORWARDER_REQUEST_RETRIES": "2"}


def events_of_the_last_hour(n: int, seed: int, types: list[str] = ORG_TYPES) -> list[dict]:
    now = int(time.time())
    return make_events(n, start=now - 3600, end=now - 120, seed=seed, types=types)


def run_once(tmp_path: Path, fake: FakeOpenAI, *extra: str, **env: str) -> Any:
    _, to_file = raw_file_sink(tmp_path)
    environment = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url, **env)
    dead = ["--dead-letter", str(tmp_path / "dl")]
    args = ["run", "--once", "--start-at", "2h", *extra, *to_file, *dead]
    return run_cli(*args, cwd=tmp_path, env=environment)


def backfill(tmp_path: Path, fake: FakeOpenAI, *extra: str) -> Any:
    _, to_file = raw_file_sink(tmp_path)
    env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
    dead = ["--dead-letter", str(tmp_path / "dl")]
    args = ["backfill", "--since", "2h", *extra, *to_file, *dead]
    return run_cli(*args, cwd=tmp_path, env=env)


def delivered(tmp_path: Path) -> Counter[str]:
    return Counter(doc["id"] for doc in read_ndjson(tmp_path / "out.ndjson"))


def dead_lettered(tmp_path: Path) -> Counter[str]:
    return Counter(letter["event"]["id"] for _, _, letter in read_dead_letters(tmp_path / "dl"))


def checkpoint(tmp_path: Path, stream: str = "default") -> dict[str, Any] | None:
    shown = run_cli("checkpoint", "show", "--json", "--state", str(tmp_path / "s.db"), cwd=tmp_path)
    assert shown.code == 0, shown.stderr
    streams = orjson.loads(shown.stdout)["streams"]
    return next((s for s in streams if s["stream"] == stream), None)


def remembered_ids(tmp_path: Path, stream: str = "default") -> int:
    """Ids the state holds as delivered for the stream (with or without a watermark)."""
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db:
        query = "SELECT count(*) FROM delivered WHERE scope=?"
        return db.execute(query, (f"live:{stream}",)).fetchone()[0]


def error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(ERROR)]


# -- item 2: one absurd effective_at on a first page ------------------------------------------


def with_absurd_event_first(fake: FakeOpenAI, events: list[dict]) -> dict:
    """An event of `effective_at: 1000` listed first (as the newest of the window)."""
    absurd = dict(events[0], id="audit_log-absurd-time", effective_at=1000)
    newest = max(e["effective_at"] for e in events)
    fake.add_raw(orjson.dumps(absurd), newest + 1, absurd["type"])
    return absurd


@pytest.mark.parametrize("tenant_only", ["honoured", "ignored"])
def test_one_absurd_effective_at_on_the_first_page_is_dead_lettered_and_run_delivers_the_rest(
    tmp_path: Path, tenant_only: str
) -> None:
    events = events_of_the_last_hour(499, seed=151)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        absurd = with_absurd_event_first(fake, events)
        fake.set_faults(ignore_tenant_only=tenant_only == "ignored")
        first = run_once(tmp_path, fake)
        assert first.code == 0, first.stderr
        assert error_lines(first) == []
        # 500 listed: 499 delivered once, the absurd one dead-lettered (once per listing
        # that returned it: the stream's and, when tenant_only is ignored, its companion's).
        assert delivered(tmp_path) == Counter(e["id"] for e in events)
        assert set(dead_lettered(tmp_path)) == {absurd["id"]}
        assert len(delivered(tmp_path)) + len(dead_lettered(tmp_path)) == 500

        again = run_once(tmp_path, fake)  # the rerun re-reads its overlap: nothing repeats
        assert again.code == 0, again.stderr
        assert delivered(tmp_path) == Counter(e["id"] for e in events)


def test_one_absurd_effective_at_on_the_first_page_is_dead_lettered_and_backfill_delivers_the_rest(
    tmp_path: Path,
) -> None:
    events = events_of_the_last_hour(499, seed=152)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        absurd = with_absurd_event_first(fake, events)
        fake.set_faults(ignore_tenant_only=True)
        result = backfill(tmp_path, fake, "--without-tenant", "--window", "2h")
        assert result.code == 0, result.stderr
        assert error_lines(result) == []
        assert "499 events delivered, 1 dead-lettered" in result.stderr
        assert delivered(tmp_path) == Counter(e["id"] for e in events)
        assert dead_lettered(tmp_path) == Counter({absurd["id"]: 1})
        # The live stream continues from the backfill's end: nothing repeats.
        again = run_once(tmp_path, fake, "--without-tenant")
        assert again.code == 0, again.stderr
        assert delivered(tmp_path) == Counter(e["id"] for e in events)


# -- item 3: a malformed page is retried, then fails the sweep --------------------------------


@pytest.mark.parametrize("kind", MALFORMED_PAGES)
def test_a_malformed_second_page_is_retried_then_fails_the_sweep_and_the_watermark_stays(
    tmp_path: Path, kind: str
) -> None:
    events = events_of_the_last_hour(500, seed=153)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        fake.set_faults(malformed_page=kind)  # every page after the first, every time
        failed = run_once(tmp_path, fake, "--without-tenant", "--batch-size", "100", **FAST_RETRIES)
        assert failed.code == 1
        reason = {
            "no_has_more": "a 200 response without a boolean 'has_more'",
            "data_null": "a 200 response without a 'data' list",
            "more_without_cursor": "a 200 response with has_more but no cursor",
        }[kind]
        assert len(error_lines(failed)) == 1
        assert error_lines(failed)[0].startswith(
            f"{ERROR}OpenAI API: giving up after 3 attempts; last: {reason}"
        )
        assert failed.stderr.count("retry ") == 2  # retried like malformed JSON
        assert checkpoint(tmp_path) is None  # no watermark, no progress marker
        # At most the first page was delivered (and remembered), nothing past it.
        assert len(delivered(tmp_path)) == remembered_ids(tmp_path) <= 100

        fake.set_faults(malformed_page="")
        again = run_once(tmp_path, fake, "--without-tenant", "--batch-size", "100")
        assert again.code == 0, again.stderr
        assert delivered(tmp_path) == Counter(e["id"] for e in events)  # 500, once each


def test_a_page_without_has_more_once_is_retried_and_every_event_arrives(tmp_path: Path) -> None:
    events = events_of_the_last_hour(500, seed=154)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        fake.set_faults(malformed_page="no_has_more", malformed_count=1)
        result = run_once(tmp_path, fake, "--without-tenant", **FAST_RETRIES)
        assert result.code == 0, result.stderr
        retries = [line for line in result.stderr.splitlines() if "retry 1" in line]
        assert len(retries) == 1 and "without a boolean 'has_more'" in retries[0]
        assert delivered(tmp_path) == Counter(e["id"] for e in events)
        watermark = checkpoint(tmp_path)
        assert watermark is not None and watermark["span_in_progress"] is None


# -- item 8: a server that lists oldest first ---------------------------------------------------


def test_a_listing_oldest_first_fails_without_committing_progress_and_a_rerun_loses_nothing(
    tmp_path: Path,
) -> None:
    events = events_of_the_last_hour(500, seed=155)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        fake.set_faults(oldest_first=True)
        failed = run_once(tmp_path, fake, "--without-tenant", "--batch-size", "100")
        assert failed.code == 1
        (line,) = error_lines(failed)
        assert "not newest first; paging stopped, the watermark stays" in line
        # The first page (the 100 oldest) was delivered and remembered; no progress marker
        # claims anything newer was.
        assert len(delivered(tmp_path)) == remembered_ids(tmp_path) == 100
        state = checkpoint(tmp_path)
        assert state is None or (state["span_in_progress"] is None and state["watermark"])

        fake.set_faults(oldest_first=False)
        again = run_once(tmp_path, fake, "--without-tenant", "--batch-size", "100")
        assert again.code == 0, again.stderr
        assert delivered(tmp_path) == Counter(e["id"] for e in events)  # 500, once each


# -- item 9: the same event in both listings ----------------------------------------------------


def test_a_server_that_ignores_tenant_only_delivers_each_event_once_with_one_warning(
    tmp_path: Path,
) -> None:
    events = events_of_the_last_hour(500, seed=156, types=EVENT_TYPES)
    tenant = [e for e in events if is_tenant_scoped(e["type"])]
    assert tenant, "both kinds of events"
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        fake.set_faults(ignore_tenant_only=True)
        port = free_port()
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        args = ["run", "--interval", "1s", "--start-at", "2h", "--lag", "0s", *to_file]
        process = subprocess.Popen(
            [sys.executable, "-m", "forwarder", *args, "--metrics-addr", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def listed_twice() -> float:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                return -1
            for line in text.splitlines():
                if line.startswith('oaf_events_listed_twice_total{stream="default-tenant"}'):
                    return float(line.split()[-1])
            return 0

        try:
            assert wait_for(lambda: len(read_ndjson(out)) >= 500 and listed_twice() >= 500, 60)
            # Later events of both kinds (listed once their second has come), over several
            # sweeps: each still arrives once, and is counted once.
            now = int(time.time())
            later = make_events(40, start=now + 2, end=now + 4, seed=157, types=EVENT_TYPES)
            later = [dict(e, id=f"{e['id']}-later") for e in later]
            fake.add_events(later)
            assert wait_for(lambda: len(read_ndjson(out)) >= 540 and listed_twice() >= 540, 60)
            requests = len(fake.requests)
            assert wait_for(lambda: len(fake.requests) >= requests + 8, 60)  # 4 more sweeps
            assert listed_twice() == 540  # the overlap each sweep re-reads is not counted again
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0
        text = stderr.decode()
        assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(
            e["id"] for e in events + later
        )
        # Every tenant-scoped event too, though the stream's own listing brought it first.
        assert {e["id"] for e in tenant} <= {doc["id"] for doc in read_ndjson(out)}
        warned = [line for line in text.splitlines() if " WARNING " in line]
        assert len(warned) == 1, text
        assert "delivered by stream default already" in warned[0]
        assert "each is delivered once" in warned[0]


@contextlib.contextmanager
def forwarder_log() -> Any:
    """The records the forwarder logs meanwhile (its logger may not propagate to the root)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("forwarder")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def backfill_in_process(
    tmp_path: Path,
    fake: FakeOpenAI,
    stream: str,
    page_budget: int,
    between: Callable[[], None] = lambda: None,
) -> list[BackfillReport]:
    """`backfill --since 2h` of `stream` and then its tenant companion, in this process (the
    metric is read from its registry), `between` called in between; the signal handlers it
    installs are put back after."""
    settings = load_settings(
        sinks=[f"file:{tmp_path / 'out.ndjson'}"],
        output_schema="raw",
        state=tmp_path / "s.db",
        dead_letter=tmp_path / "dl",
        admin_key=ADMIN_KEY,
        base_url=fake.base_url,
        stream=stream,
        window="30m",
    )
    request = BackfillRequest("2h", concurrency=2, page_budget=page_budget)
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    handlers = {sig: signal.getsignal(sig) for sig in signals}
    reports = []
    try:
        for report in backfill_streams(settings, request, stream_given=False):
            reports.append(report)
            if len(reports) == 1:
                between()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return reports


def kept_backfill_ids(tmp_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db:
        query = "SELECT count(*) FROM delivered WHERE scope LIKE 'backfill:%'"
        return db.execute(query).fetchone()[0]


@pytest.mark.parametrize("page_budget", [50, 1], ids=["whole-windows", "split-windows"])
def test_a_server_that_ignores_tenant_only_makes_backfill_deliver_each_event_once_with_one_warning(
    tmp_path: Path, page_budget: int
) -> None:
    events = events_of_the_last_hour(500, seed=158, types=EVENT_TYPES)
    assert any(is_tenant_scoped(e["type"]) for e in events), "both kinds of events"
    stream = f"acme{page_budget}"  # warned once per stream and process: a stream of its own
    twice = f"{stream}-tenant"

    def listed_twice() -> float:
        sample = "oaf_events_listed_twice_total"
        return metrics.REGISTRY.get_sample_value(sample, {"stream": twice}) or 0.0

    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        fake.set_faults(ignore_tenant_only=True)
        counted_before = listed_twice()
        kept: list[int] = []
        with forwarder_log() as records:
            reports = backfill_in_process(
                tmp_path,
                fake,
                stream,
                page_budget,
                lambda: kept.append(kept_backfill_ids(tmp_path)),
            )
        # The stream's job kept its ids (on disk, by time) until its companion's job ran; that
        # job loads them one window at a time and forgets them as it covers each window.
        assert kept == [500]
        assert [(r.stream, r.events) for r in reports] == [(stream, 500), (twice, 0)]
        if page_budget == 1:
            assert reports[1].windows > 4  # the companion's windows were split, and split again
        # 1,000 listed, 500 delivered, once each; the companion's 500 counted once each.
        assert delivered(tmp_path) == Counter(e["id"] for e in events)
        assert listed_twice() - counted_before == 500
        warned = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
        assert len(warned) == 1, warned
        assert f"500 events listed here were delivered by stream {stream} already" in warned[0]
        assert kept_backfill_ids(tmp_path) == 0

        with forwarder_log() as records:
            again = backfill_in_process(tmp_path, fake, stream, page_budget)
        assert [r.already_complete for r in again] == [True, True]
        assert delivered(tmp_path) == Counter(e["id"] for e in events)
        assert listed_twice() - counted_before == 500
        assert [r for r in records if r.levelno >= logging.WARNING] == []
        # The live streams continue from the backfill's end: nothing repeats there either.
        live = run_once(tmp_path, fake, "--stream", stream)
        assert live.code == 0, live.stderr
        assert delivered(tmp_path) == Counter(e["id"] for e in events)


def test_a_companion_job_forgets_the_ids_kept_for_it_window_by_window(tmp_path: Path) -> None:
    """What an interrupted companion job has not covered yet stays for its rerun; what it
    covered is gone, so the kept ids shrink as it goes (bounded by what is left to do)."""
    start = int(time.time()) - 7200
    older, newer = Window(start, start + 3600), Window(start + 3600, start + 7200)
    ids = [(f"e{i}", start + i * 72) for i in range(100)]  # 50 in each window
    kept_for_b = backfill_scope("job-a")
    state = State(tmp_path / "s.db")
    try:
        for job, stream in (("job-a", "acme"), ("job-b", "acme-tenant")):
            plan = BackfillJob(job, stream, start, start + 7200, 3600, None)
            state.create_job(plan, "{}", [older, newer])
        # job-a (the stream's) keeps its ids past its windows and its end, for job-b.
        for window, delivered_here in ((newer, ids[50:]), (older, ids[:50])):
            done = ("job-a", window, 50)
            state.commit(
                Commit(kept_for_b, delivered_here, {}, window_done=done, keep_ids_from=start)
            )
        state.finish_job("job-a", keep_ids=True)
        assert state.count_delivered(kept_for_b) == 100

        # job-b covers the newer window, then stops: the older window's ids stay for its rerun.
        done = ("job-b", newer, 0)
        scope = backfill_scope("job-b")
        state.commit(Commit(scope, [], {}, window_done=done, partner_scope=kept_for_b))
        assert state.delivered_ids(kept_for_b, start) == {i for i, at in ids if at < newer.start}
        state.finish_job("job-b", partner_job="job-a")
        assert state.count_delivered(kept_for_b) == 0
    finally:
        state.close()


def test_a_page_in_ascending_order_breaks_the_listing_and_a_repeated_page_does_not() -> None:
    from forwarder.sources.openai_api import OutOfOrder, _ListingProgress

    start = int(time.time()) - 3600
    page = [{"id": f"e{i}", "type": "login.failed", "effective_at": start + i} for i in range(5)]
    with pytest.raises(OutOfOrder):
        _ListingProgress(start, None).advance(page)  # oldest first inside one page
    newest_first = page[::-1]
    progress = _ListingProgress(start, None)
    assert progress.advance(newest_first)
    assert not progress.advance(newest_first)  # the same page again: no news, no break
    # An absurd time is no event of the window: it neither counts nor breaks the order.
    absurd = {"id": "x", "type": "login.failed", "effective_at": 1000}
    assert not progress.advance([absurd, newest_first[-1]])
