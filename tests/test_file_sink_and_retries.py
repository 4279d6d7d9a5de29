"""The file sink's crash safety (an uncommitted tail is cut on start, a rotated file is kept
whole) and the API source's reading of retry headers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from forwarder.sinks import open_sink
from forwarder.sinks.base import Record, SinkError
from forwarder.sinks.file import FileSink
from forwarder.sources.openai_api import OpenAIAuditLogSource, parse_reset, retry_delay_from_headers
from tests.conftest import ADMIN_KEY, recent_events
from tests.fakes.openai_api import FakeOpenAI


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(f"id-{i}", "login.failed", 1, {"id": f"id-{i}", "msg": 'a\nb"c\x00'})
        for i in range(start, start + n)
    ]


def test_a_tail_written_after_the_last_commit_is_cut_on_restart(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    sink = open_sink(f"file:{path}")
    sink.restore(None)
    sink.write(records(3))
    committed = sink.position()
    sink.write(records(2, start=3))  # the process dies before this batch is committed
    sink.close()
    again = open_sink(f"file:{path}")
    again.restore(committed)
    assert path.read_bytes().count(b"\n") == 3
    again.write(records(2, start=3))
    again.close()
    assert [line.split(b'"')[3] for line in path.read_bytes().splitlines()] == [
        f"id-{i}".encode() for i in range(5)
    ]


def test_a_rotated_file_is_kept_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    sink = open_sink(f"file:{path}")
    sink.restore(None)
    sink.write(records(3))
    committed = sink.position()
    sink.close()
    os.rename(path, tmp_path / "out.ndjson.1")  # logrotate
    path.write_bytes(b'{"id":"from-someone-else"}\n')
    again = open_sink(f"file:{path}")
    again.restore(committed)
    assert path.read_bytes() == b'{"id":"from-someone-else"}\n'
    again.close()


def test_two_writers_on_one_file_are_refused(tmp_path: Path) -> None:
    first = open_sink(f"file:{tmp_path / 'out.ndjson'}")
    first.open()
    second = open_sink(f"file:{tmp_path / 'out.ndjson'}")
    with pytest.raises(SinkError, match="another process is writing it"):
        second.open()
    first.close()
    assert isinstance(second, FileSink)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "40"}, 0.04),
        ({"x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "1.5s"}, 1.5),
        ({}, None),
    ],
)
def test_retry_delays_come_from_the_headers(headers: dict, seconds: float | None) -> None:
    assert retry_delay_from_headers(httpx.Headers(headers)) == seconds


def test_an_http_date_retry_after_is_read() -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    delay = retry_delay_from_headers(httpx.Headers({"retry-after": when}))
    assert delay is not None and 25 <= delay <= 31
    assert parse_reset("nonsense") is None


def test_the_source_waits_as_long_as_retry_after_asks() -> None:
    with FakeOpenAI(recent_events(5, hours=1, seed=61), admin_key=ADMIN_KEY) as fake:
        fake.fail_next(429, 1, retry_after=1.0)
        source = OpenAIAuditLogSource(
            base_url=fake.base_url, admin_key=ADMIN_KEY, backoff_base=0.01
        )
        started = time.monotonic()
        pages = list(source.pages(0, None))
        assert time.monotonic() - started >= 1.0
        assert sum(len(p) for p in pages) == len(fake.listing())
        source.close()
