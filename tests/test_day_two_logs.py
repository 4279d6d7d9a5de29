"""What an operator reads on day two: every log line of a stream names it (text and JSON), a
sweep reports its own delivered and dead-lettered events and warns once about dead letters with
a replay command that runs, `-v` shows each API request and sink batch after one start-up line,
a backfill shows its progress (a tqdm bar on a terminal with the log lines above it, a log line
at most every 10 s otherwise, metrics), and a rerun on an input already delivered says why it
delivers nothing and how to deliver it again."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import shlex
import socket
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from forwarder import __version__
from forwarder.backfill import Progress
from forwarder.cli.render import PROGRESS_EVERY, ProgressLog
from forwarder.logs import LOGGER_NAME
from tests.conftest import (
    ADMIN_KEY,
    REPO,
    cli_env,
    read_ndjson,
    recent_events,
    run_cli,
    write_jsonl,
)
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import free_port
from tests.waiting import wait_for

PROG = "openai-audit-forwarder"
SAMPLE = REPO / "samples" / "audit-log.jsonl"
START_LINE = re.compile(rf" INFO {PROG} {re.escape(__version__)} ")


def forwarder_argv(*args: str) -> list[str]:
    """A command line printed by the forwarder, runnable here (the console script's name)."""
    words = shlex.split(" ".join(args))
    assert words[0] == PROG, words
    return [sys.executable, "-m", "forwarder", *words[1:]]


# 1. Every line of a stream names it -----------------------------------------------------------


def test_every_log_line_of_a_three_stream_run_names_its_stream_in_text_and_json(
    tmp_path: Path,
) -> None:
    events = recent_events(300, hours=2, seed=81)
    config = tmp_path / "config.toml"
    config.write_text(
        'sinks = ["file:'
        + str(tmp_path)
        + '/{stream}.ndjson"]\n'
        + "".join(
            f'[[streams]]\nname = "{name}"\nadmin_key_env = "KEY"\nwith_tenant = false\n'
            for name in ("acme", "labs", "ops")
        )
    )
    with FakeOpenAI(events, admin_key=ADMIN_KEY, rate_429=0.4, retry_after=0.01, seed=3) as api:
        env = cli_env(KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url)
        for log_format in ("text", "json"):
            state = str(tmp_path / f"{log_format}.db")
            args = ["run", "--once", "-v", "--config", str(config), "--start-at", "3h"]
            args += ["--state", state, "--log-format", log_format]
            result = run_cli(*args, cwd=tmp_path, env=env)
            assert result.code == 0, result.stderr
            lines = result.stderr.strip().splitlines()
            assert ADMIN_KEY not in result.stderr
            if log_format == "text":
                assert START_LINE.search(lines[0]), lines[0]
                named = [re.search(r"\[stream=([^ \]]+)", line) for line in lines[1:]]
                assert all(named), [line for line, n in zip(lines[1:], named, strict=True) if not n]
                done = [line for line in lines if "sweep done" in line]
                retried = [line for line in lines if " WARNING " in line and "HTTP 429" in line]
                requests = [line for line in lines if "GET /v1/organization/audit_logs?" in line]
            else:
                objects = [orjson.loads(line) for line in lines]
                assert objects[0]["message"].startswith(f"{PROG} {__version__} run --once:")
                assert all("stream" in o for o in objects[1:]), [
                    o for o in objects[1:] if "stream" not in o
                ]
                done = [o["stream"] for o in objects if o["message"].startswith("sweep done")]
                retried = [o for o in objects if o["level"] == "warning"]
                requests = [o for o in objects if o["message"].startswith("GET ")]
            # Three sweeps, each line telling which; the retries and requests of the
            # streams' threads name theirs too.
            assert len(done) == 3
            if log_format == "text":
                assert sorted(re.search(r"stream=(\w+)", d)[1] for d in done) == [
                    "acme",
                    "labs",
                    "ops",
                ]
            else:
                assert sorted(done) == ["acme", "labs", "ops"]
            assert retried and requests


# 2 and 3. This sweep's counts, and one warning about its dead letters -------------------------


def test_the_sweep_summary_counts_this_sweeps_delivered_and_dead_lettered_apart(
    tmp_path: Path,
) -> None:
    events = recent_events(200, hours=2, seed=82)
    events[17]["actor"] = "not an object"  # the ECS mapper refuses it: one dead letter
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as api:
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url)
        out = tmp_path / "out.ndjson"
        args = ["run", "--once", "--without-tenant", "--start-at", "3h", "--sink", f"file:{out}"]
        args += ["--state", str(tmp_path / "s.db")]
        first = run_cli(*args, cwd=tmp_path, env=env)
        assert first.code == 0, first.stderr
        assert "sweep done: 199 events delivered, 1 dead-lettered, watermark " in first.stderr
        assert len(read_ndjson(out)) == 199

        late = recent_events(5, hours=0.01, seed=83)
        for event in late:
            event["id"] += "-late"  # the fake's ids follow its sequence: make them new
        api.add_events(late)
        second = run_cli(*args, cwd=tmp_path, env=env)
        assert second.code == 0, second.stderr
        # This sweep's own counts: the letter of the first is not counted again.
        assert "sweep done: 5 events delivered, 0 dead-lettered, watermark " in second.stderr
        assert " WARNING " not in second.stderr
        assert len(read_ndjson(out)) == 204


