"""The Security Lake spool's metrics, against a real S3 server (SeaweedFS): what the registry
says before a flush (bytes held, an oldest segment that ages), after it (nothing held, the
objects the bucket received counted with their bytes) and while uploads fail on a wrong secret
(the bytes stay, the failures are counted, the age keeps growing); and what a daemon whose
secret is wrong exports on /metrics: every spool family, labelled by sink and not by stream,
the alert's scenario."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forwarder.metrics import REGISTRY
from forwarder.sinks import SinkError, open_sink
from tests.conftest import ADMIN_KEY, cli_env, recent_events
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import free_port
from tests.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, s3_client, use_credentials
from tests.test_metrics_and_health import SCRAPED_ELSEWHERE, scrape, value
from tests.test_security_lake import arrow, lake_url, objects, records
from tests.waiting import wait_for

pytestmark = pytest.mark.peer

WRONG_SECRET = "not-the-secret-0000"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    s3 = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield s3
    s3.stop()


@pytest.fixture
def bucket(server: SeaweedFS) -> str:
    """A bucket of its own per test: the sink's name, and so its series, are new."""
    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3_client(server).create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    arrow()
    use_credentials(monkeypatch, tmp_path)


def spool_metrics(sink: str) -> dict[str, float | None]:
    """The sink's spool series, read from the registry the daemon serves."""
    get = REGISTRY.get_sample_value
    got: dict[str, float | None] = {}
    for state in ("open", "sealed"):
        got[f"bytes_{state}"] = get("oaf_spool_bytes", {"sink": sink, "state": state})
        got[f"segments_{state}"] = get("oaf_spool_segments", {"sink": sink, "state": state})
    for name, family in {
        "age": "oaf_spool_oldest_segment_age_seconds",
        "flush_interval": "oaf_spool_flush_interval_seconds",
        "objects": "oaf_spool_uploaded_objects_total",
        "uploaded_bytes": "oaf_spool_uploaded_bytes_total",
        "failures": "oaf_spool_upload_failures_total",
    }.items():
        got[name] = get(family, {"sink": sink})
    return got


