"""Operations: dead letters and their replay, Prometheus metrics and /healthz, and several
streams (organizations, a tenant stream) in one process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_KEY, ORG_TYPES, cli_env, read_ndjson, recent_events, run_cli
from tests.fakes.events import EVENT_TYPES, HOSTILE_STRINGS, is_tenant_scoped, make_events
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import free_port
from tests.waiting import wait_for


def test_unmappable_and_rejected_events_are_dead_lettered_then_replayed_with_nothing_dropped(
    tmp_path: Path,
) -> None:
    events = make_events(20, start=1767225600, end=1767229200, seed=41, types=ORG_TYPES)
    events[3]["actor"] = "not an object"  # the ECS mapper cannot use it
    big = max(HOSTILE_STRINGS, key=len)
    for index in (5, 6):  # over the UDP size limit once rendered
        events[index]["project"] = {"id": "proj_x", "name": big}
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)
    udp = f"syslog+udp://127.0.0.1:{receiver.getsockname()[1]}?max_size=2048"
    common = ["--state", str(tmp_path / "s.db"), "--dead-letter", str(tmp_path / "dl")]

    first = run_cli("run", "--once", "--input", str(source), "--sink", udp, *common, cwd=tmp_path)
    assert first.code == 0, first.stderr
    received = []
    try:
        while True:
            message = receiver.recv(65536)
            received.append(orjson.loads(message[message.index(b"{") :])["event"]["id"])
    except TimeoutError:
        pass
    finally:
        receiver.close()
    listing = run_cli("deadletter", "list", "--json", *common, cwd=tmp_path)
    summary = orjson.loads(listing.stdout)
    assert summary["total"] == 3
    reasons = {group["reason"]: group["count"] for group in summary["groups"]}
    assert reasons == {"mapping ecs": 1, "rejected": 2}
    letters = [
        orjson.loads(line)
        for f in sorted((tmp_path / "dl").iterdir())
        for line in f.read_bytes().splitlines()
    ]
    assert all(letter["reason"] and letter["time"] for letter in letters)
    assert any("over max_size=2048" in letter["reason"] for letter in letters)

    out = tmp_path / "replayed.ndjson"
    replay = run_cli(
        "deadletter", "replay", "--sink", f"file:{out}", "--schema", "raw", *common, cwd=tmp_path
    )
    assert replay.code == 0, replay.stderr
    assert "3 delivered, 0 dead-lettered again" in replay.stderr
    assert list((tmp_path / "dl").iterdir()) == []
    replayed = [doc["id"] for doc in read_ndjson(out)]
    # Nothing dropped: every input event was received or replayed, exactly once.
    assert sorted(received + replayed) == sorted(e["id"] for e in events)
    assert (
        orjson.loads(run_cli("deadletter", "list", "--json", *common, cwd=tmp_path).stdout)["total"]
        == 0
    )


def test_replay_keeps_what_fails_again_with_the_new_reason(tmp_path: Path) -> None:
    events = make_events(4, start=1767225600, end=1767229200, seed=42, types=ORG_TYPES)
    events[1]["actor"] = ["not", "an", "object"]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    common = ["--state", str(tmp_path / "s.db"), "--dead-letter", str(tmp_path / "dl")]
    out = tmp_path / "out.ndjson"
    assert (
        run_cli(
            "run", "--once", "--input", str(source), "--sink", f"file:{out}", *common, cwd=tmp_path
        ).code
        == 0
    )
    assert len(read_ndjson(out)) == 3
    again = run_cli("deadletter", "replay", "--sink", f"file:{out}", *common, cwd=tmp_path)
    assert again.code == 1
    assert "0 delivered, 1 dead-lettered again" in again.stderr
    summary = orjson.loads(run_cli("deadletter", "list", "--json", *common, cwd=tmp_path).stdout)
    assert summary["total"] == 1
    fixed = run_cli(
        "deadletter", "replay", "--sink", f"file:{out}", "--schema", "raw", *common, cwd=tmp_path
    )
    assert fixed.code == 0, fixed.stderr
    assert sorted(doc.get("id") or doc["event"]["id"] for doc in read_ndjson(out)) == sorted(
        e["id"] for e in events
    )


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_count_what_happened_and_healthz_fails_when_the_api_stays_unreachable(
    tmp_path: Path,
) -> None:
    events = recent_events(450, hours=1, seed=43)
    out = tmp_path / "out.ndjson"
    fake = FakeOpenAI(events, admin_key=ADMIN_KEY)
    port = free_port()  # after the fake took its own port
    fake.fail_next(429, 3, retry_after=0.01)
    fake.fail_next(503, 2)
    env = cli_env(
        OPENAI_ADMIN_KEY=ADMIN_KEY,
        OPENAI_BASE_URL=fake.base_url,
        AUDIT_FORWARDER_REQUEST_RETRIES="5",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forwarder",
            "run",
            "--interval",
            "1s",
            "--start-at",
            "2h",
            "--metrics-addr",
            f"127.0.0.1:{port}",
            "--health-max-age",
            "4s",
            "--sink",
            f"file:{out}",
            "--state",
            str(tmp_path / "s.db"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def delivered() -> tuple[dict[str, float], Counter[int]] | None:
            # The daemon asks for the next second every sweep: compare the metrics with the
            # fake's counts only when no request came in while scraping.
            before = fake.counts
            try:
                values = scrape(port)
            except httpx.HTTPError:
                return None
            after = fake.counts
            key = f'oaf_events_delivered_total{{sink="file:{out}",stream="default"}}'
            return (values, after) if values.get(key) == len(events) and before == after else None

        values, counts = wait_for(delivered)
        assert values['oaf_api_requests_total{status="429",stream="default"}'] == counts[429] == 3
        assert values['oaf_api_requests_total{status="503",stream="default"}'] == counts[503] == 2
        # The tenant companion's requests count under its own stream.
        assert values['oaf_api_requests_total{status="200",stream="default-tenant"}'] >= 1
        assert (
            values['oaf_api_requests_total{status="200",stream="default"}']
            + values['oaf_api_requests_total{status="200",stream="default-tenant"}']
            == counts[200]
        )
        assert values['oaf_api_rate_limited_total{stream="default"}'] == 3
        assert values['oaf_api_retries_total{stream="default"}'] == 5
        assert values['oaf_events_collected_total{stream="default"}'] == len(events)
        assert len(read_ndjson(out)) == len(events)
        assert values['oaf_checkpoint_lag_seconds{stream="default"}'] < 300
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"

        fake.stop()  # the API becomes unreachable

        def unhealthy() -> httpx.Response | None:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return response if response.status_code == 503 else None

        started = time.monotonic()
        wait_for(unhealthy, timeout=60)
        assert time.monotonic() - started >= 2  # not before the threshold

        def failure_reported() -> dict | None:
            stream = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
            return (
                stream["streams"]["default"] if stream["streams"]["default"]["last_error"] else None
            )

        stream = wait_for(failure_reported, timeout=90)
        assert stream["healthy"] is False and "cannot reach" in stream["last_error"]
        assert scrape(port)['oaf_api_requests_total{status="error",stream="default"}'] >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        fake.stop()
    assert process.returncode == 0, stderr.decode()
    assert ADMIN_KEY.encode() not in stderr


@pytest.fixture
def two_orgs() -> tuple[FakeOpenAI, FakeOpenAI]:
    now = int(time.time())
    a_events = make_events(300, start=now - 3600, end=now - 120, seed=44, types=EVENT_TYPES)
    b_events = make_events(
        200, start=now - 3600, end=now - 120, seed=45, types=ORG_TYPES, first_seq=10_000
    )
    with (
        FakeOpenAI(a_events, admin_key="sk-admin-ORG-A-aaaaaaaaaaaaaaaa") as a,
        FakeOpenAI(b_events, admin_key="sk-admin-ORG-B-bbbbbbbbbbbbbbbb") as b,
    ):
        yield a, b


def test_two_organizations_and_a_tenant_stream_keep_separate_checkpoints_and_one_bad_key_stops_only_its_own(  # noqa: E501
    tmp_path: Path, two_orgs: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    a, b = two_orgs
    config = tmp_path / "config.toml"
    config.write_text(f"""
