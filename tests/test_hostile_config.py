"""Hostile input and faults (issue 11): the admin key never shows in any output channel, an
insecure transport is refused or warned about, a passing fault of the machine (disk full, a
read-only directory) is exit 1 or a retry and never exit 2, config values that slipped through
are exit 2 with one line, the metrics server cannot be exhausted, files are private and
`{stream}` cannot leave its directory. Each test checks the outcome and that no event is lost:
received plus dead-lettered equals the input."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import (
    ADMIN_KEY,
    CliResult,
    cli_env,
    read_ndjson,
    recent_events,
    run_cli,
    write_jsonl,
)
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import LISTEN, free_port, kernel_sockets, missing_peer
from tests.waiting import wait_for

ERROR_PREFIX = "openai-audit-forwarder: error: "


# Helpers --------------------------------------------------------------------------------------


def assert_one_line(result: CliResult, code: int, *fragments: str) -> str:
    """Exit `code` with exactly one line on stderr, the error line naming `fragments` (with
    -v, after the start-up line and nothing else)."""
    assert result.code == code, result.output
    lines = result.stderr.strip().splitlines()
    if lines and " INFO openai-audit-forwarder " in lines[0]:  # the -v start-up line
        lines = lines[1:]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def events_with_one_unmappable(n: int, seed: int) -> list[dict[str, Any]]:
    events = recent_events(n, hours=1, seed=seed)
    events[3]["actor"] = "not an object"  # the ECS mapper cannot use it: a dead letter
    return events


def older_and_newer(
    events: list[dict[str, Any]], n: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The `n` oldest events (a first run) and the rest (arriving later)."""
    ordered = sorted(events, key=lambda e: (e["effective_at"], e["id"]))
    return ordered[:n], ordered[n:]


