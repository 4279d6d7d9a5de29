"""Tenant-scoped events are collected by default (issue 10, part 2): a companion stream
`NAME-tenant` lists them with tenant_only=true; when the API refuses that listing, the other
events still arrive, one warning says why, and the listing is asked again at most hourly."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_KEY, ORG_TYPES, cli_env, raw_file_sink, read_ndjson, run_cli
from tests.fakes.events import EVENT_TYPES, is_tenant_scoped, make_events
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import free_port
from tests.waiting import wait_for


def tenant_requests(fake: FakeOpenAI) -> int:
    return sum(1 for _, params in fake.requests if params.get("tenant_only") == ["true"])


def mixed_events(seed: int) -> list[dict]:
    now = int(time.time())
    return make_events(600, start=now - 3000, end=now - 120, seed=seed, types=EVENT_TYPES)


def test_tenant_scoped_events_are_delivered_without_any_flag(tmp_path: Path) -> None:
    events = mixed_events(61)
    assert any(is_tenant_scoped(e["type"]) for e in events)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        result = run_cli("run", "--once", "--start-at", "1h", *to_file, cwd=tmp_path, env=env)
    assert result.code == 0, result.stderr
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)


def test_without_tenant_never_asks_for_the_tenant_listing(tmp_path: Path) -> None:
    events = mixed_events(62)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as fake:
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        args = ["run", "--once", "--start-at", "1h", "--without-tenant", *to_file]
        result = run_cli(*args, cwd=tmp_path, env=env)
        assert result.code == 0, result.stderr
        assert tenant_requests(fake) == 0
        assert {doc["id"] for doc in read_ndjson(out)} == set(fake.listing())


@pytest.mark.parametrize("status", [400, 403, 404])
def test_a_refused_tenant_listing_warns_once_and_the_other_events_still_arrive(
    tmp_path: Path, status: int
) -> None:
    events = mixed_events(63)
    with FakeOpenAI(events, admin_key=ADMIN_KEY, refuse_tenant=status) as fake:
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        args = ["run", "--once", "--start-at", "1h", *to_file]
        first = run_cli(*args, cwd=tmp_path, env=env)
        assert first.code == 0, first.stderr
        warnings = [line for line in first.stderr.splitlines() if " WARNING " in line]
        assert len(warnings) == 1, first.stderr
        assert "tenant-scoped events are not collected" in warnings[0]
        assert f"HTTP {status}" in warnings[0]
        assert "tenant_only is not available for this organization" in warnings[0]
        assert {doc["id"] for doc in read_ndjson(out)} == set(fake.listing())
        assert tenant_requests(fake) == 1

        # A cron run a minute later: no warning again, the refused listing is not asked.
        fake.add_events(make_events(30, start=int(time.time()) - 100, end=int(time.time()) - 70,
                                    seed=64, first_seq=9000, types=ORG_TYPES))  # fmt: skip
        second = run_cli(*args, cwd=tmp_path, env=env)
        assert second.code == 0, second.stderr
        assert " WARNING " not in second.stderr
        assert tenant_requests(fake) == 1
        assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(fake.listing())

        shown = run_cli("checkpoint", "show", "--state", str(tmp_path / "s.db"), cwd=tmp_path)
        assert "stream default-tenant: tenant listing refused" in shown.stdout
        assert f"HTTP {status}" in shown.stdout
        check = run_cli("check", "--sink", f"file:{tmp_path / 'c.ndjson'}", cwd=tmp_path, env=env)
        assert check.code == 0, check.output
        warned = [line for line in check.stdout.splitlines() if line.startswith("warn")]
        assert len(warned) == 1 and warned[0].startswith(
            "warn  source default-tenant: tenant-scoped events are not collected"
        )


def test_a_refused_tenant_listing_is_asked_again_after_an_hour_and_then_collected(
    tmp_path: Path,
) -> None:
    events = mixed_events(65)
    with FakeOpenAI(events, admin_key=ADMIN_KEY, refuse_tenant=403) as fake:
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        args = ["run", "--once", "--start-at", "1h", *to_file]
        assert run_cli(*args, cwd=tmp_path, env=env).code == 0
        fake.refuse_tenant = None  # the organization gets tenant-level features
        assert run_cli(*args, cwd=tmp_path, env=env).code == 0
        assert tenant_requests(fake) == 1  # not yet: refused less than an hour ago
        with sqlite3.connect(tmp_path / "s.db") as db:
            db.execute("UPDATE tenant_refusals SET refused_at = refused_at - 3601")
        again = run_cli(*args, cwd=tmp_path, env=env)
        assert again.code == 0, again.stderr
        assert "tenant listing accepted again" in again.stderr
        assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)
        shown = orjson.loads(
            run_cli(
                "checkpoint", "show", "--json", "--state", str(tmp_path / "s.db"), cwd=tmp_path
            ).stdout
        )
        assert shown["tenant_refused"] == []


def metrics(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def default_sweeps(port: int) -> int:
    """Sweeps of the stream `default` so far (the count of its sweep-duration histogram)."""
    name = 'oaf_sweep_duration_seconds_count{stream="default"} '
    line = next((li for li in metrics(port).splitlines() if li.startswith(name)), name + "0")
    return int(float(line.removeprefix(name)))


def test_the_refused_tenant_listing_is_a_metric_while_the_daemon_keeps_delivering(
    tmp_path: Path,
) -> None:
    events = mixed_events(66)
    with FakeOpenAI(events, admin_key=ADMIN_KEY, refuse_tenant=403) as fake:
        port = free_port()
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forwarder",
                "run",
                "--interval",
                "1s",
                "--start-at",
                "1h",
                "--metrics-addr",
                f"127.0.0.1:{port}",
                *to_file,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            refused = 'oaf_tenant_listing_refused{stream="default-tenant"} 1.0'
            wait_for(
                lambda: refused in metrics(port) and len(read_ndjson(out)) == len(fake.listing()),
                60,
                "the refusal metric and every organization event delivered",
            )
            # Each loop sweeps the default stream, then its tenant companion: three more
            # sweeps of the first mean two more of the second, which must not ask again.
            swept = default_sweeps(port)
            wait_for(lambda: default_sweeps(port) >= swept + 3, 60, "three more sweeps")
            assert tenant_requests(fake) == 1
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0
        assert stderr.decode().count(" WARNING ") == 1
        assert {doc["id"] for doc in read_ndjson(out)} == set(fake.listing())


def test_a_backfill_whose_tenant_listing_is_refused_warns_and_delivers_the_rest(
    tmp_path: Path,
) -> None:
    events = mixed_events(67)
    now = int(time.time())
    with FakeOpenAI(events, admin_key=ADMIN_KEY, refuse_tenant=404) as fake:
        out, to_file = raw_file_sink(tmp_path)
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=fake.base_url)
        args = ["backfill", "--since", str(now - 3600), "--until", str(now - 60), *to_file]
        result = run_cli(*args, cwd=tmp_path, env=env)
        assert result.code == 0, result.stderr
        warned = [line for line in result.stderr.splitlines() if " WARNING " in line]
        assert len(warned) == 1, result.stderr
        assert "[stream=default-tenant] tenant-scoped events not backfilled" in warned[0]
        assert "HTTP 404" in warned[0]
        assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(fake.listing())
