"""The collector with network sinks against their real peers: fan-out commits only when every
sink acknowledged, a receiver restarted mid-run loses nothing and the checkpoint never passes
an unacknowledged event, and wrong CA / wrong shared key / unreachable host are one line from
both `check` and `run` with the state unchanged."""

from __future__ import annotations

import gzip
import re
import sqlite3
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import orjson
import pytest
import trustme

from tests.conftest import ADMIN_KEY, cli_env, recent_events, run_cli, write_jsonl
from tests.fakes.forward_server import ForwardServer
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.rsyslog import Rsyslog
from tests.peers import free_port, missing_peer
from tests.test_errors_and_secrets import state_snapshot
from tests.waiting import wait_for

SD_ID = re.compile(r'id="([^"]+)"')


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        missing_peer("moto[server] not installed (pip install 'moto[server]')")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDTESTINGONLY",
    "AWS_SECRET_ACCESS_KEY": "not-a-real-secret-e2e",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def s3_ids(endpoint: str, bucket: str) -> Counter[str]:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    ids: Counter[str] = Counter()
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        ids.update(orjson.loads(line)["id"] for line in gzip.decompress(body).splitlines())
    return ids


def relp_ids(peer: Rsyslog, tag: str) -> Counter[str]:
    return Counter(
        SD_ID.search(m["structured_data"]).group(1)  # type: ignore[union-attr]
        for m in peer.messages()
        if m.get("app_name") == tag
    )


def fluentd_ids(server: ForwardServer) -> Counter[str]:
    return Counter(record["event"]["id"] for _, _, record in server.entries)


def live_state(tmp_path: Path) -> tuple[int | None, set[str]]:
    with sqlite3.connect(f"file:{tmp_path / 's.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT watermark FROM streams WHERE stream='default'").fetchone()
        ids = {r[0] for r in db.execute("SELECT id FROM delivered WHERE scope='live:default'")}
    return (row[0] if row else None), ids


def test_fan_out_to_three_sinks_commits_only_when_all_acknowledged_and_one_down_holds_all(
    tmp_path: Path, rsyslog: Rsyslog, s3_endpoint: str
) -> None:
    bucket = "fanout-audit"
    boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    ).create_bucket(Bucket=bucket)
    first = recent_events(600, hours=1, seed=51)
    with FakeOpenAI(first, admin_key=ADMIN_KEY) as api, ForwardServer() as fluentd:
        sinks = [
            "--sink",
            fluentd.url(tag="openai.audit", schema="ecs"),
            "--sink",
            rsyslog.url("relp", app_name="fanout", schema="ocsf"),
            "--sink",
            f"s3://{bucket}/audit?endpoint_url={s3_endpoint}&region=us-east-1&schema=raw",
        ]
        env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url, **AWS_ENV)
        args = [
            "run",
            "--once",
            "-q",
            "--start-at",
            "2h",
            "--state",
            str(tmp_path / "s.db"),
            "--batch-size",
            "200",
            *sinks,
        ]
        ok = run_cli(*args, cwd=tmp_path, env=env)
        assert ok.code == 0, ok.stderr
        expected = set(api.listing())
        wait_for(lambda: set(relp_ids(rsyslog, "fanout")) >= expected, 60, "the events in rsyslog")
        assert set(fluentd_ids(fluentd)) == expected
        assert set(relp_ids(rsyslog, "fanout")) == expected
        assert s3_ids(s3_endpoint, bucket) == Counter(expected)
        committed = live_state(tmp_path)
        # The ids remembered are those of the overlap region, all acknowledged.
        assert committed[1] and committed[1] <= expected

        # New events arrive; Fluentd is down: the other two may receive the batch, but the
        # checkpoint holds for all three.
        now = int(time.time())
        api.add_events(recent_events(300, hours=0.02, seed=52, first_seq=40_000))
        fluentd.stop()
        while int(time.time()) <= now:  # a run within the first one's second sweeps nothing
            time.sleep(0.05)
        down = run_cli(*args, "--sink-retry-timeout", "2s", cwd=tmp_path, env=env)
        assert down.code == 1
        assert len(down.stderr.strip().splitlines()) == 1
        assert "sink fluentd://" in down.stderr
        assert live_state(tmp_path) == committed

        fluentd.start()  # same port
        again = run_cli(*args, cwd=tmp_path, env=env)
        assert again.code == 0, again.stderr
        expected = set(api.listing())
        wait_for(lambda: set(relp_ids(rsyslog, "fanout")) >= expected, 60, "the events in rsyslog")
        assert fluentd_ids(fluentd) == Counter(expected)  # exactly once
        assert set(relp_ids(rsyslog, "fanout")) == expected  # at least once
        assert s3_ids(s3_endpoint, bucket) == Counter(expected)  # same keys: exactly once
        watermark, remembered = live_state(tmp_path)
        assert remembered <= expected and watermark >= now - 120