def test_a_sweep_that_dead_letters_warns_once_with_count_reasons_directory_and_a_replay_command_that_runs(  # noqa: E501
    tmp_path: Path,
) -> None:
    events = recent_events(20, hours=1, seed=84)
    events[3]["actor"] = "not an object"  # the ECS mapper cannot use it
    for index in (5, 6):  # over the UDP size limit once rendered
        events[index]["project"] = {"id": "proj_x", "name": "x" * 4000}
    source = write_jsonl(tmp_path / "in.jsonl", events)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    udp = f"syslog+udp://127.0.0.1:{receiver.getsockname()[1]}?max_size=2048"
    out = tmp_path / "out.ndjson"
    state, dead = tmp_path / "s.db", tmp_path / "dl"
    args = ["run", "--once", "--input", str(source), "--sink", udp, "--sink", f"file:{out}"]
    result = run_cli(*args, "--state", str(state), "--dead-letter", str(dead), cwd=tmp_path)
    receiver.close()

    assert result.code == 0, result.stderr
    assert "sweep done: 17 events delivered, 3 dead-lettered" in result.stderr
    [warning] = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert "3 dead-lettered in this sweep: " in warning
    assert re.search(
        rf"2x rejected by sink {re.escape(udp)}(, e\.g\.)?: syslog message is ", warning
    )
    assert "1x mapping ecs: actor is neither an object nor null" in warning
    assert f"written to {dead}; " in warning
    command = warning.split("send them again with: ")[1]
    replay_args = ["deadletter", "replay", "--state", str(state), "--dead-letter", str(dead)]
    assert command == shlex.join([PROG, *replay_args, "--sink", udp, "--sink", f"file:{out}"])
    in_file = len(read_ndjson(out))

    replay = subprocess.run(
        forwarder_argv(command), cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    # The UDP receiver still takes nothing that large and ECS still cannot map the actor:
    # the letters stay, and the two the UDP sink refused went back to it alone.
    assert replay.returncode == 1, replay.stderr
    assert "replayed 3 dead letters: 0 delivered, 3 dead-lettered again" in replay.stderr
    assert len(read_ndjson(out)) == in_file
    listed = orjson.loads(
        run_cli("deadletter", "list", "--json", "--dead-letter", str(dead), cwd=tmp_path).stdout
    )
    assert listed["total"] == 3


# 4. -v and -vv ---------------------------------------------------------------------------------


def test_v_adds_a_start_up_line_and_one_line_per_api_request_and_sink_batch_and_vv_debug(
    tmp_path: Path,
) -> None:
    events = recent_events(250, hours=2, seed=85)
    secret = "s3cr3t-Passw0rd-77"
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as api:
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url)
        out = tmp_path / "out.ndjson"
        common = ["run", "--once", "--without-tenant", "--start-at", "3h", "--sink", f"file:{out}"]
        by_level = {}
        for flag in ("", "-v", "-vv"):
            state = ["--state", str(tmp_path / f"s{flag}.db")]
            result = run_cli(*common, *state, *([flag] if flag else []), cwd=tmp_path, env=env)
            assert result.code == 0, result.stderr
            by_level[flag] = result.stderr.splitlines()

    plain, verbose, debug = by_level[""], by_level["-v"], by_level["-vv"]
    assert [line for line in plain if "sweep done" in line] == [plain[-1]]
    assert not any(START_LINE.search(line) or " GET " in line for line in plain)
    assert START_LINE.search(verbose[0])
    assert (
        f"run --once: streams default; source API {api.base_url}; sinks file:{out} (ecs); "
        in (verbose[0])
    )
    assert f"schema ecs; state {tmp_path / 's-v.db'}" in verbose[0]
    requests = [line for line in verbose if "GET /v1/organization/audit_logs?" in line]
    assert len(requests) == 3  # 250 events, 100 a page
    for line in requests:
        assert re.search(r"limit=100&effective_at\[gte\]=\d+&effective_at\[lt\]=\d+", line)
        assert re.search(r": 200 in \d+ ms, \d+ events$", line), line
    assert sum(int(line.rsplit(" ", 2)[1]) for line in requests) == 250
    batch = re.compile(r"\[stream=default sink=(\S+)\] batch of (\d+) written in \d+ ms, 0 refused")
    batches = [m.groups() for line in verbose if (m := batch.search(line))]
    assert batches == [(f"file:{out}", "250")]
    assert not any(" DEBUG " in line for line in verbose)
    assert any(" DEBUG " in line for line in debug)
    assert ADMIN_KEY not in "\n".join(verbose + debug)

    # The start-up line names the sinks without their credentials.
    s3 = f"s3://bucket/p?endpoint_url=http://user:{secret}@127.0.0.1:{free_port()}&region=us-east-1"
    failed = run_cli(
        "run", "--once", "-v", "--input", str(SAMPLE), "--sink", s3,
        "--state", str(tmp_path / "s3.db"), "--sink-retry-timeout", "1s", cwd=tmp_path,
        env=cli_env(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="example"),
    )  # fmt: skip
    assert START_LINE.search(failed.stderr.splitlines()[0])
    assert "endpoint_url=http://[REDACTED]@127.0.0.1" in failed.stderr.splitlines()[0]
    assert secret not in failed.output


