"""Settings: precedence CLI > environment > config file > defaults, secrets, streams."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.config import load_settings
from forwarder.errors import ConfigError
from forwarder.timeparse import parse_duration, parse_when


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AUDIT_FORWARDER_")):
            monkeypatch.delenv(name)


def test_cli_beats_env_beats_file_beats_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('lag = "5m"\noverlap = "20m"\ninterval = "2m"\nschema = "raw"\n')
    monkeypatch.setenv("AUDIT_FORWARDER_OVERLAP", "30m")
    monkeypatch.setenv("AUDIT_FORWARDER_INTERVAL", "3m")
    settings = load_settings(config, interval="7s")
    assert settings.interval == 7  # flag
    assert settings.overlap == 1800  # env over file
    assert settings.lag == 300  # file over default
    assert settings.output_schema == "raw"
    assert settings.window == 3600  # default


def test_openai_variables_and_nested_lists_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-from-env-123456")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example/v1/")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-123")
    monkeypatch.setenv("AUDIT_FORWARDER_SINKS", '["file:a.ndjson", "stdout:"]')
    monkeypatch.setenv("AUDIT_FORWARDER_EVENT_TYPES", "login.failed, api_key.created")
    settings = load_settings()
    assert settings.resolve_admin_key() == "sk-admin-from-env-123456"
    assert settings.base_url == "https://proxy.example/v1"
    assert settings.org_id == "org-123"
    assert settings.sinks == ["file:a.ndjson", "stdout:"]
    assert settings.event_types == ["login.failed", "api_key.created"]


def test_the_key_file_wins_and_the_key_is_never_in_the_settings_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-env-000000000")
    key_file = tmp_path / "key"
    key_file.write_text("sk-admin-file-111111111\n")
    settings = load_settings(admin_key_file=key_file)
    assert settings.resolve_admin_key() == "sk-admin-file-111111111"
    assert "sk-admin-env" not in repr(settings) and "sk-admin-env" not in str(settings)


def test_an_unreadable_key_file_names_the_file_not_a_key(tmp_path: Path) -> None:
    settings = load_settings(admin_key_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="invalid setting admin_key_file: cannot read"):
        settings.resolve_admin_key()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lag": "fast"}, "invalid setting lag: 'fast' is not a duration"),
        ({"page_size": 101}, "invalid setting page_size"),
        ({"base_url": "ftp://x"}, "invalid setting base_url: must be an http(s) URL"),
        ({"metrics_addr": "nowhere"}, "invalid setting metrics_addr: must be HOST:PORT"),
        ({"stream": "has space"}, "invalid setting stream"),
        ({"interval": "0s"}, "invalid setting interval: must be greater than zero"),
    ],
)
def test_an_invalid_value_is_one_line_naming_the_setting(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**values)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_streams_inherit_top_level_settings_and_take_their_own_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'org_id = "org-top"\nevent_types = ["login.failed"]\n'
        '[[streams]]\nname = "a"\nadmin_key_env = "A_KEY"\n'
        '[[streams]]\nname = "b"\nadmin_key_env = "B_KEY"\norg_id = "org-b"\n'
        "tenant_only = true\nevent_types = []\n"
    )
    monkeypatch.setenv("A_KEY", "sk-admin-aaaa-1111")
    monkeypatch.setenv("B_KEY", "sk-admin-bbbb-2222")
    settings = load_settings(config)
    a, b = (settings.for_stream(s) for s in settings.streams)
    assert (a.stream, a.org_id, a.event_types, a.tenant_only) == (
        "a",
        "org-top",
        ["login.failed"],
        False,
    )
    assert (b.stream, b.org_id, b.event_types, b.tenant_only) == ("b", "org-b", [], True)
    assert a.resolve_admin_key() == "sk-admin-aaaa-1111"
    assert b.resolve_admin_key() == "sk-admin-bbbb-2222"
    monkeypatch.delenv("B_KEY")
    with pytest.raises(ConfigError, match=r"streams\.b\.admin_key_env: environment variable B_KEY"):
        settings.for_stream(settings.streams[1])


def test_duplicate_stream_names_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[streams]]\nname = "a"\n[[streams]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="stream names must be unique"):
        load_settings(config)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h", 3600), ("7d", 604800), ("250ms", 0.25), ("45", 45)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_when_accepts_iso_dates_unix_seconds_and_spans_ago() -> None:
    assert parse_when("2026-01-01") == 1767225600
    assert parse_when("2026-01-01T01:00:00Z") == 1767229200
    assert parse_when("2026-01-01T02:00:00+01:00") == 1767229200
    assert parse_when("1767225600") == 1767225600
    assert parse_when("24h", now=1767225600) == 1767225600 - 86400
    with pytest.raises(ValueError, match="is not a time"):
        parse_when("last tuesday")


def test_each_load_reads_its_own_config_file_also_from_threads_at_once(tmp_path: Path) -> None:
    """No load sees another's file: the file is a property of the load, not of the module."""
    import sys
    import threading

    files = []
    for n in range(4):
        files.append(tmp_path / f"{n}.toml")
        files[-1].write_text(f'stream = "from-file-{n}"\n')
    wrong: list[str] = []

    def load(n: int) -> None:
        for _ in range(40):
            got = load_settings(files[n] if n < 4 else None).stream
            if got != (f"from-file-{n}" if n < 4 else "default"):
                wrong.append(f"load {n} got {got}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the loads as much as the interpreter can
    try:
        threads = [threading.Thread(target=load, args=(n,)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
