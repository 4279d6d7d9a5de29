"""The API source against a hostile server (tests/fakes/hostile_api.py) and the real file sink:
every fault ends as its documented outcome (exit code, one line, where the events went), no
event is lost (received plus dead-lettered equals the input once the fault is gone), and the
key appears in no output channel."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trustme

from tests.conftest import (
    ADMIN_KEY,
    ORG_TYPES,
    CliResult,
    cli_env,
    raw_file_sink,
    read_ndjson,
    recent_events,
    run_cli,
)
from tests.fakes.events import make_events
from tests.fakes.hostile_api import HostileAPI
from tests.test_errors_and_secrets import assert_one_line_error, state_snapshot
from tests.waiting import wait_for

OLD_EVENTS = 40  # delivered by the priming sweep
NEW_EVENTS = 25  # arrive after it, inside the overlap the next sweep re-reads
STOP_WITHIN = 5.0


@pytest.fixture(scope="module")
def untrusted_ca() -> trustme.CA:
    return trustme.CA()


def api_env(api: HostileAPI, **extra: str) -> dict[str, str]:
    return cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url, **extra)


def source_flags(tmp_path: Path) -> list[str]:
    """The raw file sink with a state of its own, and one listing (no tenant companion
    stream), so that every request the stub sees is the one under test."""
    return [*raw_file_sink(tmp_path)[1], "--without-tenant"]


def sweep(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--once", "--start-at", "2h", *source_flags(tmp_path), *extra]


def new_events(n: int = NEW_EVENTS) -> list[dict]:
    now = int(time.time())
    return make_events(n, start=now - 400, end=now - 90, seed=91, first_seq=50_000, types=ORG_TYPES)


@pytest.fixture
def primed(tmp_path: Path) -> Iterator[HostileAPI]:
    """A stub whose first events were delivered by one good sweep (so that "state unchanged"
    means something), and new events waiting for the next sweep."""
    with HostileAPI(recent_events(OLD_EVENTS, hours=1, seed=90), admin_key=ADMIN_KEY) as api:
        result = run_cli(*sweep(tmp_path, "-q"), cwd=tmp_path, env=api_env(api))
        assert result.code == 0, result.stderr
        assert len(read_ndjson(tmp_path / "out.ndjson")) == OLD_EVENTS
        time.sleep(1.1)  # the next sweep has a new second to ask for
        api.add_events(new_events())
        yield api


def assert_no_event_lost(tmp_path: Path, api: HostileAPI) -> None:
    """With the stub answering right again, one more sweep delivers the rest: every input
    event was received once or dead-lettered, none twice, none missing."""
    api.misbehave(None)
    result = run_cli(*sweep(tmp_path, "-q"), cwd=tmp_path, env=api_env(api))
    assert result.code == 0, result.stderr
    received = [event["id"] for event in read_ndjson(tmp_path / "out.ndjson")]
    dead = [
        letter["event"]["id"]
        for path in sorted((tmp_path / "dead-letter").glob("*.ndjson"))
        for letter in read_ndjson(path)
    ]
    assert len(received) == len(set(received)), "an event was delivered twice"
    assert sorted(received + dead) == sorted(api.fake.listing())
    assert len(received) + len(dead) == OLD_EVENTS + NEW_EVENTS


def assert_key_nowhere(tmp_path: Path, *results: CliResult) -> None:
    """stdout, stderr, log lines, the sink's file, dead letters and the state files."""
    for result in results:
        assert ADMIN_KEY not in result.output
        assert ADMIN_KEY[10:] not in result.output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert ADMIN_KEY.encode() not in path.read_bytes(), path


def run_measuring_memory(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 180
) -> tuple[CliResult, int]:
    """Run the CLI; its result and its peak resident memory in bytes: the kernel's high-water
    mark of its own address space (`VmHWM`), read every 10 ms while it runs. (`ru_maxrss`
    from wait4 is no use here: it counts the forked copy of this test process too.)"""
    out, err = cwd / "cli.stdout", cwd / "cli.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "forwarder", *args],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    peak = 0
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
        peak = max(peak, high_water_mark(proc.pid))
        time.sleep(0.01)
    result = CliResult(proc.returncode, out.read_text(), err.read_text())
    out.unlink()
    err.unlink()
    return result, peak


