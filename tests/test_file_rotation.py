"""The file sink follows rotation (issue 15, item 4): Debian's real logrotate, with the configs
in packaging/logrotate/, rotates the output of a running daemon 20 times in each mode while
events keep arriving; every event is then in exactly one of the files (rotated ones gzipped
included), no line is torn and no NUL byte appears. SIGHUP reopens and never stops the daemon;
a file renamed away or truncated by hand is followed too, and the crash-safe offset stays right
across a reopen."""

from __future__ import annotations

import gzip
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from forwarder.deadletter import DeadLetters
from forwarder.delivery import Delivery
from forwarder.errors import DeliveryError
from forwarder.sinks import open_sink
from forwarder.sinks.base import Record
from forwarder.sinks.file import request_reopen
from forwarder.state import State
from mappings.registry import load_mapper
from tests.conftest import ADMIN_KEY, ORG_TYPES, REPO, cli_env
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import free_port, require_executable
from tests.waiting import wait_for

CONFIGS = {
    "create": "openai-audit-forwarder",
    "copytruncate": "openai-audit-forwarder-copytruncate",
}
ROTATIONS = 20


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(f"id-{i}", "login.failed", 1, {"id": f"id-{i}"}) for i in range(start, start + n)
    ]


def ids_in(directory: Path, *, settled: bool = True) -> tuple[Counter[str], bytes]:
    """The event ids in every file of `directory` (gzipped ones too), and all their bytes.
    Not `settled`: the current file may end in a line still being written; it is left out."""
    everything = b""
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".rotating"):
            continue
        data = path.read_bytes()
        data = gzip.decompress(data) if path.name.endswith(".gz") else data
        if not settled:
            data = data[: data.rfind(b"\n") + 1]
        assert data.endswith(b"\n") or not data, f"a torn last line in {path.name}"
        everything += data
    return Counter(orjson.loads(line)["id"] for line in everything.splitlines()), everything


def logrotate_config(tmp_path: Path, mode: str, directory: Path, pid: int) -> Path:
    """The packaged config, as shipped, for the test's directory: only the path, the number of
    files kept (every rotation is counted) and the signal's target differ."""
    text = (REPO / "packaging" / "logrotate" / CONFIGS[mode]).read_text()
    for old, new in (
        ("/var/log/openai-audit-forwarder/*.ndjson", f"{directory}/*.ndjson"),
        ("rotate 14", "rotate 100"),
        ("systemctl kill --signal=HUP openai-audit-forwarder.service", f"kill -HUP {pid}"),
    ):
        assert old in text or (mode == "copytruncate" and "systemctl" in old), old
        text = text.replace(old, new)
    config = tmp_path / f"logrotate-{mode}.conf"
    config.write_text(text)
    config.chmod(0o644)
    return config