@pytest.mark.parametrize("receiver", ["fluentd", "relp"])
def test_a_receiver_restarted_mid_run_loses_nothing_and_the_checkpoint_never_passes_an_unacked_event(  # noqa: E501
    tmp_path: Path, rsyslog: Rsyslog, receiver: str
) -> None:
    events = recent_events(4000, hours=2, seed=53)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    fluentd = ForwardServer().start()
    tag = f"restart{int(time.time())}"
    url = (
        # An ack later than ack_timeout is taken as lost and its chunk sent again: under a
        # loaded CI machine 2s was too short and counted such resends as restart duplicates.
        fluentd.url(tag="t", ack_timeout="15")
        if receiver == "fluentd"
        else rsyslog.url("relp", app_name=tag)
    )
    received = (
        (lambda: fluentd_ids(fluentd))
        if receiver == "fluentd"
        else (lambda: relp_ids(rsyslog, tag))
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forwarder",
            "run",
            "--once",
            "-q",
            "--input",
            str(source),
            "--stream",
            "restart",
            "--batch-size",
            "100",
            "--sink",
            url,
            "--state",
            str(tmp_path / "s.db"),
        ],
        cwd=tmp_path,
        env=cli_env(),
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: sum(received().values()) >= 800, 60, "800 events received")
        if receiver == "fluentd":
            fluentd.stop()
        else:
            rsyslog.stop()  # graceful: what it acknowledged is in its file when it returns
        at_stop = set(received())
        assert len(at_stop) < len(events)  # the run was really interrupted
        time.sleep(2.0)  # the receiver stays down while the run retries
        # At the end of the outage, every id the checkpoint holds was received.
        with sqlite3.connect(f"file:{tmp_path / 's.db'}?mode=ro", uri=True) as db:
            committed = {
                r[0] for r in db.execute("SELECT id FROM delivered WHERE scope='live:restart'")
            }
        assert committed and committed <= at_stop
        if receiver == "fluentd":
            fluentd.start()
        else:
            rsyslog.start()
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.poll() is None:
            process.kill()
        fluentd.stop()
    if receiver == "relp":
        wait_for(lambda: len(received()) >= len(events), 60, "every event in rsyslog")
    got = received()
    assert set(got) == {e["id"] for e in events}  # nothing lost
    if receiver == "fluentd":
        # Only a chunk whose ack was lost may come twice; everything else exactly once.
        assert sum(got.values()) - len(got) <= 100


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def primed_state(tmp_path: Path) -> tuple[Path, list[str]]:
    """A state with a committed checkpoint, and the input the failing runs would deliver."""
    events = recent_events(50, hours=1, seed=54)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    common = ["--input", str(source), "--stream", "s", "--state", str(tmp_path / "s.db")]
    first = run_cli(
        "run", "--once", "--sink", f"file:{tmp_path / 'out.ndjson'}", *common, cwd=tmp_path
    )
    assert first.code == 0, first.stderr
    more = write_jsonl(
        tmp_path / "in2.jsonl", recent_events(20, hours=0.5, seed=55, first_seq=30_000)
    )
    return more, ["--input", str(more), "--stream", "s", "--state", str(tmp_path / "s.db")]