def high_water_mark(pid: int) -> int:
    """Peak resident memory of a running process's address space in bytes (0 once gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# Item 6: response size -------------------------------------------------------------------


def test_a_gzip_bomb_is_cut_at_the_default_64mb_body_cap_without_inflating_it(
    tmp_path: Path, primed: HostileAPI
) -> None:
    before = state_snapshot(tmp_path)
    primed.misbehave("gzip_bomb")  # 1 MB on the wire, 1 GiB inflated
    env = api_env(primed, AUDIT_FORWARDER_REQUEST_RETRIES="1")
    result, peak = run_measuring_memory(sweep(tmp_path, "-q"), tmp_path, env)
    assert_one_line_error(result, 1, "giving up after 2 attempts", "max_response_size")
    assert "67108864 bytes" in result.stderr
    # The cap plus the interpreter (about 50 MiB), far below the 1 GiB the bomb inflates to.
    assert peak < 200 << 20, f"peak memory {peak >> 20} MiB"
    assert state_snapshot(tmp_path) == before
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, result)


def test_gzip_encoded_pages_within_the_cap_are_read_whole(
    tmp_path: Path, primed: HostileAPI
) -> None:
    primed.misbehave("gzip")
    env = api_env(primed, AUDIT_FORWARDER_PAGE_SIZE="10", AUDIT_FORWARDER_MAX_RESPONSE_SIZE="64KB")
    result = run_cli(*sweep(tmp_path, "-q"), cwd=tmp_path, env=env)
    assert result.code == 0 and result.stderr == "", result.stderr
    assert [m for m, _ in primed.requests].count("gzip") >= 3
    received = [event["id"] for event in read_ndjson(tmp_path / "out.ndjson")]
    assert sorted(received) == sorted(primed.fake.listing())
    assert len(received) == len(set(received)) == OLD_EVENTS + NEW_EVENTS
    assert_key_nowhere(tmp_path, result)


def test_a_corrupt_gzip_body_is_retried_as_malformed_then_fails_with_one_line(
    tmp_path: Path, primed: HostileAPI
) -> None:
    before = state_snapshot(tmp_path)
    primed.misbehave("corrupt_gzip")
    env = api_env(primed, AUDIT_FORWARDER_REQUEST_RETRIES="1")
    result = run_cli(*sweep(tmp_path, "-q"), cwd=tmp_path, env=env)
    assert_one_line_error(result, 1, "giving up after 2 attempts", "gzip encoding is corrupt")
    assert state_snapshot(tmp_path) == before
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, result)


@pytest.mark.parametrize("mode", ["endless", "huge"])
def test_an_endless_or_huge_body_fails_the_request_at_the_configured_cap(
    tmp_path: Path, primed: HostileAPI, mode: str
) -> None:
    before = state_snapshot(tmp_path)
    primed.misbehave(mode)
    env = api_env(
        primed, AUDIT_FORWARDER_MAX_RESPONSE_SIZE="1MB", AUDIT_FORWARDER_REQUEST_RETRIES="1"
    )
    started = time.monotonic()
    result = run_cli(*sweep(tmp_path, "-q"), cwd=tmp_path, env=env, timeout=120)
    assert_one_line_error(result, 1, "giving up after 2 attempts", "1048576 bytes")
    assert time.monotonic() - started < 60
    assert [mode for mode, _ in primed.requests[-2:]] == [mode, mode]
    assert state_snapshot(tmp_path) == before
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, result)


def test_an_invalid_body_size_setting_is_a_configuration_error(
    tmp_path: Path, primed: HostileAPI
) -> None:
    before = state_snapshot(tmp_path)
    requests = len(primed.requests)
    env = api_env(primed, AUDIT_FORWARDER_MAX_RESPONSE_SIZE="lots")
    result = run_cli(*sweep(tmp_path), cwd=tmp_path, env=env)
    assert_one_line_error(result, 2, "invalid setting max_response_size")
    assert len(primed.requests) == requests
    assert state_snapshot(tmp_path) == before
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, result)


# Item 7: a total deadline, and SIGTERM within 5 s ---------------------------------------


@pytest.mark.parametrize("mode", ["slow_body", "slow_headers"])
def test_a_slowloris_answer_is_cut_at_the_total_request_timeout(
    tmp_path: Path, primed: HostileAPI, mode: str
) -> None:
    before = state_snapshot(tmp_path)
    primed.misbehave(mode)  # one byte a second: no single read ever times out
    env = api_env(primed, AUDIT_FORWARDER_REQUEST_TIMEOUT="3s", AUDIT_FORWARDER_REQUEST_RETRIES="1")
    started = time.monotonic()
    result = run_cli(*sweep(tmp_path, "-q"), cwd=tmp_path, env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert_one_line_error(result, 1, "giving up after 2 attempts", "request_timeout (3s)")
    # Two attempts of 3 s and a backoff under a second, plus the start of the interpreter.
    assert 6 <= elapsed < 20, elapsed
    assert state_snapshot(tmp_path) == before
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, result)


def sigterm_while_hanging(
    tmp_path: Path, api: HostileAPI, args: list[str], mode: str
) -> tuple[CliResult, float]:
    """Start the CLI, wait until its request for the second page is in flight (the first
    page's events wait in the batch), send SIGTERM; the result and the seconds from the
    signal to the exit."""
    api.misbehave(mode, after=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "forwarder", *args],
        cwd=tmp_path,
        env=api_env(api, AUDIT_FORWARDER_REQUEST_TIMEOUT="10m", AUDIT_FORWARDER_PAGE_SIZE="10"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: any(m == mode for m, _ in api.requests), 60, f"a {mode} request")
        time.sleep(1.0)  # well inside the request: a byte or two dripped, or none
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return CliResult(proc.returncode, stdout.decode(), stderr.decode()), took


@pytest.mark.parametrize(
    ("command", "mode"),
    [
        (["--once"], "hang"),
        (["--once"], "slow_body"),
        (["--interval", "1s"], "hang"),  # the daemon
    ],
    ids=["run-once-hang", "run-once-slowloris", "daemon-hang"],
)
def test_sigterm_during_a_request_stops_within_5s_and_commits_nothing(
    tmp_path: Path, primed: HostileAPI, command: list[str], mode: str
) -> None:
    before = state_snapshot(tmp_path)
    args = ["run", *command, "--start-at", "2h", *source_flags(tmp_path)]
    result, took = sigterm_while_hanging(tmp_path, primed, args, mode)
    assert took < STOP_WITHIN, f"stopped {took:.1f}s after SIGTERM"
    assert result.code == 0, result.stderr
    assert "received SIGTERM" in result.stderr
    assert "stopped; the batch in flight was not committed" in result.stderr
    assert "error" not in result.stderr.lower()
    assert [m for m, _ in primed.requests][-2:] == ["normal", mode]
    # The watermark did not move and the file has no half line: byte for byte as before.
    assert state_snapshot(tmp_path) == before
    assert (tmp_path / "out.ndjson").read_bytes().endswith(b"\n")
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, result)


# Item 9: an untrusted certificate is final ---------------------------------------------


@pytest.fixture
def tls_api(untrusted_ca: trustme.CA) -> Iterator[HostileAPI]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    untrusted_ca.issue_cert("127.0.0.1").configure_cert(context)
    events = recent_events(OLD_EVENTS + NEW_EVENTS, hours=1, seed=92)
    with HostileAPI(events, admin_key=ADMIN_KEY, tls=context) as api:
        yield api


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--once", "--start-at", "2h"],
        ["backfill", "--since", "2h", "--until", "1m", "--window", "3h"],
        ["check"],
    ],
    ids=["run-once", "backfill", "check"],
)
def test_an_untrusted_api_certificate_fails_at_once_with_exit_1_and_one_line(
    tmp_path: Path, tls_api: HostileAPI, untrusted_ca: trustme.CA, command: list[str]
) -> None:
    started = time.monotonic()
    result = run_cli(*command, "-q", *source_flags(tmp_path), cwd=tmp_path, env=api_env(tls_api))
    assert time.monotonic() - started < 30
    assert tls_api.handshakes == 1, "a certificate error must not be retried"
    if command == ["check"]:
        assert_one_line_error(result, 1, "1 check(s) failed")
        assert "FAIL  source default: OpenAI API https://127.0.0.1" in result.stdout
        assert "TLS certificate rejected" in result.stdout
    else:
        assert_one_line_error(result, 1, "TLS certificate rejected", "ca_file")
    assert read_ndjson(tmp_path / "out.ndjson") == []
    # Trusting the CA (ca_file) delivers every event: nothing was lost or half committed.
    ca_file = tmp_path / "ca.pem"
    untrusted_ca.cert_pem.write_to_path(str(ca_file))
    env = api_env(tls_api, AUDIT_FORWARDER_CA_FILE=str(ca_file))
    fixed = run_cli(*sweep(tmp_path, "-q"), cwd=tmp_path, env=env)
    assert fixed.code == 0, fixed.stderr
    received = [event["id"] for event in read_ndjson(tmp_path / "out.ndjson")]
    assert sorted(received) == sorted(tls_api.fake.listing())
    assert len(received) == OLD_EVENTS + NEW_EVENTS
    assert_key_nowhere(tmp_path, result, fixed)


# Item 10 (transport): a base URL that cannot work is a configuration error ----------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://[::1/v1", "Invalid IPv6 URL"),
        ("https://", "has no host"),
        ("https://api.open ai.com/v1", "invalid host name"),
        ("https://api.openai.com:99999/v1", "Port out of range"),
    ],
    ids=["broken-ipv6", "no-host", "space-in-host", "port-99999"],
)
def test_a_base_url_that_cannot_work_exits_2_at_once_without_a_request(
    tmp_path: Path, primed: HostileAPI, url: str, fragment: str
) -> None:
    before = state_snapshot(tmp_path)
    requests = len(primed.requests)
    for args in (sweep(tmp_path), ["check", *source_flags(tmp_path)]):
        started = time.monotonic()
        result = run_cli(*args, "--base-url", url, cwd=tmp_path, env=api_env(primed))
        assert time.monotonic() - started < 15
        assert_one_line_error(result, 2, "invalid setting base_url", fragment)
    assert len(primed.requests) == requests
    assert state_snapshot(tmp_path) == before
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, result)


def test_a_stream_entry_with_a_bad_base_url_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[streams]]\nname = "acme"\nbase_url = "https://host:99999/v1"\n')
    result = run_cli(*sweep(tmp_path, "--config", str(config)), cwd=tmp_path, env=cli_env())
    assert_one_line_error(result, 2, "invalid setting streams.0.base_url", "Port out of range")
    assert not (tmp_path / "s.db").exists()


# Issue 12, item 6: a key without the audit-log scope -------------------------------------


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("scope_403", "the key lacks the scope api.audit_logs.read"),
        ("plain_403", "likely the scope api.audit_logs.read"),
    ],
)
def test_a_403_for_a_missing_scope_names_the_scope_in_run_and_check(
    tmp_path: Path, primed: HostileAPI, mode: str, says: str
) -> None:
    before = state_snapshot(tmp_path)
    primed.misbehave(mode)
    run = run_cli(*sweep(tmp_path, "-q"), cwd=tmp_path, env=api_env(primed))
    assert_one_line_error(run, 1, "HTTP 403", says)
    check = run_cli("check", *source_flags(tmp_path), cwd=tmp_path, env=api_env(primed))
    assert_one_line_error(check, 1, "1 check(s) failed")
    fail = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and "HTTP 403" in fail[0] and says in fail[0]
    assert [m for m, _ in primed.requests[-2:]] == [mode, mode]  # no retry of a 403
    assert state_snapshot(tmp_path) == before
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, run, check)


# Issue 12, item 7: several JSON documents in one response ---------------------------------


def test_concatenated_json_pages_are_read_as_their_documents_and_logged_once(
    tmp_path: Path, primed: HostileAPI
) -> None:
    primed.misbehave("concatenated")
    env = api_env(primed, AUDIT_FORWARDER_PAGE_SIZE="10")
    result = run_cli(*sweep(tmp_path), cwd=tmp_path, env=env)
    assert result.code == 0, result.stderr
    pages = [m for m, _ in primed.requests].count("concatenated")
    assert pages >= 3, "several pages, each two documents"
    told = [line for line in result.stderr.splitlines() if "back to back" in line]
    assert len(told) == 1 and " INFO " in told[0]
    assert "retry" not in result.stderr and "malformed" not in result.stderr
    received = [event["id"] for event in read_ndjson(tmp_path / "out.ndjson")]
    assert len(received) == len(set(received)) == OLD_EVENTS + NEW_EVENTS
    assert sorted(received) == sorted(primed.fake.listing())
    assert_no_event_lost(tmp_path, primed)
    assert_key_nowhere(tmp_path, result)


def test_a_run_of_documents_that_are_not_all_lists_is_still_malformed() -> None:
    from forwarder.sources.transport import Malformed, parse_list_body

    good = orjson.dumps({"data": [{"id": "a"}], "has_more": True, "last_id": "a"})
    last = orjson.dumps({"data": [{"id": "b"}], "has_more": False, "last_id": "b"})
    body, documents = parse_list_body(good + b"\n " + last)
    assert documents == 2
    assert body["data"] == [{"id": "a"}, {"id": "b"}] and body["has_more"] is False
    for bad in (good + b"[1]", good + b"{", good + b" x", b"", good + b'{"data": 7}'):
        with pytest.raises(Malformed):
            parse_list_body(bad)
