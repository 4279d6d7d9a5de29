"""Bad input and failures end in one line on stderr with the documented exit code, leave the
state untouched, and never show the admin key."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, CliResult, cli_env, recent_events, run_cli, write_jsonl
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import free_port

ERROR_PREFIX = "openai-audit-forwarder: error: "


def state_snapshot(tmp_path: Path) -> tuple[list, str]:
    """Every row of the state database, and a digest of the sink's file."""
    db = tmp_path / "s.db"
    rows: list = []
    if db.exists():
        with sqlite3.connect(db) as conn:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                rows.append((table, sorted(conn.execute(f"SELECT * FROM {table}"))))
    out = tmp_path / "out.ndjson"
    digest = hashlib.sha256(out.read_bytes()).hexdigest() if out.exists() else "-"
    return rows, digest


def assert_one_line_error(result: CliResult, code: int, *fragments: str) -> str:
    assert result.code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX)
    for fragment in fragments:
        assert fragment in lines[0]
    assert ADMIN_KEY not in result.output
    return lines[0]


@pytest.fixture
def primed(tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]) -> dict[str, str]:
    """A state with one successful sweep behind it, so 'unchanged' means something."""
    fake_api.add_events(recent_events(150, hours=1, seed=31))
    result = run_cli(*sweep_args(tmp_path), cwd=tmp_path, env=api_env)
    assert result.code == 0, result.stderr
    # The next sweep must have a new second to ask for, or it makes no request at all.
    time.sleep(1.1)
    return api_env


def sweep_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--once",
        "-q",
        "--start-at",
        "2h",
        "--sink",
        f"file:{tmp_path / 'out.ndjson'}",
        "--state",
        str(tmp_path / "s.db"),
        *extra,
    ]


def test_a_malformed_input_line_is_reported_with_its_number_and_nothing_is_delivered(
    tmp_path: Path,
) -> None:
    events = recent_events(30, hours=1, seed=1)
    path = write_jsonl(tmp_path / "in.jsonl", events)
    lines = path.read_bytes().splitlines()
    lines[11] = b'{"id": "audit_log-x", "type": "login.failed", "effective_at": '  # cut short
    lines[20] = b'{"type": "api_key.created", "effective_at": 1}'  # no id
    path.write_bytes(b"\n".join(lines) + b"\n")
    before = state_snapshot(tmp_path)
    result = run_cli(*sweep_args(tmp_path, "--input", str(path)), cwd=tmp_path)
    assert_one_line_error(result, 1, "line 12", "invalid JSON", "1 more malformed")
    assert state_snapshot(tmp_path) == before
    assert not (tmp_path / "out.ndjson").exists() or not (tmp_path / "out.ndjson").read_bytes()


def test_a_wrong_key_fails_at_once_asking_for_an_admin_key_without_printing_it(
    tmp_path: Path, fake_api: FakeOpenAI, primed: dict[str, str]
) -> None:
    before = state_snapshot(tmp_path)
    wrong = "sk-admin-WRONGKEY-0000111122223333444455556666"
    env = {**primed, "OPENAI_ADMIN_KEY": wrong}
    result = run_cli(*sweep_args(tmp_path), cwd=tmp_path, env=env)
    line = assert_one_line_error(result, 1, "401", "Admin API key")
    assert wrong not in result.output and wrong[8:] not in line
    assert state_snapshot(tmp_path) == before
    assert fake_api.counts[401] == 1  # no retry on a wrong key


def test_a_project_key_gets_a_403_that_names_the_key_kind_needed(
    tmp_path: Path, primed: dict[str, str]
) -> None:
    before = state_snapshot(tmp_path)
    project_key = "sk-proj-PROJECTKEY-abcdefabcdefabcdefabcdef"
    env = {**primed, "OPENAI_ADMIN_KEY": project_key}
    result = run_cli(*sweep_args(tmp_path), cwd=tmp_path, env=env)
    assert_one_line_error(result, 1, "403", "Admin API key")
    assert project_key not in result.output
    assert state_snapshot(tmp_path) == before


def test_an_unreachable_api_fails_after_the_retry_budget_with_state_unchanged(
    tmp_path: Path, primed: dict[str, str]
) -> None:
    before = state_snapshot(tmp_path)
    env = {
        **primed,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "AUDIT_FORWARDER_REQUEST_RETRIES": "2",
    }
    started = time.monotonic()
    result = run_cli(*sweep_args(tmp_path), cwd=tmp_path, env=env)
    assert_one_line_error(result, 1, "giving up after 3 attempts", "cannot reach")
    assert time.monotonic() - started < 60
    assert state_snapshot(tmp_path) == before