# Refusals that retrying cannot change fail at once; an unreachable host is retried first.
PERMANENT = {"wrong_ca", "wrong_shared_key", "syslog_tls_wrong_ca", "missing_bucket"}


@pytest.mark.parametrize(
    "problem",
    [
        "wrong_ca",
        "wrong_shared_key",
        "syslog_tls_wrong_ca",
        "missing_bucket",
        "unreachable_fluentd",
        "unreachable_relp",
        "unreachable_s3",
    ],
)
def test_wrong_ca_wrong_shared_key_and_unreachable_host_are_one_line_from_check_and_run(
    tmp_path: Path,
    primed_state: tuple[Path, list[str]],
    rsyslog: Rsyslog,
    s3_endpoint: str,
    problem: str,
) -> None:
    _, common = primed_state
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    env = cli_env(FLUENT_KEY="the-wrong-shared-key-123", **AWS_ENV)
    server: ForwardServer | None = None
    if problem == "wrong_ca":
        server = ForwardServer(ssl_context=server_context(trustme.CA())).start()
        url = server.url("fluentd+tls", ca_file=str(other_ca))
        expect = "certificate verification failed"
    elif problem == "wrong_shared_key":
        server = ForwardServer(shared_key="the-right-shared-key-456").start()
        url = server.url(shared_key_env="FLUENT_KEY")
        expect = "shared key"
    elif problem == "syslog_tls_wrong_ca":
        url = rsyslog.url("tls", ca_file=str(other_ca))
        expect = "certificate rejected"
    elif problem == "missing_bucket":
        url = f"s3://no-such-bucket-e2e/p?endpoint_url={s3_endpoint}&region=us-east-1"
        expect = "the bucket does not exist"
    elif problem == "unreachable_fluentd":
        url = f"fluentd://127.0.0.1:{free_port()}"
        expect = "refused"
    elif problem == "unreachable_relp":
        url = f"syslog+relp://127.0.0.1:{free_port()}"
        expect = "127.0.0.1"
    else:
        url = f"s3://bucket/p?endpoint_url=http://127.0.0.1:{free_port()}&region=us-east-1"
        expect = "bucket"
    permanent = problem in PERMANENT
    try:
        before = state_snapshot(tmp_path)
        check = run_cli("check", "-q", "--sink", url, *common, cwd=tmp_path, env=env)
        assert check.code == 1
        failures = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
        assert len(failures) == 1 and expect in failures[0].lower(), check.stdout
        started = time.monotonic()
        run = run_cli(
            "run",
            "--once",
            "-q",
            "--sink-retry-timeout",
            "10m" if permanent else "1s",
            "--sink",
            url,
            *common,
            cwd=tmp_path,
            env=env,
        )
        elapsed = time.monotonic() - started
        assert run.code == 1
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("openai-audit-forwarder: error: sink ")
        assert expect in lines[0].lower()
        # Retried only when retrying can help; a refusal for good is not retried for 10m.
        assert ("gave up after" in lines[0]) is not permanent
        assert elapsed < 60
        assert "the-wrong-shared-key" not in check.output + run.output
        assert state_snapshot(tmp_path) == before
    finally:
        if server is not None:
            server.stop()


def test_batch_size_caps_each_commit_even_when_a_file_page_holds_more(tmp_path: Path) -> None:
    # A file is read in pages of 500 events; --batch-size 100 must still send and commit 100
    # at a time, so that a crash or a receiver restart repeats at most 100.
    source = write_jsonl(tmp_path / "in.jsonl", recent_events(1200, hours=1, seed=77))
    with ForwardServer() as server:
        result = run_cli(
            "run",
            "--once",
            "-q",
            "--input",
            str(source),
            "--batch-size",
            "100",
            "--sink",
            server.url(tag="t"),
            "--state",
            str(tmp_path / "s.db"),
            cwd=tmp_path,
        )
        counts = [batch.count for batch in server.batches]
    assert result.code == 0, result.stderr
    assert counts == [100] * 12