class Feeder:
    """Adds a few events a second to the fake API, each a second old, until stopped."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.wait(0.02):
                return
            now = int(time.time())
            events = make_events(3, start=now - 1, end=now, seed=n, types=ORG_TYPES)
            events = [dict(e, id=f"audit_log-feed-{n}-{i}") for i, e in enumerate(events)]
            self.fake.add_events(events)
            self.ids.extend(e["id"] for e in events)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return list(self.ids)


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_logrotate_20_rotations_under_a_steady_flow_lose_and_repeat_nothing(
    tmp_path: Path, mode: str
) -> None:
    logrotate = require_executable("logrotate", "apt-get install logrotate")
    started = time.monotonic()
    directory = tmp_path / "out"
    out = directory / "audit.ndjson"
    with FakeOpenAI(admin_key=ADMIN_KEY) as fake:
        feeder = Feeder(fake)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        args = ["run", "--interval", "1s", "--lag", "0s", "--start-at", "1m", "--without-tenant"]
        args += ["--batch-size", "20", "--sink", f"file:{out}", "--schema", "raw"]
        daemon = subprocess.Popen(
            [sys.executable, "-m", "forwarder", *args, "--state", str(tmp_path / "s.db")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            config = logrotate_config(tmp_path, mode, directory, daemon.pid)
            for _ in range(ROTATIONS):
                # Rotate as soon as the current file holds a batch: mostly in mid-sweep.
                assert wait_for(lambda: out.exists() and out.stat().st_size > 0, 30)
                rotated = subprocess.run(
                    [logrotate, "-f", "-s", str(tmp_path / "logrotate.state"), str(config)],
                    capture_output=True,
                    text=True,
                )
                assert rotated.returncode == 0 and not rotated.stderr, rotated.stderr
            fed = feeder.stop()
            assert wait_for(lambda: set(ids_in(directory, settled=False)[0]) >= set(fed), 30)
        finally:
            feeder.stop()
            daemon.terminate()
            _, stderr = daemon.communicate(timeout=30)
        # A rerun re-reads its overlap from the same state, into the current file: it
        # neither cuts nor repeats anything.
        rerun = subprocess.run(
            [sys.executable, "-m", "forwarder", *args, "--once", "--state", str(tmp_path / "s.db")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert rerun.returncode == 0, rerun.stderr
    log = stderr.decode()
    assert daemon.returncode == 0, log
    found, everything = ids_in(directory)
    assert found == Counter(fed), "every event once"  # 0 lost, 0 duplicated
    assert b"\x00" not in everything
    rotated_files = [p for p in directory.iterdir() if p.name != out.name]
    assert len(rotated_files) == ROTATIONS
    assert not any(p.name.endswith((".rotating", ".backup")) for p in directory.iterdir())
    if mode == "create":
        assert log.count("reopened (the path names another file") >= ROTATIONS
        assert "received SIGHUP" in log
    else:
        assert log.count("truncated under us (copytruncate)") >= ROTATIONS
    print(
        f"\n{mode}: {ROTATIONS} rotations, {len(fed)} events in, {sum(found.values())} out, "
        f"{time.monotonic() - started:.1f}s"
    )


def test_sighup_reopens_the_file_sink_and_never_stops_the_daemon(tmp_path: Path) -> None:
    out = tmp_path / "audit.ndjson"
    now = int(time.time())
    events = make_events(50, start=now - 600, end=now - 60, seed=3, types=ORG_TYPES)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        args = ["run", "--interval", "1s", "--start-at", "1h", "--without-tenant"]
        args += ["--sink", f"file:{out}", "--schema", "raw", "--state", str(tmp_path / "s.db")]
        daemon = subprocess.Popen(
            [sys.executable, "-m", "forwarder", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") == 50, 30)
            os.rename(out, tmp_path / "audit.ndjson.1")
            daemon.send_signal(signal.SIGHUP)
            late = make_events(
                5, start=now - 200, end=now - 100, seed=4, types=ORG_TYPES
            )  # overlap
            fake.add_events([dict(e, id=f"{e['id']}-late") for e in late])
            assert wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") == 5, 30)
            assert daemon.poll() is None  # still running
        finally:
            daemon.terminate()
            _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0  # not 129
    log = stderr.decode()
    assert "received SIGHUP: file sinks reopen their files before the next batch" in log
    assert "reopened" in log
    assert (tmp_path / "audit.ndjson.1").read_bytes().count(b"\n") == 50


def test_a_file_renamed_away_is_followed_and_later_lines_go_to_the_new_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.ndjson"
    sink = open_sink(f"file:{path}")
    sink.restore(None)
    sink.write(records(3))
    os.rename(path, tmp_path / "out.ndjson.1")  # `mv`, as logrotate `create` does
    assert sink.follow()  # the position moved: the caller commits it first
    sink.write(records(2, start=3))
    sink.close()
    assert (tmp_path / "out.ndjson.1").read_bytes().count(b"\n") == 3
    assert [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()] == [
        "id-3",
        "id-4",
    ]


def test_a_file_truncated_under_the_sink_is_written_at_its_real_end_without_nul_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.ndjson"
    sink = open_sink(f"file:{path}")
    sink.restore(None)
    sink.write(records(30))
    os.truncate(path, 0)  # copytruncate, after its copy
    sink.write(records(2, start=30))
    sink.close()
    data = path.read_bytes()
    assert b"\x00" not in data
    assert [orjson.loads(line)["id"] for line in data.splitlines()] == ["id-30", "id-31"]


def test_request_reopen_reopens_a_file_sink_before_its_next_batch(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    sink = open_sink(f"file:{path}")
    sink.restore(None)
    sink.write(records(1))
    sink.committed()  # as Delivery does after the commit: a reopen waits for it
    request_reopen()  # what SIGHUP calls
    assert not sink.follow()  # reopened, same file, same position
    sink.write(records(1, start=1))
    sink.close()
    assert path.read_bytes().count(b"\n") == 2


def test_a_batch_written_into_the_new_file_and_not_committed_is_cut_on_restart(
    tmp_path: Path,
) -> None:
    """The move is committed before the batch is written: a crash then cuts the batch from
    the new file (it is delivered again), instead of keeping it as a duplicate."""
    path = tmp_path / "out.ndjson"
    sink = open_sink(f"file:{path}")
    sink.restore(None)
    sink.write(records(3))
    os.rename(path, tmp_path / "out.ndjson.1")
    assert sink.follow()
    committed = sink.position()  # what Delivery commits before the write
    sink.write(records(2, start=3))  # the process dies before this batch is committed
    sink.close()
    again = open_sink(f"file:{path}")
    again.restore(committed)
    again.write(records(2, start=3))  # delivered again
    again.close()
    assert [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()] == [
        "id-3",
        "id-4",
    ]


def test_no_batch_is_written_while_a_rotation_holds_the_marker(tmp_path: Path) -> None:
    from forwarder.sinks.base import SinkError

    path = tmp_path / "out.ndjson"
    sink = open_sink(f"file:{path}")
    sink.restore(None)
    sink.write(records(1))
    sink.committed()
    marker = tmp_path / "out.ndjson.rotating"
    marker.touch()
    with pytest.raises(SinkError, match=r"being rotated \(.*out.ndjson.rotating exists\)"):
        sink.write(records(1, start=1))
    marker.unlink()
    sink.write(records(1, start=1))
    sink.close()
    assert path.read_bytes().count(b"\n") == 2


def test_a_batch_is_not_written_while_another_process_holds_the_files_flock(
    tmp_path: Path,
) -> None:
    import fcntl

    from forwarder.sinks.base import SinkError

    path = tmp_path / "out.ndjson"
    sink = open_sink(f"file:{path}")
    sink.restore(None)
    holder = os.open(path, os.O_RDONLY)  # as prerotate's `flock FILE true`, held longer
    fcntl.flock(holder, fcntl.LOCK_EX)
    with pytest.raises(SinkError, match="locked by another process"):
        sink.write(records(1))
    os.close(holder)
    sink.write(records(1))
    sink.close()
    assert path.read_bytes().count(b"\n") == 1


def test_a_batch_that_fails_after_its_file_write_is_cut_before_logrotate_can_keep_it(
    tmp_path: Path,
) -> None:
    """The file sink keeps the file's flock from a batch's write until it is committed or
    cut: a rotation (copytruncate, the packaged config) that starts while another sink of the
    batch is down waits for the roll-back, so the failed batch is not in the copy, and the
    retried batch arrives once."""
    logrotate = require_executable("logrotate", "apt-get install logrotate")
    directory = tmp_path / "out"
    out = directory / "audit.ndjson"
    file_sink = open_sink(f"file:{out}", "raw")
    down = open_sink(f"syslog+tcp://127.0.0.1:{free_port()}?retries=0&timeout=1", "raw")
    mappers = {"raw": load_mapper("raw")}
    state = State(tmp_path / "s.db")
    dead_letters = DeadLetters(tmp_path / "dl", "default")
    alone = Delivery([file_sink], mappers, dead_letters, stream="default")
    state.set_sink_positions(alone.open(state.sink_position))  # (the other one is down)
    both = Delivery([file_sink, down], mappers, dead_letters, stream="default", retry_timeout=3)
    now = int(time.time())
    events = make_events(20, start=now - 600, end=now - 60, seed=5, types=ORG_TYPES)
    failed: list[float] = []

    def deliver() -> None:
        own = State(tmp_path / "s.db")  # a connection of this thread's own
        try:
            with pytest.raises(DeliveryError, match="syslog"):
                both.deliver_and_commit(own, "live:default", events)
            failed.append(time.monotonic())
        finally:
            own.close()

    config = logrotate_config(tmp_path, "copytruncate", directory, os.getpid())
    attempt = threading.Thread(target=deliver)
    attempt.start()
    try:
        # The batch is in the file, the other sink is being retried: rotate now.
        assert wait_for(lambda: out.exists() and out.stat().st_size > 0, 30)
        rotated = subprocess.run(
            [logrotate, "-f", "-s", str(tmp_path / "logrotate.state"), str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        rotation_ended = time.monotonic()
        assert rotated.returncode == 0 and not rotated.stderr, rotated.stderr
    finally:
        attempt.join()
    assert failed and rotation_ended >= failed[0]  # the rotation waited for the roll-back
    found, everything = ids_in(directory)
    assert found == Counter()  # nothing of the failed batch, in the copy or the file

    # The other sink is gone for good; the batch goes again, to the file alone.
    alone.deliver_and_commit(state, "live:default", events)
    file_sink.close()
    down.close()
    state.close()
    found, everything = ids_in(directory)
    assert found == Counter(e["id"] for e in events)  # once each
    assert b"\x00" not in everything
