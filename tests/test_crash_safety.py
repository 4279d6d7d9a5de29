"""SIGKILL at random moments during backfill and during live runs, restarting each time: the
file sink ends with every event exactly once (no line lost, duplicated or torn)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.conftest import ORG_TYPES, cli_env, recent_events, run_cli
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "forwarder", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_repeatedly(
    args: list[str], cwd: Path, env: dict[str, str], rng: random.Random, kills: int
) -> int:
    """Start the command and SIGKILL it at a random moment until `kills` kills landed while
    it was running (or it twice finished on its own first: nothing left to interrupt)."""
    killed = finished = 0
    while killed < kills and finished < 2:
        process = start(args, cwd, env)
        time.sleep(rng.uniform(0.4, 2.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
            finished = 0
        else:
            finished += 1
        process.wait(timeout=30)
    return killed


def feed_live_events(fake: FakeOpenAI, stop: threading.Event) -> None:
    """New events every 0.2s, stamped 70 to 400 seconds ago: just behind the lag, or late."""
    seq = 100_000
    while not stop.wait(0.2):
        now = int(time.time())
        fake.add_events(
            make_events(20, start=now - 400, end=now - 70, seed=seq, first_seq=seq, types=ORG_TYPES)
        )
        seq += 20


def file_ids(path: Path) -> Counter[str]:
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file ends in a torn line"
    return Counter(orjson.loads(line)["id"] for line in lines[:-1])


def test_sigkill_during_backfill_and_run_leaves_every_event_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    now = int(time.time())
    old = recent_events(6000, hours=8, seed=21, same_second_ratio=0.3)
    old = [e for e in old if e["effective_at"] < now - 3 * 3600]
    backlog = recent_events(2000, hours=2.5, seed=22, same_second_ratio=0.3, first_seq=50_000)
    boundary = now - 3 * 3600
    out = tmp_path / "out.ndjson"
    common = [
        "--sink",
        f"file:{out}",
        "--schema",
        "raw",
        "--state",
        str(tmp_path / "s.db"),
        "--batch-size",
        "100",
    ]
    with FakeOpenAI(old, admin_key="sk-admin-crashtest-0123456789", latency=0.06) as fake:
        env = cli_env(
            OPENAI_ADMIN_KEY="sk-admin-crashtest-0123456789", OPENAI_BASE_URL=fake.base_url
        )
        backfill = [
            "backfill",
            "--since",
            "9h",
            "--until",
            str(boundary),
            "--window",
            "10m",
            "--concurrency",
            "1",
            *common,
        ]
        killed = kill_repeatedly(backfill, tmp_path, env, rng, kills=10)
        finished = run_cli(*backfill, cwd=tmp_path, env=env)
        assert finished.code == 0, finished.stderr

        # Live: a backlog, then new events keep arriving (some late, all within the
        # overlap) while the daemon is killed again and again.
        fake.add_events(backlog)
        arriving = threading.Event()
        feeder = threading.Thread(target=feed_live_events, args=(fake, arriving), daemon=True)
        feeder.start()
        run = [
            "run",
            "--start-at",
            str(boundary),
            "--interval",
            "1s",
            "--lag",
            "60s",
            "--overlap",
            "10m",
            *common,
        ]
        killed += kill_repeatedly(run, tmp_path, env, rng, kills=10)
        killed += kill_repeatedly([*run, "--once"], tmp_path, env, rng, kills=4)
        arriving.set()
        feeder.join()
        final = run_cli("run", "--once", *run[1:], cwd=tmp_path, env=env)
        assert final.code == 0, final.stderr
        expected = set(fake.listing())

    assert killed >= 20, f"only {killed} kills landed while the process ran"
    delivered = file_ids(out)
    assert set(delivered) == expected
    assert max(delivered.values()) == 1
