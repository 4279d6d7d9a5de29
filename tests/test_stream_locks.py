"""One lock per state file and stream, however either is spelled (issue 15, items 6 and 7): a
symbolic link to the state takes the same lock as the state itself, and two streams whose names
differ only in characters a file name cannot hold (`org:1`, `org_1`) take two."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.conftest import ADMIN_KEY, ORG_TYPES, cli_env, read_ndjson, run_cli
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI
from tests.waiting import wait_for

ERROR = "openai-audit-forwarder: error: "


def events(n: int, seed: int) -> list[dict]:
    now = int(time.time())
    return make_events(n, start=now - 3000, end=now - 120, seed=seed, types=ORG_TYPES)


def test_a_symlink_to_the_state_takes_the_same_lock_and_the_stream_is_delivered_once(
    tmp_path: Path,
) -> None:
    listed = events(100, seed=171)
    (tmp_path / "link.db").symlink_to(tmp_path / "state.db")
    with FakeOpenAI(listed, admin_key=ADMIN_KEY) as fake:
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        common = ["--start-at", "1h", "--without-tenant", "--schema", "raw"]
        first = tmp_path / "first.ndjson"
        state = ["--state", str(tmp_path / "state.db"), "--sink", f"file:{first}"]
        daemon = subprocess.Popen(
            [sys.executable, "-m", "forwarder", "run", "--interval", "1s", *common, *state],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_for(lambda: len(read_ndjson(first)) == 100, 30)
            second = tmp_path / "second.ndjson"
            refused = run_cli(
                "run", "--once", *common, "--state", str(tmp_path / "link.db"),
                "--sink", f"file:{second}", cwd=tmp_path, env=env,
            )  # fmt: skip
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    assert refused.code == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1
    assert errors[0].startswith(
        f"{ERROR}stream default is locked by another process (pid {daemon.pid} on "
    )
    # 100 listed, 100 delivered once: the second process delivered nothing.
    assert Counter(doc["id"] for doc in read_ndjson(first)) == Counter(e["id"] for e in listed)
    assert read_ndjson(second) == []


def test_streams_named_org_colon_1_and_org_underscore_1_each_take_their_own_lock(
    tmp_path: Path,
) -> None:
    listed = events(100, seed=172)
    config = tmp_path / "config.toml"
    config.write_text(
        'sinks = ["file:' + str(tmp_path) + '/{stream}.ndjson"]\n'
        'schema = "raw"\nwith_tenant = false\nstart_at = "1h"\n'
        '[[streams]]\nname = "org:1"\nadmin_key_env = "KEY_A"\n'
        '[[streams]]\nname = "org_1"\nadmin_key_env = "KEY_A"\n'
    )
    with FakeOpenAI(listed, admin_key=ADMIN_KEY) as fake:
        env = cli_env(KEY_A=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        result = run_cli(
            "run", "--once", "--config", str(config), "--state", str(tmp_path / "s.db"),
            cwd=tmp_path, env=env,
        )  # fmt: skip
    assert result.code == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith(ERROR)]
    for stream in ("org:1", "org_1"):  # 100 listed per stream, 100 delivered by each
        delivered = Counter(doc["id"] for doc in read_ndjson(tmp_path / f"{stream}.ndjson"))
        assert delivered == Counter(e["id"] for e in listed), stream