# 5. Backfill progress ---------------------------------------------------------------------------


def test_the_progress_log_line_comes_at_most_every_10_seconds() -> None:
    clock = [1000.0]
    progress = Progress(windows_total=48, windows_done=12, events=3400)
    line = ProgressLog(clock=lambda: clock[0])
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        for _ in range(26):  # a call a second for 25 s
            line(progress, 0)
            clock[0] += 1.0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    messages = [r.getMessage() for r in records]
    assert PROGRESS_EVERY == 10.0
    assert len(messages) == 3  # at 0, 10 and 20 s
    assert re.fullmatch(
        r"backfill progress: 12/48 windows, 3400 events, \d+ events/s, ETA \d+:\d\d:\d\d",
        messages[0],
    )


def test_a_backfill_without_a_terminal_logs_its_progress_and_summary_as_json_objects(
    tmp_path: Path,
) -> None:
    events = recent_events(600, hours=3, seed=86)
    with FakeOpenAI(events, admin_key=ADMIN_KEY, rate_429=0.2, seed=4) as api:
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url)
        out = tmp_path / "out.ndjson"
        args = ["backfill", "--since", "4h", "--window", "30m", "--without-tenant"]
        args += ["--log-format", "json", "--sink", f"file:{out}", "--state", str(tmp_path / "s.db")]
        result = run_cli(*args, "-v", cwd=tmp_path, env=env)
    assert result.code == 0, result.stderr
    objects = [orjson.loads(line) for line in result.stderr.splitlines()]  # JSON only
    progress = [o for o in objects if o["message"].startswith("backfill progress: ")]
    assert progress and all(o["stream"] == "default" for o in progress)
    assert re.fullmatch(
        r"backfill progress: \d+/8 windows, \d+ events, \d+ events/s, ETA (\d+:\d\d:\d\d|unknown)",
        progress[0]["message"],
    )
    [summary] = [o for o in objects if o["message"].startswith("backfill complete: ")]
    assert summary["stream"] == "default" and summary["level"] == "info"
    assert ", 8 windows, 600 events delivered, 0 dead-lettered, " in summary["message"]
    # The requests of the window workers (threads of their own) name the stream too.
    requests = [o for o in objects if o["message"].startswith("GET ")]
    assert requests and all(o["stream"] == "default" for o in requests)
    assert len(read_ndjson(out)) == 600


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("oaf_backfill_")
    }


DONE = ("oaf_backfill_windows", (("state", "done"), ("stream", "default")))
PENDING = ("oaf_backfill_windows", (("state", "pending"), ("stream", "default")))