def test_the_api_answering_5xx_past_the_budget_leaves_the_state_unchanged(
    tmp_path: Path, fake_api: FakeOpenAI, primed: dict[str, str]
) -> None:
    fake_api.add_events(recent_events(50, hours=0.5, seed=32, first_seq=9000))
    fake_api.set_faults(rate_5xx=1.0)
    before = state_snapshot(tmp_path)
    env = {**primed, "AUDIT_FORWARDER_REQUEST_RETRIES": "1"}
    result = run_cli(*sweep_args(tmp_path), cwd=tmp_path, env=env)
    assert_one_line_error(result, 1, "giving up after 2 attempts", "HTTP 5")
    assert state_snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--lag", "soon"], {}, "invalid setting lag: 'soon' is not a duration"),
        (["--batch-size", "0"], {}, "invalid setting batch_size"),
        ([], {"AUDIT_FORWARDER_OVERLAP": "-5m"}, "invalid setting overlap"),
        ([], {"AUDIT_FORWARDER_LOG_FORMAT": "xml"}, "invalid setting log_format"),
        (["--sink", "kafka://x:1"], {}, "unknown scheme 'kafka'"),
        (["--sink", "file:x.ndjson?colour=red"], {}, "unknown parameter 'colour'"),
        (["--schema", "cef"], {}, "invalid setting schema: unknown schema 'cef'"),
        (["--start-at", "yesterday-ish"], {}, "invalid setting start_at"),
    ],
)
def test_an_invalid_setting_gives_one_line_naming_it_and_exit_2(
    tmp_path: Path, primed: dict[str, str], args: list[str], env: dict[str, str], fragment: str
) -> None:
    before = state_snapshot(tmp_path)
    result = run_cli(*sweep_args(tmp_path, *args), cwd=tmp_path, env={**primed, **env})
    assert_one_line_error(result, 2, fragment)
    assert state_snapshot(tmp_path) == before


def test_an_invalid_config_file_value_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('interval = "every now and then"\n')
    result = run_cli(
        *sweep_args(tmp_path, "--config", str(config), "--input", "-"), cwd=tmp_path, input=b""
    )
    assert_one_line_error(result, 2, "invalid setting interval")
    config.write_text("interval = [unclosed\n")
    result = run_cli(
        *sweep_args(tmp_path, "--config", str(config), "--input", "-"), cwd=tmp_path, input=b""
    )
    assert_one_line_error(result, 2, "invalid config file")


def test_a_missing_key_is_a_configuration_error(tmp_path: Path) -> None:
    result = run_cli(*sweep_args(tmp_path), cwd=tmp_path, env=cli_env())
    assert_one_line_error(result, 2, "OPENAI_ADMIN_KEY")


def test_a_second_process_on_the_same_stream_exits_1_naming_the_holder(
    tmp_path: Path, fake_api: FakeOpenAI, primed: dict[str, str]
) -> None:
    from forwarder.state import StreamLock

    before = state_snapshot(tmp_path)
    lock = StreamLock(tmp_path / "s.db", "stream default")
    lock.acquire("run (held by the test)")
    try:
        result = run_cli(*sweep_args(tmp_path), cwd=tmp_path, env=primed)
    finally:
        lock.release()
    line = assert_one_line_error(result, 1, "stream default is locked", "held by the test")
    assert "pid" in line
    assert state_snapshot(tmp_path) == before


def test_the_key_never_appears_in_output_logs_dead_letters_or_state(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    events = recent_events(120, hours=1, seed=33)
    events[5] = {"id": "audit_log-broken", "type": 7, "effective_at": "never"}
    fake_api.add_events(recent_events(1, hours=1, seed=34, first_seq=777))
    fake_api.fail_next(429, 2, retry_after=0.01)
    fake_api.fail_next(503, 1)
    key_file = tmp_path / "key"
    key_file.write_text(ADMIN_KEY + "\n")
    env = {k: v for k, v in api_env.items() if k != "OPENAI_ADMIN_KEY"}
    runs = [
        run_cli(
            "run",
            "--once",
            "-vv",
            "--log-format",
            "json",
            "--start-at",
            "2h",
            "--admin-key-file",
            str(key_file),
            "--sink",
            f"file:{tmp_path / 'out.ndjson'}",
            "--state",
            str(tmp_path / "s.db"),
            cwd=tmp_path,
            env=env,
        ),
        run_cli(
            "check",
            "-vv",
            "--admin-key-file",
            str(key_file),
            "--sink",
            "stdout:",
            "--state",
            str(tmp_path / "s.db"),
            cwd=tmp_path,
            env=env,
        ),
        run_cli(
            "run",
            "--once",
            "-vv",
            "--start-at",
            "2h",
            "--sink",
            "stdout:",
            "--state",
            str(tmp_path / "s2.db"),
            cwd=tmp_path,
            env={**env, "OPENAI_ADMIN_KEY": ADMIN_KEY[:-4] + "XXXX"},
        ),
    ]
    assert runs[0].code == 0, runs[0].stderr
    assert runs[1].code == 0, runs[1].stdout
    assert runs[2].code == 1
    assert fake_api.counts[429] == 2 and fake_api.counts[503] == 1
    for result in runs:
        assert ADMIN_KEY not in result.output
        assert ADMIN_KEY[:-4] not in result.output
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != key_file:
            assert ADMIN_KEY.encode() not in path.read_bytes(), path
    # A report that still names what happened:
    assert "retry" in runs[0].stderr.lower()


def test_fake_api_is_exercised_with_the_right_bearer_token(fake_api: FakeOpenAI) -> None:
    import httpx

    response = httpx.get(
        f"{fake_api.base_url}/organization/audit_logs",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200
