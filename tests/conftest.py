"""Shared fixtures: the fake OpenAI API, running the CLI as a real process, reading outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fakes.events import EVENT_TYPES, UNKNOWN_TYPES, is_tenant_scoped, make_events
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.rsyslog import Rsyslog
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
# Types the endpoint lists without tenant_only (tenant-scoped ones need a stream of their own).
ORG_TYPES = [t for t in EVENT_TYPES + UNKNOWN_TYPES if not is_tenant_scoped(t)]
ADMIN_KEY = "sk-admin-TESTKEY-7f3c9a1e5b2d4c6e8a0f1b3d5e7a9c1e"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 120,
) -> CliResult:
    """Run `python -m forwarder ARGS` as a separate process."""
    done = subprocess.run(
        [sys.executable, "-m", "forwarder", *args],
        cwd=cwd,
        env=env or cli_env(),
        input=input,
        capture_output=True,
        timeout=timeout,
    )
    return CliResult(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def sigterm_run(
    *args: str,
    cwd: Path,
    env: dict[str, str],
    ready: Callable[[], Any],
    settle: float = 0.0,
) -> tuple[CliResult, float]:
    """Start `python -m forwarder ARGS`, wait until `ready()` holds (60 s at most; the process
    must still run then), `settle` seconds more, send SIGTERM; the result and the seconds
    from the signal to the exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "forwarder", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: ready() or proc.poll() is not None, 60), "not ready in 60 s"
        assert proc.poll() is None, proc.communicate()
        time.sleep(settle)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return CliResult(proc.returncode, stdout.decode(), stderr.decode()), took


def raw_file_sink(tmp_path: Path) -> tuple[Path, list[str]]:
    """The output file, and the flags that deliver raw events to it with a state of its own."""
    out = tmp_path / "out.ndjson"
    return out, ["--sink", f"file:{out}", "--schema", "raw", "--state", str(tmp_path / "s.db")]


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


@pytest.fixture
def fake_api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(admin_key=ADMIN_KEY) as fake:
        yield fake


@pytest.fixture
def api_env(fake_api: FakeOpenAI) -> dict[str, str]:
    return cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake_api.base_url)


def recent_events(n: int, *, hours: float = 3, seed: int = 0, **kwargs: Any) -> list[dict]:
    """`n` organization-scoped events spread over the last `hours`, ending two minutes ago."""
    end = int(time.time()) - 120
    kwargs.setdefault("types", ORG_TYPES)
    return make_events(n, start=end - int(hours * 3600), end=end, seed=seed, **kwargs)


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    """A real rsyslogd on loopback ports for the test module (skips without it, fails
    under CI)."""
    peer = Rsyslog(tmp_path_factory.mktemp("rsyslog")).start()
    yield peer
    peer.stop()
