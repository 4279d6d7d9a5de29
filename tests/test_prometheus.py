"""The Prometheus content under packaging/prometheus/, judged by Prometheus itself (Debian
package `prometheus`): `promtool check rules` and `promtool test rules` on the alert rules, and
the real server, configured by the example prometheus.yml, scraping a running forwarder: its
PromQL sees the events delivered, and the staleness alert goes pending for a stream that never
worked (the forwarder exports its last success as 0 from the start); a Security Lake sink's
spool is scraped, per sink, and its alert stays silent."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from forwarder.metrics import REGISTRY
from tests.conftest import ADMIN_KEY, cli_env, read_ndjson, recent_events
from tests.fakes.openai_api import FakeOpenAI
from tests.peers import free_port, require_executable
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / "packaging" / "prometheus"
HINT = "apt-get install prometheus"

pytestmark = pytest.mark.peer


def promtool(*args: str) -> str:
    """`promtool ARGS` in packaging/prometheus/; its output, once it exited 0."""
    done = subprocess.run(
        [require_executable("promtool", HINT), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", "alerts.yaml")


def test_the_alert_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yaml")
    tested = {
        check["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "alerts.test.yaml").read_text())["tests"]
        for check in test["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert tested == set(_alerts()), "every alert has a unit test in which it fires"


def _alerts() -> dict[str, str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def test_the_alert_rules_name_only_metrics_the_forwarder_exports() -> None:
    exported = {family.name for family in REGISTRY.collect()}
    for alert, expr in _alerts().items():
        for name in re.findall(r"\boaf_\w+", expr):
            base = re.sub(r"_(total|bucket|count|sum|created)$", "", name)
            assert base in exported, f"{alert}: {name} is not exported"


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql}, timeout=5
    ).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_a_running_forwarder_and_sees_what_it_delivered(
    tmp_path: Path,
) -> None:
    prometheus = require_executable("prometheus", HINT)
    events = recent_events(150, hours=1, seed=81)
    api = FakeOpenAI(events, admin_key=ADMIN_KEY)
    metrics_port, web_port = free_port(), free_port()
    # Also a Security Lake sink whose segments are not due within the test: its spool is
    # exported, and the endpoint (where nothing listens) is never called.
    lake = (
        "s3://lake-bucket/?format=parquet&schema=ocsf&source=openai&account_id=123456789012"
        f"&region=us-east-1&endpoint_url=http://127.0.0.1:{free_port()}&flush_interval=1h"
    )
    config = tmp_path / "forwarder.toml"
    config.write_text(f"""
sinks = ["file:{tmp_path}/out/{{stream}}.ndjson", "{lake}"]
state = "{tmp_path}/s.db"
start_at = "2h"
interval = "1s"
request_retries = 0
metrics_addr = "127.0.0.1:{metrics_port}"

[[streams]]
name = "good"
admin_key_env = "GOOD_KEY"
base_url = "{api.base_url}"

[[streams]]
name = "revoked"
admin_key_env = "REVOKED_KEY"
base_url = "{api.base_url}"
""")
    env = cli_env(GOOD_KEY=ADMIN_KEY, REVOKED_KEY="sk-admin-REVOKED-0000000000000000")
    # The example configuration, with the rules file where it is, this forwarder as the
    # target, and a short scrape and evaluation interval.
    server_config = tmp_path / "prometheus.yml"
    text = (PROMETHEUS / "prometheus.yml").read_text()
    for old, new in {
        "/etc/prometheus/openai-audit-forwarder-alerts.yaml": PROMETHEUS / "alerts.yaml",
        '"127.0.0.1:9464"': f'"127.0.0.1:{metrics_port}"',
        "scrape_interval: 30s": "scrape_interval: 1s",
        "evaluation_interval: 30s": "evaluation_interval: 1s",
    }.items():
        assert old in text
        text = text.replace(old, str(new))
    server_config.write_text(text)
    forwarder = subprocess.Popen(
        [sys.executable, "-m", "forwarder", "run", "--config", str(config)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    server = subprocess.Popen(
        [
            prometheus, f"--config.file={server_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{web_port}/-/ready", timeout=2).is_success
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "Prometheus ready")
        rules = httpx.get(f"http://127.0.0.1:{web_port}/api/v1/rules", timeout=5).json()
        loaded = [r for g in rules["data"]["groups"] for r in g["rules"]]
        assert sorted(r["name"] for r in loaded) == sorted(_alerts())

        def delivered() -> float | None:
            query = 'sum(oaf_events_delivered_total{job="openai-audit-forwarder", sink=~"file:.*"})'
            result = _query(web_port, query)
            return float(result[0]["value"][1]) if result else None

        wait_for(lambda: delivered() == len(events), 60, "the delivered events in Prometheus")
        assert len(read_ndjson(tmp_path / "out" / "good.ndjson")) == len(events)
        up = _query(web_port, 'up{job="openai-audit-forwarder"}')
        assert [r["value"][1] for r in up] == ["1"]

        # The revoked stream (and its tenant companion, not run after it) never succeeded:
        # their last success is 0, so the staleness alert is pending for them, not for "good".
        def pending() -> set[str] | None:
            alerts = _query(web_port, 'ALERTS{alertname="OpenAIAuditNoSuccessfulSweep"}')
            streams = {a["metric"]["stream"] for a in alerts}
            return streams if streams >= {"revoked", "revoked-tenant"} else None

        assert wait_for(pending, 60, "the staleness alert") == {"revoked", "revoked-tenant"}

        # The spool of the Security Lake sink, per sink: it holds what "good" delivered, and its
        # segments are young, so the spool alert is silent.
        def spooled() -> list[dict[str, Any]] | None:
            found = _query(web_port, 'oaf_spool_bytes{job="openai-audit-forwarder"} > 0')
            return found or None

        (held,) = wait_for(spooled, 60, "the spool's bytes in Prometheus")
        assert held["metric"]["state"] == "open" and "stream" not in held["metric"]
        assert held["metric"]["sink"].startswith("s3://lake-bucket/")
        assert _query(web_port, 'ALERTS{alertname="OpenAIAuditSpoolNotDraining"}') == []
    finally:
        server.send_signal(signal.SIGTERM)
        server_log = server.communicate(timeout=60)[1].decode(errors="replace")
        forwarder.send_signal(signal.SIGTERM)
        forwarder.communicate(timeout=60)
        api.stop()
    assert server.returncode == 0, server_log[-3000:]