sinks = ["file:{tmp_path}/out/{{stream}}.ndjson"]
state = "{tmp_path}/s.db"
start_at = "2h"
request_retries = 0

[[streams]]
name = "org-a"
admin_key_env = "ORG_A_KEY"
org_id = "org-aaa"
base_url = "{a.base_url}"

[[streams]]
name = "org-a-tenant"
admin_key_env = "ORG_A_KEY"
org_id = "org-aaa"
base_url = "{a.base_url}"
tenant_only = true

[[streams]]
name = "org-b"
admin_key_env = "ORG_B_KEY"
org_id = "org-bbb"
base_url = "{b.base_url}"
""")
    env = cli_env(ORG_A_KEY=a.admin_key, ORG_B_KEY=b.admin_key)
    first = run_cli("run", "--once", "--config", str(config), cwd=tmp_path, env=env)
    assert first.code == 0, first.stderr

    def ids(stream: str) -> list[str]:
        return [doc["event"]["id"] for doc in read_ndjson(tmp_path / "out" / f"{stream}.ndjson")]

    assert sorted(ids("org-a")) == sorted(a.listing())
    assert sorted(ids("org-a-tenant")) == sorted(a.listing(tenant_only=True))
    assert sorted(ids("org-b")) == sorted(b.listing())
    assert {
        doc["organization"]["id"] for doc in read_ndjson(tmp_path / "out" / "org-b.ndjson")
    } == {"org-bbb"}
    shown = orjson.loads(
        run_cli(
            "checkpoint", "show", "--json", "--config", str(config), cwd=tmp_path, env=env
        ).stdout
    )
    # org-b has a tenant companion by default; org-a's is the configured org-a-tenant.
    assert sorted(s["stream"] for s in shown["streams"]) == [
        "org-a",
        "org-a-tenant",
        "org-b",
        "org-b-tenant",
    ]

    # Organization B's key is revoked; new events keep arriving in both organizations.
    now = int(time.time())
    a.add_events(
        make_events(50, start=now - 100, end=now - 70, seed=46, first_seq=50_000, types=EVENT_TYPES)
    )
    b.add_events(
        make_events(20, start=now - 100, end=now - 70, seed=47, first_seq=60_000, types=ORG_TYPES)
    )
    env["ORG_B_KEY"] = "sk-admin-REVOKED-cccccccccccccccc"
    while int(time.time()) <= now:  # a first run within the same second leaves nothing to ask
        time.sleep(0.05)
    second = run_cli("run", "--once", "--config", str(config), cwd=tmp_path, env=env)
    assert second.code == 1
    assert "1 of 3 streams failed (org-b)" in second.stderr.strip().splitlines()[-1]
    assert sorted(ids("org-a")) == sorted(a.listing())
    assert sorted(ids("org-a-tenant")) == sorted(a.listing(tenant_only=True))
    assert len(ids("org-b")) == 200  # nothing new, nothing lost: its checkpoint held
    after = orjson.loads(
        run_cli(
            "checkpoint", "show", "--json", "--config", str(config), cwd=tmp_path, env=env
        ).stdout
    )
    before_b = next(s for s in shown["streams"] if s["stream"] == "org-b")
    after_b = next(s for s in after["streams"] if s["stream"] == "org-b")
    assert after_b["watermark_unix"] == before_b["watermark_unix"]
    assert all(
        is_tenant_scoped(t)
        for t in {
            doc["event"]["action"] for doc in read_ndjson(tmp_path / "out" / "org-a-tenant.ndjson")
        }
    )


def test_with_tenant_collects_tenant_scoped_events_in_a_stream_of_their_own(
    tmp_path: Path,
) -> None:
    now = int(time.time())
    events = make_events(900, start=now - 7200, end=now - 120, seed=48, types=EVENT_TYPES)
    with FakeOpenAI(events, admin_key=ADMIN_KEY) as api:
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url)
        out = tmp_path / "out.ndjson"
        common = [
            "--with-tenant",
            "--sink",
            f"file:{out}",
            "--schema",
            "raw",
            "--state",
            str(tmp_path / "s.db"),
        ]
        backfill = run_cli(
            "backfill",
            "--since",
            str(now - 7300),
            "--until",
            str(now - 3600),
            *common,
            cwd=tmp_path,
            env=env,
        )
        assert backfill.code == 0, backfill.stderr
        assert "backfill complete: default " in backfill.stderr
        assert "backfill complete: default-tenant " in backfill.stderr
        run = run_cli(
            "run", "--once", "--start-at", str(now - 3600), *common, cwd=tmp_path, env=env
        )
        assert run.code == 0, run.stderr
        delivered = Counter(doc["id"] for doc in read_ndjson(out))
        # Every event, organization- and tenant-scoped alike, exactly once.
        assert delivered == Counter(e["id"] for e in events)
        shown = orjson.loads(
            run_cli(
                "checkpoint", "show", "--json", "--state", str(tmp_path / "s.db"), cwd=tmp_path
            ).stdout
        )
        assert sorted(s["stream"] for s in shown["streams"]) == ["default", "default-tenant"]

        # A type filter is split between the two listings (the API refuses mixing them).
        filtered = tmp_path / "filtered.ndjson"
        only = run_cli(
            "run",
            "--once",
            "--start-at",
            "3h",
            "--stream",
            "f",
            "--with-tenant",
            "--event-type",
            "login.failed",
            "--event-type",
            "tenant.user.added",
            "--sink",
            f"file:{filtered}",
            "--schema",
            "raw",
            "--state",
            str(tmp_path / "s2.db"),
            cwd=tmp_path,
            env=env,
        )
        assert only.code == 0, only.stderr
        types = Counter(doc["type"] for doc in read_ndjson(filtered))
        assert set(types) == {"login.failed", "tenant.user.added"}
        assert types == Counter(
            e["type"] for e in events if e["type"] in {"login.failed", "tenant.user.added"}
        )
