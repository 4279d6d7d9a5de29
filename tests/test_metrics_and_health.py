"""What an operator scrapes and probes: every metric about a stream carries its `stream` label,
a stream that never worked exports a last success of 0, sweeps are counted by outcome; `/livez`
stays up through a sink outage while `/healthz` names the sink (and the tenant companion reads
as not run), and `/livez` fails once a loop goes silent past its bound or ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forwarder.config import load_settings
from forwarder.health import Health, max_silence, serve_metrics
from forwarder.metrics import REGISTRY
from tests.conftest import ADMIN_KEY, cli_env, recent_events
from tests.fakes.forward_server import ForwardServer
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import free_port
from tests.waiting import wait_for

# Metrics that describe the whole process rather than one stream, each with the reason. A
# metric whose meaning involves a stream must not be listed here: it needs the label.
PROCESS_WIDE: dict[str, str] = {}
# Metrics that only a sink this test does not run exports, and the test that scrapes them from
# a daemon instead and checks their labels: the S3 Parquet spool is labelled by sink, not by
# stream, since streams that name the same sink URL share it and its spool.
SCRAPED_ELSEWHERE = {
    "oaf_spool_bytes": "tests/test_spool_metrics.py",
    "oaf_spool_segments": "tests/test_spool_metrics.py",
    "oaf_spool_oldest_segment_age_seconds": "tests/test_spool_metrics.py",
    "oaf_spool_flush_interval_seconds": "tests/test_spool_metrics.py",
    "oaf_spool_uploaded_objects": "tests/test_spool_metrics.py",
    "oaf_spool_uploaded_bytes": "tests/test_spool_metrics.py",
    "oaf_spool_upload_failures": "tests/test_spool_metrics.py",
}


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name, as Prometheus reads the exposition."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> Any:
    """The value of the one sample of `name` whose labels include `labels`, else None."""
    found = [v for got, v in samples.get(name, []) if labels.items() <= got.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    return response.status_code, response.json()


def test_a_sink_outage_keeps_livez_up_names_the_sink_in_healthz_and_every_stream_metric_has_its_stream(  # noqa: E501
    tmp_path: Path,
) -> None:
    now = int(time.time())
    events = recent_events(120, hours=1, seed=71)
    api = FakeOpenAI(events, admin_key=ADMIN_KEY, refuse_tenant=403)
    # An event listed in the window whose own time lies before it (dropped: another window
    # has it), and one without an id (dead-lettered).
    api.add_raw(
        orjson.dumps({"id": "audit_log-old", "type": "login.failed", "effective_at": now - 20_000}),
        now - 1800,
        "login.failed",
    )
    no_id = {"type": "login.failed", "effective_at": now - 1700}
    api.add_raw(orjson.dumps(no_id), now - 1700, "login.failed")
    api.fail_next(429, 1, retry_after=0.01)
    fluentd = ForwardServer(port=free_port())  # not started yet: the sink is down
    sink = fluentd.url(tag="openai.audit", retries="1", timeout="1")
    port = free_port()
    env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "forwarder", "run",
            "--interval", "1s", "--start-at", "2h", "--health-max-age", "2s",
            "--sink-retry-timeout", "1s", "--metrics-addr", f"127.0.0.1:{port}",
            "--sink", sink, "--state", str(tmp_path / "s.db"),
            "--dead-letter", str(tmp_path / "dl"),
        ],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    livez: list[int] = []

    def probe(path: str) -> tuple[int, dict[str, Any]] | None:
        try:
            livez.append(get_json(port, "/livez")[0])
            return get_json(port, path)
        except httpx.HTTPError:
            return None  # not listening yet

    try:
        # The outage outlasts the health threshold and several sweeps.
        def outage_seen() -> dict[str, Any] | None:
            got = probe("/healthz")
            if got is None or got[0] != 503:
                return None
            failures = value(scrape(port), "oaf_sweeps_total", stream="default", outcome="failure")
            return got[1] if failures >= 3 else None

        health = wait_for(outage_seen, 60, "the sink outage in /healthz")
        main, companion = health["streams"]["default"], health["streams"]["default-tenant"]
        # Between sweeps it reads "failing", during one "retrying": both name the sink.
        assert main["healthy"] is False and main["status"] in ("failing", "retrying")
        assert f"sink fluentd://127.0.0.1:{fluentd.port}" in main["last_error"]
        assert f"sink fluentd://127.0.0.1:{fluentd.port}" in main["reason"]
        assert companion["status"] == "not run" and companion["last_error"] is None
        assert companion["reason"] == "not run: stream default, swept before it, failed"
        during = scrape(port)
        # Both streams were exported from the start; neither has ever succeeded.
        for stream in ("default", "default-tenant"):
            assert value(during, "oaf_last_success_timestamp_seconds", stream=stream) == 0
            assert value(during, "oaf_sweep_interval_seconds", stream=stream) == 1
            assert value(during, "oaf_sweeps_total", stream=stream, outcome="success") == 0
        assert value(during, "oaf_sweeps_total", stream="default-tenant", outcome="not_run") >= 3
        assert value(during, "oaf_sink_retries_total", stream="default", sink=sink) >= 1
        status, alive = get_json(port, "/livez")
        assert status == 200 and alive["loops"]["default"]["alive"] is True

        fluentd.start()  # the receiver is back

        def recovered() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            got = probe("/healthz")
            samples = scrape(port)
            delivered = value(samples, "oaf_events_delivered_total", stream="default", sink=sink)
            refused = value(samples, "oaf_tenant_listing_refused", stream="default-tenant")
            done = got and got[0] == 200 and delivered == len(events) and refused == 1
            return samples if done else None

        after = wait_for(recovered, 60, "delivery after the outage")
        assert len(fluentd.entries) == len(events)
        assert value(after, "oaf_sweeps_total", stream="default", outcome="success") >= 1
        assert value(after, "oaf_last_success_timestamp_seconds", stream="default") >= now
        assert value(after, "oaf_api_rate_limited_total", stream="default") == 1
        assert value(after, "oaf_api_retries_total", stream="default") == 1
        assert value(after, "oaf_events_out_of_window_total", stream="default") >= 1
        assert value(after, "oaf_events_dead_lettered_total", stream="default", kind="invalid") >= 1
        assert value(after, "oaf_api_requests_total", stream="default-tenant", status="403") >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        fluentd.stop()
        api.stop()
    assert process.returncode == 0, stderr.decode()
    assert ADMIN_KEY.encode() not in stderr
    assert livez and set(livez) == {200}, livez  # never down, outage or not

    # Every metric the forwarder registers was scraped, and each sample names its stream.
    families = {family.name for family in REGISTRY.collect()}
    scraped = {name for name in after if after[name]}
    for family in sorted(families - SCRAPED_ELSEWHERE.keys()):
        mine = [name for name in scraped if name == family or name.startswith(family + "_")]
        assert mine, f"{family}: no sample in this run; exercise it so its labels are checked"
        if family in PROCESS_WIDE:
            continue
        for name in mine:
            for labels, _ in after[name]:
                assert "stream" in labels, f"{name}{labels} has no stream label"


def test_livez_fails_once_a_loop_is_silent_past_its_bound_or_has_ended() -> None:
    clock = [1000.0]
    health = Health(max_age=300, clock=lambda: clock[0])
    health.loop_started("default", max_silence=100)
    server = serve_metrics(f"127.0.0.1:{free_port()}", health)
    port = server.server_address[1]
    try:
        clock[0] += 100
        assert get_json(port, "/livez")[0] == 200
        clock[0] += 1  # a heartbeat is overdue: the loop is stuck
        status, doc = get_json(port, "/livez")
        assert status == 503 and doc["status"] == "stuck"
        assert doc["loops"]["default"] == {
            "alive": False,
            "silent_seconds": 101.0,
            "max_silence_seconds": 100,
            "ended": None,
        }
        health.beat("default")
        assert get_json(port, "/livez")[0] == 200
        health.loop_ended("default", "stream default: the state is locked by another process")
        status, doc = get_json(port, "/livez")
        assert status == 503 and "locked" in doc["loops"]["default"]["ended"]
    finally:
        server.shutdown()
        server.server_close()


def test_healthz_tells_retrying_failing_stale_and_not_run_apart() -> None:
    clock = [1000.0]
    health = Health(max_age=10, clock=lambda: clock[0])
    for stream in ("a", "a-tenant", "b"):
        health.register(stream)
    health.success("a")
    health.success("a-tenant")
    health.success("b")
    clock[0] += 5
    health.retrying("a", "sink fluentd://f:24224: connection refused; retry 1 in 0.5s")
    healthy, doc = health.report()
    assert healthy  # retrying within the threshold is still healthy
    assert doc["streams"]["a"]["status"] == "retrying"
    assert "fluentd://f:24224" in doc["streams"]["a"]["reason"]
    health.failure("a", "sink fluentd://f:24224: connection refused (gave up after 3 attempts)")
    health.not_run("a-tenant", "not run: stream a, swept before it, failed")
    clock[0] += 6
    healthy, doc = health.report()
    assert not healthy and doc["status"] == "unhealthy"
    assert doc["streams"]["a"]["status"] == "failing"
    assert doc["streams"]["a-tenant"]["status"] == "not run"
    assert doc["streams"]["a-tenant"]["last_error"] is None
    assert doc["streams"]["b"]["status"] == "stale"  # no error, but no sweep for too long
    health.success("a")
    assert health.report()[1]["streams"]["a"] == {
        "healthy": True,
        "status": "ok",
        "reason": None,
        "last_success_age_seconds": 0.0,
        "last_error": None,
    }


def test_the_liveness_bound_covers_an_interval_a_retried_page_and_a_retried_batch_per_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AUDIT_FORWARDER_INTERVAL", "AUDIT_FORWARDER_SINK_RETRY_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(None)
    # 60s interval + 9 attempts of (30s request + 60s backoff) + (5m retry + 10m headroom).
    assert max_silence(settings) == 60 + 9 * 90 + 900
    assert max_silence(settings, loops=3) == 60 + 9 * 90 + 3 * 900