def test_the_spool_metrics_follow_writes_uploads_and_uploads_that_fail(
    server: SeaweedFS, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = records()
    sink = open_sink(lake_url(server, bucket, tmp_path / "spool", flush_interval="2s"))
    sink.restore(None)  # at start: the spool (empty) is exported before the first write
    assert spool_metrics(sink.name) == {
        "bytes_open": 0, "segments_open": 0, "bytes_sealed": 0, "segments_sealed": 0,
        "age": 0, "flush_interval": 2, "objects": 0, "uploaded_bytes": 0, "failures": 0,
    }  # fmt: skip

    # Spooled, not yet due: the bytes are held and the oldest segment ages.
    assert sink.write(batch[:300]) == []
    written = time.time()
    held = spool_metrics(sink.name)
    status = sink.status()
    assert held["bytes_open"] == status["bytes"] > 0
    assert held["segments_open"] == status["segments"] >= 2  # a segment per OCSF class
    assert held["bytes_sealed"] == held["segments_sealed"] == 0
    assert held["objects"] == 0
    wait_for(lambda: spool_metrics(sink.name)["age"] >= 2, 30, "the oldest segment due")
    wait_for(lambda: time.time() - written >= 2, 30, "every segment due")

    # Flushed: nothing held, and what the bucket received is what was counted.
    sink.flush()
    stored = objects(server, bucket)
    after = spool_metrics(sink.name)
    assert stored and after["objects"] == len(stored)
    assert after["uploaded_bytes"] == sum(len(body) for body in stored.values())
    assert after["bytes_open"] == after["bytes_sealed"] == 0
    assert after["segments_open"] == after["segments_sealed"] == after["age"] == 0
    assert after["failures"] == 0

    # A wrong secret: the upload is refused, the segments stay sealed and keep ageing.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
    sink.close()  # the next connection reads the credentials again
    assert sink.write(batch[300:]) == []
    written = time.time()
    wait_for(lambda: spool_metrics(sink.name)["age"] >= 2, 30, "the oldest segment due")
    wait_for(lambda: time.time() - written >= 2, 30, "every segment due")
    with pytest.raises(SinkError, match=r"SignatureDoesNotMatch|InvalidAccessKeyId"):
        sink.flush()
    failing = spool_metrics(sink.name)
    assert failing["failures"] == 1
    assert failing["bytes_sealed"] == sink.status()["bytes"] > 0
    assert failing["segments_sealed"] >= 1 and failing["bytes_open"] == 0
    assert failing["objects"] == after["objects"]
    assert failing["uploaded_bytes"] == after["uploaded_bytes"]
    wait_for(lambda: spool_metrics(sink.name)["age"] > failing["age"], 30, "the age growing")

    # The secret fixed: the spool drains and every object is counted.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    sink.close()
    sink.flush()
    drained = spool_metrics(sink.name)
    stored = objects(server, bucket)
    assert drained["objects"] == len(stored) > after["objects"]
    assert drained["uploaded_bytes"] == sum(len(body) for body in stored.values())
    assert drained["bytes_sealed"] == drained["segments_sealed"] == drained["age"] == 0
    assert drained["failures"] == 1
    sink.close()


def test_a_daemon_with_a_wrong_secret_exports_a_spool_that_does_not_drain(
    server: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    events = recent_events(80, hours=1, seed=29)
    api = FakeOpenAI(events, admin_key=ADMIN_KEY)
    port = free_port()
    # flush_interval=0: each sweep uploads what it spooled, and the upload is refused.
    url = lake_url(server, bucket, tmp_path / "spool", flush_interval="0")
    env = cli_env(
        OPENAI_ADMIN_KEY=ADMIN_KEY,
        OPENAI_BASE_URL=api.base_url,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=WRONG_SECRET,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
    )
    process = subprocess.Popen(
        [
            sys.executable, "-m", "forwarder", "run", "--interval", "1s", "--start-at", "2h",
            "--without-tenant", "--metrics-addr", f"127.0.0.1:{port}", "--sink", url,
            "--state", str(tmp_path / "s.db"),
        ],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def refused_twice() -> dict | None:
        try:
            samples = scrape(port)
        except httpx.HTTPError:
            return None  # not listening yet
        failures = value(samples, "oaf_spool_upload_failures_total")
        return samples if failures is not None and failures >= 2 else None

    try:
        first = wait_for(refused_twice, 60, "two refused uploads on /metrics")
        later = wait_for(
            lambda: (
                (s := scrape(port))
                and value(s, "oaf_spool_oldest_segment_age_seconds")
                > value(first, "oaf_spool_oldest_segment_age_seconds")
                and s
            ),
            30,
            "the oldest segment ageing on /metrics",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        api.stop()
    assert process.returncode == 0, stderr.decode()
    assert WRONG_SECRET.encode() not in stderr
    assert objects(server, bucket) == {}
    held = value(later, "oaf_spool_bytes", state="sealed")
    assert held > 0 and value(later, "oaf_spool_segments", state="sealed") >= 1
    assert value(later, "oaf_spool_uploaded_objects_total") == 0
    assert value(later, "oaf_spool_uploaded_bytes_total") == 0
    assert value(later, "oaf_spool_flush_interval_seconds") == 0

    # Every spool family was scraped, labelled by the sink (shared by the streams that name
    # it, so not by stream); the stream test leaves exactly these to this one.
    families = {f.name for f in REGISTRY.collect() if f.name.startswith("oaf_spool_")}
    assert families == set(SCRAPED_ELSEWHERE)
    for family in families:
        mine = [
            (labels, name)
            for name, samples in later.items()
            if name == family or name.startswith(family + "_")
            for labels, _ in samples
        ]
        assert mine, f"{family}: not scraped"
        for labels, name in mine:
            assert "stream" not in labels and labels["sink"].startswith(f"s3://{bucket}/"), (
                name,
                labels,
            )