def test_a_backfill_exports_its_windows_by_state_and_its_events_per_stream(tmp_path: Path) -> None:
    events = recent_events(400, hours=4, seed=87)
    port = free_port()
    with FakeOpenAI(events, admin_key=ADMIN_KEY, latency=0.2) as api:
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url)
        args = ["backfill", "--since", "5h", "--window", "15m", "--concurrency", "1", "-q"]
        args += ["--without-tenant", "--metrics-addr", f"127.0.0.1:{port}"]
        args += ["--sink", f"file:{tmp_path}/out.ndjson", "--state", str(tmp_path / "s.db")]
        process = subprocess.Popen(
            [sys.executable, "-m", "forwarder", *args],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
        )
        seen: list[dict[Any, float]] = []

        def midway() -> bool:
            try:
                seen.append(scrape(port))
            except httpx.HTTPError:
                return False
            done = seen[-1].get(DONE)
            return bool(done) and done < 20

        try:
            wait_for(midway, 60)
        finally:
            _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    during = seen[-1]
    assert during[DONE] + during[PENDING] == 20  # 5 h in 15 min windows
    assert 0 < during[("oaf_backfill_events_total", (("stream", "default"),))] < 400


def test_on_a_terminal_a_tqdm_bar_shows_progress_and_warnings_print_above_it(
    tmp_path: Path,
) -> None:
    events = recent_events(900, hours=2, seed=88)
    faults = {"rate_429": 0.3, "retry_after": 0.05, "latency": 0.02}
    with FakeOpenAI(events, admin_key=ADMIN_KEY, **faults) as api:
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url, TERM="xterm")
        args = ["backfill", "--since", "3h", "--window", "10m", "--concurrency", "2"]
        args += ["--without-tenant", "--sink", f"file:{tmp_path}/out.ndjson"]
        args += ["--state", str(tmp_path / "s.db")]
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        process = subprocess.Popen(
            [sys.executable, "-m", "forwarder", *args],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
        os.close(slave)
        raw = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            raw += chunk
        os.close(master)
        assert process.wait(timeout=60) == 0, raw.decode(errors="replace")

    text = raw.decode()
    bar = re.compile(r"backfill +\d+%\|.*\| \d+/18 windows, [\d,]+ events, [\d,]+ events/s, ETA ")
    assert bar.search(text), text[-2000:]
    lines = text.replace("\r\n", "\n").split("\n")
    warnings = [line for line in lines if " WARNING " in line]
    assert warnings, "no 429 was retried while the bar was shown"
    for line in warnings:
        # The bar is cleared first (carriage return) and the log line printed whole above it.
        shown = line.split("\r")[-1]
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING \[stream=default\] ", shown)
        assert "windows," not in shown
    assert "backfill complete: default " in text


# 6. A rerun that finds everything delivered -----------------------------------------------------


def test_a_rerun_on_an_input_already_delivered_says_so_with_the_state_and_the_reset_command(
    tmp_path: Path,
) -> None:
    args = ["run", "--once", "--input", str(SAMPLE), "--sink", "file:out/audit.ecs.ndjson"]
    env = cli_env(XDG_STATE_HOME=str(tmp_path / "xdg"))
    first = run_cli(*args, cwd=tmp_path, env=env)
    assert first.code == 0, first.stderr
    assert "nothing new" not in first.stderr
    out = tmp_path / "out" / "audit.ecs.ndjson"
    assert len(read_ndjson(out)) == 209

    out.unlink()
    out.parent.rmdir()  # rm -rf out
    again = run_cli(*args, cwd=tmp_path, env=env)
    assert again.code == 0, again.stderr
    state = tmp_path / "xdg" / "openai-audit-forwarder" / "state.db"
    [hint] = [line for line in again.stderr.splitlines() if "nothing new" in line]
    assert " INFO " in hint and f"nothing new in {SAMPLE}: " in hint
    assert f"(the checkpoint in {state})" in hint
    assert read_ndjson(out) == []
    command = hint.split("to deliver them again: ")[1]
    assert "checkpoint reset --stream jsonl:audit-log.jsonl-" in command
    reset = subprocess.run(
        forwarder_argv(command), cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert reset.returncode == 0, reset.stderr
    third = run_cli(*args, cwd=tmp_path, env=env)
    assert third.code == 0 and "nothing new" not in third.stderr
    assert len(read_ndjson(out)) == 209
