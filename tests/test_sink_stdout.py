"""The stdout sink writes every byte of a batch or fails it (issue 15, item 1): a slow reader
and a SIGTERM get exactly the lines that were committed, none torn; a reader that goes away
after 1,000 bytes (`| head -c 1000`) ends the run at once with exit 1 and one line, and what
the pipe did not take is not committed. Unbuffered output (PYTHONUNBUFFERED=1, as our Docker
image sets) is where Python's own write used to stop after part of a batch."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.conftest import cli_env, run_cli, write_jsonl
from tests.fakes.events import make_events

EVENTS = 3000
ERROR = "openai-audit-forwarder: error: "


def input_file(tmp_path: Path) -> tuple[Path, list[str]]:
    events = make_events(EVENTS, start=1_767_225_600, end=1_767_225_600 + 86_400, seed=161)
    return write_jsonl(tmp_path / "events.jsonl", events), [e["id"] for e in events]


def command(tmp_path: Path, source: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "forwarder", "run", "--once", "--input", str(source),
        "--stream", "pipe", "--sink", "stdout:", "--schema", "raw",
        "--state", str(tmp_path / "s.db"), "--dead-letter", str(tmp_path / "dl"), *extra,
    ]  # fmt: skip


def committed_ids(tmp_path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db:
        rows = db.execute("SELECT id FROM delivered WHERE scope='live:pipe'")
        return {row[0] for row in rows}


def ids_of(output: bytes) -> list[str]:
    """The ids of NDJSON output; every line whole (a torn line fails to parse)."""
    assert output.endswith(b"\n") or not output, "the last line is torn"
    return [orjson.loads(line)["id"] for line in output.splitlines()]


def test_a_slow_reader_and_sigterm_receive_exactly_the_committed_lines_none_torn(
    tmp_path: Path,
) -> None:
    source, every_id = input_file(tmp_path)
    env = cli_env(PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command(tmp_path, source, "--batch-size", "200"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    received = bytearray()
    fd = process.stdout.fileno()
    # A slow reader: 4 KB at a time, with a pause, so that each batch (about 150 KB) meets
    # a full pipe, and SIGTERM arrives while a write is blocked part way.
    while received.count(b"\n") < 500:  # the middle of the third batch
        chunk = os.read(fd, 4096)
        assert chunk, process.stderr.read() if process.stderr else ""
        received += chunk
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    while chunk := os.read(fd, 1 << 16):  # then read everything, to the end
        received += chunk
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()
    first = ids_of(bytes(received))
    assert 500 <= len(first) < EVENTS, "stopped part way"
    assert len(first) == len(set(first))
    assert set(first) == committed_ids(tmp_path)  # received = committed, line for line

    # The rerun delivers the rest: every event once over both runs.
    rest = subprocess.run(command(tmp_path, source), cwd=tmp_path, env=env, capture_output=True)
    assert rest.returncode == 0, rest.stderr.decode()
    assert sorted(first + ids_of(rest.stdout)) == sorted(every_id)


def test_a_reader_that_goes_away_fails_the_run_at_once_with_one_line_and_commits_nothing_unread(
    tmp_path: Path,
) -> None:
    source, every_id = input_file(tmp_path)
    env = cli_env(PYTHONUNBUFFERED="1")
    started = time.monotonic()
    process = subprocess.Popen(
        command(tmp_path, source),  # one batch of 3,000 events, about 2 MB
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    head = process.stdout.read(1000)  # as `| head -c 1000`
    process.stdout.close()
    _, stderr = process.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert len(head) == 1000
    assert process.returncode == 1
    lines = stderr.decode().splitlines()
    errors = [line for line in lines if line.startswith(ERROR)]
    assert errors == [
        f"{ERROR}sink stdout:: the reader of stdout went away (broken pipe); what it did not "
        "read is not committed"
    ], lines
    assert not any("retry" in line or "Exception" in line for line in lines), lines
    assert elapsed < 30, "not retried for --sink-retry-timeout"
    assert committed_ids(tmp_path) == set()  # the pipe never took the whole batch

    again = run_cli(*command(tmp_path, source)[3:], cwd=tmp_path, env=env)
    assert again.code == 0, again.stderr
    assert sorted(ids_of(again.stdout.encode())) == sorted(every_id)  # each once


def test_a_closed_stdout_is_refused_and_nothing_is_written_into_the_file_that_took_fd_1(
    tmp_path: Path,
) -> None:
    """With fd 1 closed at start, the first file opened (the stream lock) gets fd 1: a write
    to fd 1 would land events in it."""
    source, _ = input_file(tmp_path)
    args = " ".join(f"'{arg}'" for arg in command(tmp_path, source))
    done = subprocess.run(
        ["sh", "-c", f"exec {args} >&-"], cwd=tmp_path, env=cli_env(), capture_output=True
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.decode().splitlines() if line.startswith(ERROR)]
    assert errors == [f"{ERROR}sink stdout:: stdout is closed: nothing to write to"]
    assert committed_ids(tmp_path) == set()
    for path in tmp_path.iterdir():  # no event landed in the state, its lock or anything else
        if path.name != "events.jsonl" and path.is_file():
            assert b"audit_log-" not in path.read_bytes(), path.name
