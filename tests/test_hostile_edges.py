"""Edges that used to fail silently or loudly with the wrong words (issue 15, items 10 to 16):
a `file:` sink on a FIFO, a directory or a symbolic link; credentials in a sink URL that cannot
be parsed; a state of a newer version, of another layout or corrupt; a widened --overlap; a
start in the future or a lag of years; and the 401/403 hint. Each one: the exit code, the one
line printed, and the events in and out."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.conftest import ADMIN_KEY, REPO, cli_env, read_ndjson, run_cli
from tests.fakes.openai_api import FakeOpenAI

SAMPLE = REPO / "samples" / "audit-log.jsonl"
SAMPLE_IDS = [orjson.loads(line)["id"] for line in SAMPLE.read_bytes().splitlines()]
ERROR = "openai-audit-forwarder: error: "


def errors(result: object) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(ERROR)]  # type: ignore[attr-defined]


def run_sample(tmp_path: Path, *extra: str, state: str = "s.db") -> object:
    return run_cli(
        "run", "--once", "--input", str(SAMPLE), "--stream", "sample", "--schema", "raw",
        "--state", str(tmp_path / state), "--dead-letter", str(tmp_path / "dl"), *extra,
        cwd=tmp_path,
    )  # fmt: skip


# -- item 10 and 16: what a file: sink may write to ---------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("command", ["run", "check"])
def test_a_file_sink_on_a_fifo_or_a_directory_is_refused_at_start_with_exit_2(
    tmp_path: Path, kind: str, command: str
) -> None:
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    args = [command, "--input", str(SAMPLE), "--sink", f"file:{target}"]
    args += ["--state", str(tmp_path / "s.db")] + (["--once"] if command == "run" else [])
    started = time.monotonic()
    result = run_cli(*args, cwd=tmp_path)
    assert result.code == 2
    what = "a FIFO" if kind == "fifo" else "a directory"
    assert errors(result) == [
        f"{ERROR}invalid setting sink: sink file:{target}: is {what}, not a regular file "
        "(for a pipe use stdout:)"
    ]
    assert time.monotonic() - started < 30  # refused, not retried for 5 minutes
    assert not (tmp_path / "s.db").exists()  # 209 in, 0 delivered, nothing committed


def test_a_file_sink_on_a_symlink_is_refused_unless_follow_symlinks_is_given(
    tmp_path: Path,
) -> None:
    other = tmp_path / "someone-elses.log"
    other.write_bytes(b"their line\n")
    link = tmp_path / "out.ndjson"
    link.symlink_to(other)
    refused = run_sample(tmp_path, "--sink", f"file:{link}")
    assert refused.code == 2  # type: ignore[attr-defined]
    assert errors(refused) == [
        f"{ERROR}invalid setting sink: sink file:{link}: is a symbolic link; refused, as it may "
        "point at a file that is not ours (give the real path, or follow_symlinks=true)"
    ]
    assert other.read_bytes() == b"their line\n"  # untouched

    allowed = run_sample(tmp_path, "--sink", f"file:{link}?follow_symlinks=true")
    assert allowed.code == 0, allowed.stderr  # type: ignore[attr-defined]
    lines = other.read_bytes().splitlines()
    assert lines[0] == b"their line"
    assert Counter(orjson.loads(line)["id"] for line in lines[1:]) == Counter(SAMPLE_IDS)


# -- item 11: credentials in sink URLs --------------------------------------------------------


@pytest.mark.parametrize("password", ["pa/ss", "pa?ss", "pa#ss"])
def test_a_password_with_a_slash_question_mark_or_hash_never_appears_in_the_error(
    tmp_path: Path, password: str
) -> None:
    url = f"syslog+tcp://user:{password}@siem.example:514"
    result = run_cli("check", "--input", str(SAMPLE), "--sink", url, cwd=tmp_path)
    assert result.code == 2
    assert errors(result) == [
        f"{ERROR}invalid setting sink: sink 'syslog+tcp://[REDACTED]@siem.example:514': "
        "invalid port"
    ]
    assert password not in result.output and "ss@" not in result.output


def test_an_unknown_parameter_holding_a_secret_is_named_without_its_value(tmp_path: Path) -> None:
    url = "fluentd://127.0.0.1:24224?tag=openai.audit&shared_key=s3cr3t"
    result = run_cli("check", "--input", str(SAMPLE), "--sink", url, cwd=tmp_path)
    assert result.code == 2
    (line,) = errors(result)
    assert line.startswith(
        f"{ERROR}invalid setting sink: sink fluentd://127.0.0.1:24224?tag=...&shared_key=...: "
        "unknown parameter 'shared_key' (allowed: "
    )
    assert "s3cr3t" not in result.output


# -- item 12: a state this version cannot use -------------------------------------------------


def state_with_the_sample(tmp_path: Path, name: str) -> Path:
    first = run_sample(tmp_path, "--sink", f"file:{tmp_path / 'out.ndjson'}", state=name)
    assert first.code == 0, first.stderr  # type: ignore[attr-defined]
    path = tmp_path / name
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def dump(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [*db.iterdump(), str(db.execute("PRAGMA user_version").fetchone())]


def corrupt_every_page_but_the_schema(path: Path) -> None:
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    for start in range(size, len(data), size):
        data[start : start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (
            "newer",
            "was written by a newer version of openai-audit-forwarder (state schema 7, this "
            "version reads up to 1): upgrade, or use another --state",
        ),
        (
            "renamed column",
            "does not have the layout this version writes (table streams has no column "
            "watermark): written by another version, or altered; restore it from a backup, or "
            "move it away and start over with 'checkpoint set WHEN'",
        ),
        (
            "corrupt",
            "is corrupt (database disk image is malformed): restore it from a backup, or move "
            "it away and start over with 'checkpoint set WHEN'",
        ),
    ],
)
def test_a_state_of_a_newer_version_another_layout_or_corrupt_stops_with_one_line_and_exit_2(
    tmp_path: Path, damage: str, words: str
) -> None:
    path = state_with_the_sample(tmp_path, "state.db")
    if damage == "corrupt":
        corrupt_every_page_but_the_schema(path)
    else:
        with sqlite3.connect(path) as db:
            if damage == "newer":
                db.execute("PRAGMA user_version=7")
            else:
                db.execute("ALTER TABLE streams RENAME COLUMN watermark TO high_water")
    before = dump(path) if damage == "newer" else None
    for command in (["run", "--once", "--input", str(SAMPLE)], ["checkpoint", "show"]):
        result = run_cli(*command, "--stream", "sample", "--state", str(path), cwd=tmp_path)
        assert result.code == 2, result.stderr
        assert errors(result) == [f"{ERROR}invalid setting state: {path} {words}"]
        assert "internal error" not in result.output
    if damage == "newer":
        assert dump(path) == before  # a newer version's state is left as it is
    assert len(read_ndjson(tmp_path / "out.ndjson")) == len(SAMPLE_IDS)  # nothing more


# -- item 13: a wider --overlap ---------------------------------------------------------------


def test_a_wider_overlap_warns_once_that_the_widened_part_repeats_and_then_nothing_does(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.ndjson"
    first = run_sample(tmp_path, "--sink", f"file:{out}")
    assert first.code == 0, first.stderr  # type: ignore[attr-defined]
    wide = ["--sink", f"file:{out}", "--overlap", "3650d"]
    widened = run_sample(tmp_path, *wide)
    assert widened.code == 0, widened.stderr  # type: ignore[attr-defined]
    warned = [line for line in widened.stderr.splitlines() if " WARNING " in line]  # type: ignore[attr-defined]
    assert len(warned) == 1
    assert "--overlap 3650d re-reads from " in warned[0]
    assert "events between are delivered again, once" in warned[0]
    repeated = len(read_ndjson(out)) - len(SAMPLE_IDS)
    assert 0 < repeated < len(SAMPLE_IDS)  # the widened part, once; the old overlap not
    again = run_sample(tmp_path, *wide)  # the ids are now kept for the wider overlap
    assert again.code == 0 and " WARNING " not in again.stderr  # type: ignore[attr-defined]
    assert len(read_ndjson(out)) == len(SAMPLE_IDS) + repeated
    assert set(doc["id"] for doc in read_ndjson(out)) == set(SAMPLE_IDS)


# -- item 14: a start in the future, a lag of years -------------------------------------------


@pytest.mark.parametrize("start", ["next year", "9999-01-01"])
def test_a_start_in_the_future_is_refused_with_exit_2(tmp_path: Path, start: str) -> None:
    when = time.strftime("%Y-01-01", time.gmtime(time.time() + 366 * 86400))
    when = when if start == "next year" else start
    result = run_cli(
        "run", "--once", "--start-at", when, "--sink", f"file:{tmp_path / 'out.ndjson'}",
        "--state", str(tmp_path / "s.db"), cwd=tmp_path,
        env=cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY),
    )  # fmt: skip
    assert result.code == 2
    assert errors(result) == [
        f"{ERROR}invalid setting start_at: {when!r} is in the future ({when}T00:00:00Z); a "
        "stream starts at a past time (e.g. 24h, 7d or 2026-01-01)"
    ]


def test_a_lag_of_years_says_that_nothing_is_collected_until_then(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    result = run_cli(
        "run", "--once", "--without-tenant", "--lag", "3650d",
        "--sink", f"file:{tmp_path / 'out.ndjson'}", "--state", str(tmp_path / "s.db"),
        cwd=tmp_path, env=api_env,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert len(warned) == 1 and "nothing to collect before " in warned[0]
    assert "later than now minus --lag" in warned[0]
    assert fake_api.requests == []  # and nothing asked for


# -- item 15: the 401/403 hint ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-admin-WRONG-0123456789abcdefghij", "sk-proj-abcdefghijklmno"])
def test_the_auth_hint_shows_the_key_shape_and_never_the_key(
    tmp_path: Path, fake_api: FakeOpenAI, key: str
) -> None:
    env = cli_env(OPENAI_ADMIN_KEY=key, OPENAI_BASE_URL=fake_api.base_url)
    result = run_cli("run", "--once", "--without-tenant", "--state", str(tmp_path / "s.db"),
                     cwd=tmp_path, env=env)  # fmt: skip
    assert result.code == 1
    (line,) = errors(result)
    assert "Admin API key (sk-admin-...)" in line and "([REDACTED])" not in line
    assert key not in result.output and key[10:] not in result.output