def dead_lettered_ids(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return [
        orjson.loads(line)["event"]["id"]
        for path in sorted(directory.glob("dead-letters-*"))
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def received_ids(out: Path) -> list[str]:
    return [doc["event"]["id"] if "event" in doc else doc["id"] for doc in read_ndjson(out)]


def assert_no_event_lost(events: list[dict[str, Any]], out: Path, dead_letter: Path) -> None:
    """Every input event was received once or dead-lettered: nothing lost, nothing twice."""
    received = received_ids(out)
    assert len(received) == len(set(received)), "an event was received twice"
    assert set(received) | set(dead_lettered_ids(dead_letter)) == {e["id"] for e in events}


def key_parts(key_text: str) -> list[str]:
    """The key and each line of the file that held it."""
    return [key_text.strip()] + [line for line in key_text.splitlines() if line.strip()]


def assert_key_nowhere(parts: list[str], texts: list[str], tmp_path: Path, *skip: Path) -> None:
    """Neither the key nor any line of its file in the outputs or in any file written
    (state, WAL, dead letters, sink output); `skip` names the key file itself."""
    for part in parts:
        for text in texts:
            assert part not in text, f"{part!r} shown"
        for path in tmp_path.rglob("*"):
            if path.is_file() and path not in skip:
                assert part.encode() not in path.read_bytes(), path


def state_rows(db: Path) -> list:
    if not db.exists():
        return []
    # immutable: also on a read-only mount (the forwarder left no WAL behind: it has ended)
    with contextlib.closing(sqlite3.connect(f"file:{db}?immutable=1", uri=True)) as conn:
        return sorted(conn.execute("SELECT stream, watermark FROM streams"))


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    """A small file system of its own at `path` (for a real disk full or read-only mount)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    if done.returncode != 0:
        missing_peer(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Fill the file system under `directory` to the last block; returns the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (4096, 1):  # then the last partial block
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def non_loopback_ip() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; picks the outgoing address
        address = probe.getsockname()[0]
    except OSError:
        address = ""
    finally:
        probe.close()
    if not address or address.startswith("127."):
        missing_peer("this machine has no non-loopback IPv4 address")
    return address


class EchoingProxy:
    """A hostile HTTP proxy in front of the fake API: it answers the first `fail` requests with
    a 503 whose body echoes the Authorization header in full (as some proxies and WAFs do), and
    forwards the rest. It records every Authorization header it saw."""

    def __init__(self, upstream: str, fail: int = 0, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rsplit("/v1", 1)[0]
        self.fail = fail
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                proxy.seen.append(auth)
                if proxy.fail > 0:
                    proxy.fail -= 1
                    body = orjson.dumps(
                        {"error": {"message": f"upstream refused {auth} ({auth[7:]})"}}
                    )
                    status = 503
                else:
                    answer = httpx.get(
                        proxy.upstream + self.path, headers={"Authorization": auth}, timeout=30
                    )
                    body, status = answer.content, answer.status_code
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_daemon(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "forwarder", "run", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop_daemon(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    return stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")


def healthz(port: int, host: str = "127.0.0.1") -> httpx.Response | None:
    try:
        return httpx.get(f"http://{host}:{port}/healthz", timeout=5)
    except httpx.HTTPError:
        return None


# 1. The key never shows ---------------------------------------------------------------------

MULTILINE_KEY = ADMIN_KEY + "\nBBBsecond-line-secret\n"


@pytest.mark.parametrize(
    "content",
    [
        MULTILINE_KEY,
        ADMIN_KEY + "\x07bell-and-more\n",
        ADMIN_KEY + "\tsecond-part-secret\n",
        "\x00" + ADMIN_KEY + "\n",
        ADMIN_KEY + "\r\nBBBsecond-line-secret",
    ],
    ids=["second-line", "control-char", "tab", "nul", "crlf-second-line"],
)
def test_a_key_file_with_a_second_line_or_a_control_character_is_exit_2_before_any_request_and_shows_neither_line(  # noqa: E501
    tmp_path: Path, fake_api: FakeOpenAI, content: str
) -> None:
    events = recent_events(40, hours=1, seed=61)
    fake_api.add_events(events)
    key_file = tmp_path / "key"
    key_file.write_text(content)
    env = cli_env(OPENAI_BASE_URL=fake_api.base_url)
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    common = ["--start-at", "2h", "--sink", f"file:{out}", "--state", str(tmp_path / "s.db")]
    common += ["--dead-letter", str(dead), "--admin-key-file", str(key_file)]
    bad = run_cli("run", "--once", "-vv", *common, cwd=tmp_path, env=env)
    assert_one_line(bad, 2, "invalid setting admin_key_file", "one line")
    checked = [*common[2:6], *common[8:]]  # check delivers nothing: no --dead-letter
    as_json = run_cli("check", "-vv", "--log-format", "json", *checked, cwd=tmp_path, env=env)
    assert_one_line(as_json, 2, "invalid setting admin_key_file", "one line")
    assert fake_api.requests == [], "the key went out before it was checked"
    assert not out.exists() and state_rows(tmp_path / "s.db") == []
    parts = [ADMIN_KEY] + [part for part in re.split(r"[\x00-\x1f]", content) if part]
    assert_key_nowhere(parts, [bad.output, as_json.output], tmp_path, key_file)
    # The same key with only its trailing newline (here CRLF) is accepted; nothing was lost.
    key_file.write_text(ADMIN_KEY + "\r\n")
    good = run_cli("run", "--once", "-q", *common, cwd=tmp_path, env=env)
    assert good.code == 0, good.stderr
    assert_no_event_lost(events, out, dead)
    assert len(received_ids(out)) == len(events)


def test_a_key_echoed_by_a_hostile_proxy_is_redacted_from_logs_errors_healthz_dead_letters_and_state(  # noqa: E501
    tmp_path: Path, fake_api: FakeOpenAI
) -> None:
    events = events_with_one_unmappable(60, seed=62)
    fake_api.add_events(events)
    key_file = tmp_path / "secrets" / "key"
    key_file.parent.mkdir()
    key_file.write_text(ADMIN_KEY + "\n")
    parts = key_parts(ADMIN_KEY)
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    common = ["--start-at", "2h", "--sink", f"file:{out}", "--state", str(tmp_path / "s.db")]
    common += ["--dead-letter", str(dead), "--admin-key-file", str(key_file)]

    # Text logs and a failed --once: more echoing failures than retries.
    proxy = EchoingProxy(fake_api.base_url, fail=3)
    try:
        env = cli_env(
            OPENAI_BASE_URL=f"http://127.0.0.1:{proxy.port}/v1", AUDIT_FORWARDER_REQUEST_RETRIES="1"
        )
        failed = run_cli("run", "--once", "-vv", *common, cwd=tmp_path, env=env)
        assert failed.code == 1, failed.output
        assert "HTTP 503" in failed.stderr and "[REDACTED]" in failed.stderr
        assert failed.stderr.strip().splitlines()[-1].startswith(ERROR_PREFIX)
        assert state_rows(tmp_path / "s.db") == [] and received_ids(out) == []

        # JSON logs and /healthz of the daemon: the first sweep fails (last_error holds the
        # echo), the next one delivers everything.
        proxy.fail = 3
        port = free_port()
        daemon = start_daemon(
            tmp_path,
            "-vv",
            "--log-format",
            "json",
            "--interval",
            "1s",
            "--metrics-addr",
            f"127.0.0.1:{port}",
            *common,
            env=env,
        )
        bodies = []
        try:

            def failure_seen() -> str | None:
                response = healthz(port)
                error = response and response.json()["streams"].get("default", {})
                if error and error.get("last_error"):
                    bodies.append(response.text)
                    return response.text
                return None

            wait_for(failure_seen)
            wait_for(lambda: len(received_ids(out)) == len(events) - 1, timeout=90)
            bodies.append(healthz(port).text)  # type: ignore[union-attr]
        finally:
            stdout, stderr = stop_daemon(daemon)
    finally:
        proxy.close()
    assert any(ADMIN_KEY in seen for seen in proxy.seen)  # the proxy did get (and echo) it
    assert "[REDACTED]" in bodies[0] and "HTTP 503" in bodies[0]
    logs = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any("[REDACTED]" in str(doc) for doc in logs)
    assert_key_nowhere(
        parts, [failed.output, stdout, stderr, *bodies], tmp_path, key_file, key_file.parent
    )
    assert_no_event_lost(events, out, dead)
    assert dead_lettered_ids(dead) == [events[3]["id"]]


def test_a_password_in_a_sink_url_parameter_is_redacted_from_check_errors_and_metrics_names(
    tmp_path: Path,
) -> None:
    events = recent_events(10, hours=1, seed=63)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    password = "s3cr3t-PASSWORD-x9"
    sink = f"s3://audit-bucket/p?endpoint_url=http://user:{password}@127.0.0.1:1&region=us-east-1"
    env = cli_env(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="example-secret")
    common = ["--input", str(source), "--state", str(tmp_path / "s.db"), "--sink", sink]
    check = run_cli("check", *common, cwd=tmp_path, env=env)
    assert check.code == 1, check.output
    assert "FAIL  sink s3://audit-bucket/p?endpoint_url=http://[REDACTED]@" in check.stdout
    out = tmp_path / "out.ndjson"
    run = run_cli(
        "run",
        "--once",
        "--sink-retry-timeout",
        "1s",
        "--sink",
        f"file:{out}",
        *common,
        cwd=tmp_path,
        env=env,
    )
    assert run.code == 1
    assert run.stderr.strip().splitlines()[-1].startswith(ERROR_PREFIX)
    for text in (check.output, run.output):
        assert password not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    # The batch went to no sink for good: the file got it, but the commit never happened, so
    # the next run (S3 fixed by dropping it) delivers it again without a duplicate.
    again = run_cli(
        "run", "--once", "--input", str(source), "--state", str(tmp_path / "s.db"),
        "--sink", f"file:{out}", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert again.code == 0, again.stderr
    assert_no_event_lost(events, out, tmp_path / "dead-letter")


# 3. Cleartext and unverified transport ------------------------------------------------------


def test_an_http_base_url_to_another_machine_is_refused_before_the_key_goes_out_unless_allowed(
    tmp_path: Path, fake_api: FakeOpenAI
) -> None:
    events = recent_events(30, hours=1, seed=64)
    fake_api.add_events(events)
    address = non_loopback_ip()
    proxy = EchoingProxy(fake_api.base_url, host="0.0.0.0")  # reachable from elsewhere
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    common = ["--start-at", "2h", "--sink", f"file:{out}", "--state", str(tmp_path / "s.db")]
    common += ["--dead-letter", str(dead)]
    # OPENAI_BASE_URL is shared with the OpenAI SDK: a proxy set up for other tools.
    env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=f"http://{address}:{proxy.port}/v1")
    try:
        refused = run_cli("run", "--once", *common, cwd=tmp_path, env=env)
        assert_one_line(refused, 2, "invalid setting base_url", "cleartext", address)
        assert proxy.seen == []
        assert not out.exists() and state_rows(tmp_path / "s.db") == []
        allowed = run_cli("run", "--once", "--allow-insecure-http", *common, cwd=tmp_path, env=env)
        assert allowed.code == 0, allowed.stderr
        assert "the admin key is sent in cleartext" in allowed.stderr
        assert proxy.seen and all(seen == f"Bearer {ADMIN_KEY}" for seen in proxy.seen)
    finally:
        proxy.close()
    assert ADMIN_KEY not in refused.output + allowed.output
    assert_no_event_lost(events, out, dead)
    assert len(received_ids(out)) == len(events)


def test_verify_tls_false_is_warned_at_start_and_in_check(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the sweep fails after the warning
    env = cli_env(
        OPENAI_ADMIN_KEY=ADMIN_KEY,
        OPENAI_BASE_URL=f"https://127.0.0.1:{port}/v1",
        AUDIT_FORWARDER_VERIFY_TLS="false",
        AUDIT_FORWARDER_REQUEST_RETRIES="0",
    )
    out = tmp_path / "out.ndjson"
    common = ["--sink", f"file:{out}", "--state", str(tmp_path / "s.db")]
    run = run_cli("run", "--once", *common, cwd=tmp_path, env=env)
    assert run.code == 1
    lines = run.stderr.strip().splitlines()
    assert " WARNING " in lines[0]
    assert "verify_tls=false: the API's certificate is not checked" in lines[0]
    assert lines[-1].startswith(ERROR_PREFIX + "OpenAI API: giving up")
    check = run_cli("check", *common, cwd=tmp_path, env=env)
    assert check.code == 1
    assert "WARN  source default: verify_tls=false" in check.stdout
    assert received_ids(out) == [] and state_rows(tmp_path / "s.db") == []
    assert ADMIN_KEY not in run.output + check.output


# 8. Passing faults of the machine: exit 1 or a retry, never exit 2 ----------------------------


def file_run_args(tmp_path: Path, source: Path, state: Path, dead: Path) -> list[str]:
    out = tmp_path / "out.ndjson"
    return [
        "run",
        "--once",
        "--input",
        str(source),
        "--sink",
        f"file:{out}",
        "--state",
        str(state),
        "--dead-letter",
        str(dead),
    ]


def test_disk_full_while_opening_the_state_is_exit_1_in_one_line_and_the_next_run_delivers_all(
    tmp_path: Path,
) -> None:
    events = events_with_one_unmappable(50, seed=65)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    with tmpfs(tmp_path / "disk") as disk:
        filler = fill(disk)
        args = file_run_args(tmp_path, source, disk / "state" / "s.db", dead)
        full = run_cli(*args, cwd=tmp_path)
        assert_one_line(full, 1, "state", "full")
        assert received_ids(out) == [] and dead_lettered_ids(dead) == []
        filler.unlink()
        again = run_cli(*args, cwd=tmp_path)
        assert again.code == 0, again.stderr
        assert state_rows(disk / "state" / "s.db")
    assert_no_event_lost(events, out, dead)


@pytest.mark.parametrize(
    "streams",
    [[], ["--with-tenant"]],
    ids=["one-stream", "two-streams-sharing-the-sink"],  # the second keeps its sinks open
)
def test_disk_full_at_commit_fails_healthz_in_the_daemon_and_the_next_sweep_delivers_all(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str], streams: list[str]
) -> None:
    first = recent_events(40, hours=1, seed=66)
    fake_api.add_events(first)
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    port = free_port()
    with tmpfs(tmp_path / "disk", size="512k") as disk:
        daemon = start_daemon(
            tmp_path,
            "--interval",
            "1s",
            "--start-at",
            "2h",
            "--lag",
            "1s",
            "--health-max-age",
            "3s",
            "--metrics-addr",
            f"127.0.0.1:{port}",
            "--sink",
            f"file:{out}",
            "--state",
            str(disk / "s.db"),
            "--dead-letter",
            str(dead),
            *streams,
            env=api_env,
        )
        try:
            wait_for(lambda: len(received_ids(out)) == len(first))
            filler = fill(disk)
            later = recent_events(30, hours=0.01, seed=67, first_seq=5000)
            for event in later:
                event["effective_at"] = int(time.time()) - 1
            fake_api.add_events(later)

            def unhealthy() -> dict | None:
                response = healthz(port)
                if response is None or response.status_code != 503:
                    return None
                return response.json()["streams"]["default"]

            stream = wait_for(unhealthy, timeout=90)
            assert "cannot commit" in stream["last_error"] and "full" in stream["last_error"]
            assert daemon.poll() is None  # still running, retrying every sweep
            filler.unlink()
            wait_for(lambda: (r := healthz(port)) is not None and r.status_code == 200)
            wait_for(lambda: len(set(received_ids(out))) == len(first) + len(later))
        finally:
            _, stderr = stop_daemon(daemon)
    assert daemon.returncode == 0, stderr
    assert "sweep failed" in stderr and "next try" in stderr
    assert ADMIN_KEY not in stderr
    assert_no_event_lost(first + later, out, dead)


def test_a_read_only_state_directory_is_exit_1_in_one_line_and_the_next_run_delivers_all(
    tmp_path: Path,
) -> None:
    first, later = older_and_newer(events_with_one_unmappable(50, seed=68), 30)
    source = tmp_path / "in.jsonl"
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    with tmpfs(tmp_path / "ro") as disk:
        args = file_run_args(tmp_path, source, disk / "s.db", dead)
        write_jsonl(source, first)
        assert run_cli(*args, cwd=tmp_path).code == 0
        before = state_rows(disk / "s.db")
        write_jsonl(source, first + later)
        remount(disk, "ro")
        try:
            refused = run_cli(*args, cwd=tmp_path)
            assert_one_line(refused, 1, "Read-only file system")
            assert state_rows(disk / "s.db") == before
        finally:
            remount(disk, "rw")
        again = run_cli(*args, cwd=tmp_path)
        assert again.code == 0, again.stderr
    assert_no_event_lost(first + later, out, dead)


def test_an_unwritable_dead_letter_directory_is_exit_1_in_one_line_and_the_next_run_delivers_all(
    tmp_path: Path,
) -> None:
    events = events_with_one_unmappable(40, seed=70)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    out = tmp_path / "out.ndjson"
    with tmpfs(tmp_path / "dl") as dead:
        args = file_run_args(tmp_path, source, tmp_path / "s.db", dead / "letters")
        remount(dead, "ro")
        try:
            refused = run_cli(*args, cwd=tmp_path)
            assert_one_line(refused, 1, "dead letters", "Read-only file system")
            assert state_rows(tmp_path / "s.db") == []
        finally:
            remount(dead, "rw")
        again = run_cli(*args, cwd=tmp_path)
        assert again.code == 0, again.stderr
        assert dead_lettered_ids(dead / "letters") == [events[3]["id"]]
        assert_no_event_lost(events, out, dead / "letters")


# 10. Values that slipped through validation: exit 2, one line ---------------------------------


@pytest.mark.parametrize(
    ("flags", "toml", "setting"),
    [
        ([], "interval = nan", "interval"),
        ([], "interval = inf", "interval"),
        (["--interval", "99999999999d"], "", "interval"),
        (["--interval", "1ms"], "", "interval: must be at least 1s"),
        (["--interval", "0.5s"], "", "interval: must be at least 1s"),
        ([], "lag = nan", "lag"),
        ([], "lag = -inf", "lag"),
        ([], "overlap = inf", "overlap"),
        ([], "window = 1e300", "window"),
        (["--sink-retry-timeout", "1000000000h"], "", "sink_retry_timeout"),
        (["--sink", "syslog+tcp://127.0.0.1:1?timeout=nan"], "", "timeout='nan'"),
        (["--sink", "fluentd://127.0.0.1:1?timeout=inf"], "", "timeout='inf'"),
        (["--sink", "fluentd://127.0.0.1:1?ack_timeout=1e300"], "", "ack_timeout"),
        (["--start-at", "99999999999d"], "", "start_at"),
        (["--start-at", "99999999999999999999"], "", "start_at"),
        (["--with-tenant", "--tenant-only"], "", "with_tenant"),
        ([], "with_tenant = true\ntenant_only = true", "with_tenant"),
    ],
)
def test_a_value_that_used_to_slip_through_validation_is_exit_2_in_one_line(
    tmp_path: Path, flags: list[str], toml: str, setting: str
) -> None:
    events = recent_events(10, hours=1, seed=71)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    config = tmp_path / "c.toml"
    config.write_text(toml + "\n")
    out = tmp_path / "out.ndjson"
    result = run_cli(
        "run",
        "--once",
        "--config",
        str(config),
        "--input",
        str(source),
        "--sink",
        f"file:{out}",
        "--state",
        str(tmp_path / "s.db"),
        *flags,
        cwd=tmp_path,
        timeout=30,
    )
    assert_one_line(result, 2, "invalid setting", setting)
    assert not out.exists() and not (tmp_path / "s.db").exists()


# 11. The metrics server ---------------------------------------------------------------------


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def metrics_daemon(
    tmp_path: Path, source: Path, out: Path, dead: Path, metrics_addr: str
) -> subprocess.Popen:
    """The daemon on `source` into a file sink, serving metrics and /healthz at `metrics_addr`."""
    return start_daemon(
        tmp_path,
        "--input",
        str(source),
        "--metrics-addr",
        metrics_addr,
        "--sink",
        f"file:{out}",
        "--state",
        str(tmp_path / "s.db"),
        "--dead-letter",
        str(dead),
        env=cli_env(),
    )


def test_the_metrics_server_binds_loopback_by_default_and_idle_connections_cannot_pile_up_threads(
    tmp_path: Path,
) -> None:
    events = events_with_one_unmappable(60, seed=72)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    port = free_port()
    daemon = metrics_daemon(tmp_path, source, out, dead, f":{port}")
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: (r := healthz(port)) is not None and r.status_code == 200)
        wait_for(lambda: len(received_ids(out)) == len(events) - 1)
        address = non_loopback_ip()
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()
        baseline = thread_count(daemon.pid)
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        wait_for(
            lambda: all(s.unread == 0 for s in kernel_sockets(port) if s.state == LISTEN),
            30,
            "the metrics server to accept the 300 connections",
        )
        assert thread_count(daemon.pid) <= baseline + 32
        started = time.monotonic()
        for sock in idle:  # each is closed by the server: EOF, or a reset for the surplus
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
        assert time.monotonic() - started < 15
        wait_for(lambda: thread_count(daemon.pid) <= baseline, timeout=15)
        response = healthz(port)
        assert response is not None and response.status_code == 200
    finally:
        for sock in idle:
            sock.close()
        _, stderr = stop_daemon(daemon)
    assert daemon.returncode == 0, stderr
    assert_no_event_lost(events, out, dead)


def test_the_metrics_server_listens_on_an_ipv6_literal(tmp_path: Path) -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        missing_peer("no IPv6 loopback on this machine")
    events = recent_events(20, hours=1, seed=73)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    port = free_port()
    daemon = metrics_daemon(tmp_path, source, out, dead, f"[::1]:{port}")
    try:
        response = wait_for(lambda: healthz(port, "[::1]"))
        assert response.status_code == 200
        wait_for(lambda: len(received_ids(out)) == len(events))
        metrics = httpx.get(f"http://[::1]:{port}/metrics", timeout=5).text
        assert "oaf_events_delivered_total" in metrics
    finally:
        _, stderr = stop_daemon(daemon)
    assert daemon.returncode == 0, stderr
    assert_no_event_lost(events, out, dead)


# 14. File modes -------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_state_sink_output_map_output_and_dead_letters_are_0600_in_0700_directories(
    tmp_path: Path,
) -> None:
    events = events_with_one_unmappable(30, seed=74)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    out = tmp_path / "out" / "a" / "events.ndjson"
    dead = tmp_path / "dead" / "b"
    state = tmp_path / "state" / "c" / "s.db"
    mapped = tmp_path / "mapped" / "d" / "ocsf.ndjson"
    old_umask = os.umask(0o022)  # the usual default; what the files got before
    try:
        run = run_cli(
            "run", "--once", "--input", str(source), "--sink", f"file:{out}",
            "--state", str(state), "--dead-letter", str(dead), cwd=tmp_path,
        )  # fmt: skip
        mapping = run_cli("map", "--schema", "ocsf", str(source), "-o", str(mapped), cwd=tmp_path)
    finally:
        os.umask(old_umask)
    assert run.code == 0, run.stderr
    assert mapping.code == 1  # the unmappable event is reported, the rest is mapped
    for path in (out, state, mapped, *dead.iterdir()):
        assert mode(path) == 0o600, path
    for directory in (out.parent, out.parent.parent, dead, dead.parent, state.parent):
        assert mode(directory) == 0o700, directory
    assert (mode(mapped.parent), mode(mapped.parent.parent)) == (0o700, 0o700)
    assert_no_event_lost(events, out, dead)
    assert len(read_ndjson(mapped)) == len(events) - 1


def test_an_existing_world_readable_state_file_is_tightened_to_0600_with_a_warning(
    tmp_path: Path,
) -> None:
    first, later = older_and_newer(recent_events(30, hours=1, seed=75), 20)
    source = tmp_path / "in.jsonl"
    out, dead = tmp_path / "out.ndjson", tmp_path / "dl"
    args = file_run_args(tmp_path, source, tmp_path / "s.db", dead)
    write_jsonl(source, first)
    assert run_cli(*args, cwd=tmp_path).code == 0
    os.chmod(tmp_path / "s.db", 0o644)
    write_jsonl(source, first + later)
    again = run_cli(*args, cwd=tmp_path)
    assert again.code == 0, again.stderr
    warnings = [line for line in again.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "had mode 0644; tightened to 0600" in warnings[0]
    assert mode(tmp_path / "s.db") == 0o600
    assert_no_event_lost(first + later, out, dead)


# 15. `{stream}` stays inside its directory or prefix ----------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "...", "a/../..", "..\\x"])
@pytest.mark.parametrize("where", ["flag", "toml"])
def test_a_stream_name_that_would_leave_the_sink_directory_is_exit_2(
    tmp_path: Path, name: str, where: str
) -> None:
    events = recent_events(10, hours=1, seed=77)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    sinks = tmp_path / "sinks" / "inner"
    config = tmp_path / "c.toml"
    args = ["run", "--once", "--input", str(source), "--state", str(tmp_path / "s.db")]
    args += ["--sink", f"file:{sinks}/{{stream}}/out.ndjson"]
    args += ["--sink", "s3://audit-bucket/{stream}/x?region=us-east-1"]
    if where == "flag":
        args += ["--stream", name]
        config.write_text("")
    else:
        config.write_text(f"[[streams]]\nname = {orjson.dumps(name).decode()}\n")
    result = run_cli(*args, "--config", str(config), cwd=tmp_path, timeout=30)
    assert_one_line(result, 2, "invalid setting", "stream")
    assert not (tmp_path / "sinks").exists() and not (tmp_path / "s.db").exists()


def test_a_stream_name_with_dots_inside_is_kept_in_its_own_directory(tmp_path: Path) -> None:
    events = recent_events(25, hours=1, seed=78)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    sinks = tmp_path / "sinks"
    result = run_cli(
        "run", "--once", "--input", str(source), "--stream", "acme..prod",
        "--sink", f"file:{sinks}/{{stream}}/out.ndjson", "--state", str(tmp_path / "s.db"),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    out = sinks / "acme..prod" / "out.ndjson"
    assert [p.relative_to(sinks) for p in sinks.rglob("*.ndjson")] == [out.relative_to(sinks)]
    assert_no_event_lost(events, out, tmp_path / "dead-letter")


def test_redaction_reaches_text_and_json_logs_and_thread_crashes_in_process(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The one redaction place, exercised directly: exception text in text and JSON logs, a
    crashing thread, /healthz last_error and a dead-letter reason."""
    from forwarder.deadletter import DeadLetters
    from forwarder.health import Health
    from forwarder.logs import register_secret, setup_logging

    secret_file = "sk-admin-InProcessKey0123456789\nsecond-line-of-the-file\n"
    register_secret(secret_file)
    leak = "boom sk-proj-OtherKeyNeverLoaded9876 second-line-of-the-file http://u:pw-123456@h/x"
    for log_format in ("text", "json"):
        log = setup_logging(log_format, 1)
        try:
            raise RuntimeError(f"{leak} sk-admin-InProcessKey0123456789")
        except RuntimeError:
            log.exception("failed: %s", leak, extra={"sink": leak})
    thread = threading.Thread(target=lambda: (_ for _ in ()).throw(ValueError(leak)))
    thread.start()
    thread.join()
    health = Health(60)
    health.failure("default", leak)
    DeadLetters(tmp_path / "dead", "default").add(leak, {"id": "audit_log-1"})
    (letter_file,) = (tmp_path / "dead").iterdir()
    letter = letter_file.read_text()
    assert "audit_log-1" in letter
    captured = capfd.readouterr()
    texts = [captured.out, captured.err, orjson.dumps(health.report()[1]).decode(), letter]
    assert captured.err.count("[REDACTED]") >= 10
    for text in texts:
        for part in ("InProcessKey", "OtherKeyNeverLoaded", "second-line-of-the-file", "pw-1234"):
            assert part not in text, text
    logging.getLogger("forwarder").handlers[:] = []  # they write to the captured stream
