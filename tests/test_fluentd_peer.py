"""The Fluentd sink against a real Fluentd (v1.18.0, ../shared/peers/fluentd): every transport and
authentication mode delivers the sample exactly once with EventTime; wrong credentials and
protocol mismatches end at once with one line naming the cause; kill -9 loses nothing."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fakes.events import make_events
from tests.fluentd_support import (
    FILE_OUTPUT,
    FORWARDER,
    SAMPLE,
    buffers_flushed,
    fluentd_peer,
    forwarder,
    json_lines,
    make_certs,
    peer_workdir,
    settled_lines,
)
from tests.peers import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.peer

KEY, USER, PASSWORD = "k42-shared", "collector", "pa55-word"
ENV = {"FLUENTD_SHARED_KEY": KEY, "FLUENTD_USER": USER, "FLUENTD_PASSWORD": PASSWORD}
TLS = """  <transport tls>
    cert_path {crt}
    private_key_path {key}
    min_version TLS1_2
    max_version TLS1_3
  </transport>"""
SECURITY = """  <security>
    self_hostname fluentd-peer
    shared_key "#{{ENV['FLUENTD_SHARED_KEY']}}"
  </security>"""
USER_AUTH = """  <security>
    self_hostname fluentd-peer
    shared_key "#{{ENV['FLUENTD_SHARED_KEY']}}"
    user_auth true
    <user>
      username "#{{ENV['FLUENTD_USER']}}"
      password "#{{ENV['FLUENTD_PASSWORD']}}"
    </user>
  </security>"""
OUTPUT = """<label @FLUENT_LOG>
  <match **>
    @type null
  </match>
</label>
<filter **>
  @type fc_meta
</filter>
"""


def source(port: int, *sections: str) -> str:
    body = "\n".join(sections)
    return f"<source>\n  @type forward\n  port {port}\n  bind 127.0.0.1\n{body}\n</source>\n"


class Receiver:
    """One Fluentd with four in_forward sources: plain, TLS, shared key, TLS + user auth."""

    def __init__(self, workdir: Path) -> None:
        self.certs = make_certs(workdir / "certs")
        self.out = workdir / "out"
        self.ports = {name: free_port() for name in ("plain", "tls", "key", "tls_user")}
        tls = TLS.format(crt=self.certs["server.crt"], key=self.certs["server.key"])
        config = (
            source(self.ports["plain"])
            + source(self.ports["tls"], tls)
            + source(self.ports["key"], SECURITY.format())
            + source(self.ports["tls_user"], tls, USER_AUTH.format())
            + (OUTPUT + FILE_OUTPUT).format(out=self.out)
        )
        self.peer = fluentd_peer().FluentdPeer(config, peer_workdir(), env=ENV)

    def url(self, name: str, tag: str, *, to: str | None = None, **params: str) -> str:
        """The sink URL for source `name` (its scheme and port; `to`: another source's port)."""
        scheme = "fluentd+tls" if name.startswith("tls") else "fluentd"
        query = "&".join(f"{k}={v}" for k, v in {"tag": tag, **params}.items())
        return f"{scheme}://127.0.0.1:{self.ports[to or name]}?{query}"

    def lines(self, tag: str) -> list[dict[str, Any]]:
        return json_lines(sorted(self.out.glob(f"{tag}*.log")))


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    recv = Receiver(tmp_path_factory.mktemp("fluentd"))
    with recv.peer:
        yield recv


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The sample mapped by the same CLI into a file: what every Fluentd case must carry."""
    work = tmp_path_factory.mktemp("reference")
    out = work / "ecs.jsonl"
    result = forwarder(
        "run", "--once", "--input", str(SAMPLE), "--state", str(work / "s.db"), "--sink",
        f"file:{out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    docs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return {doc["event"]["id"]: doc for doc in docs}


SAMPLE_TIMES = {
    event["id"]: event["effective_at"]
    for event in map(orjson.loads, SAMPLE.read_bytes().splitlines())
}

CASES = {
    "plain": ("plain", {}, "tcp"),
    "gzip": ("plain", {"compress": "gzip"}, "tcp"),
    "tls_ca_file": ("tls", {"ca_file": "{ca}"}, "tls"),
    "tls_no_verify": ("tls", {"verify": "false"}, "tls"),
    "shared_key": ("key", {"shared_key_env": "FLUENTD_SHARED_KEY"}, "tcp, shared key ok"),
    "tls_gzip_key_user": (
        "tls_user",
        {
            "ca_file": "{ca}",
            "compress": "gzip",
            "shared_key_env": "FLUENTD_SHARED_KEY",
            "username_env": "FLUENTD_USER",
            "password_env": "FLUENTD_PASSWORD",
        },
        "tls, shared key ok, user auth ok",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_fluentd_receives_the_sample_once_with_tag_document_and_event_time(
    case: str, receiver: Receiver, reference: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    name, params, connection = CASES[case]
    params = {k: v.format(ca=receiver.certs["ca.pem"]) for k, v in params.items()}
    tag = f"openai.audit.{case}"
    url = receiver.url(name, tag, **params)

    check = forwarder("check", "--input", str(SAMPLE), "--state", str(tmp_path / "s.db"),
                      "--sink", url, env=ENV)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    line = f"ok    sink {url}: {url.split('?')[0]}: connected ({connection})"
    assert line in check.stdout.splitlines(), check.stdout

    run = forwarder("run", "--once", "--input", str(SAMPLE), "--state", str(tmp_path / "s.db"),
                    "--sink", url, env=ENV)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lines = settled_lines(
        lambda: sorted(receiver.out.glob(f"{tag}*.log")), len(reference), receiver.out
    )

    ids = Counter(doc["event"]["id"] for doc in lines)
    assert ids == Counter(set(reference)), "every sample event exactly once"
    for doc in lines:
        meta = {k: doc.pop(k) for k in [k for k in doc if k.startswith("__fc_")]}
        event_id = doc["event"]["id"]
        assert meta["__fc_tag"] == tag
        assert meta["__fc_time_class"] == "Fluent::EventTime"
        effective_at = SAMPLE_TIMES[event_id]
        assert meta["__fc_time_sec"] == int(effective_at)
        assert meta["__fc_time_nsec"] == round((effective_at - int(effective_at)) * 1e9)
        assert doc == reference[event_id]


def test_a_full_tls_run_closes_every_connection_cleanly(receiver: Receiver, tmp_path: Path) -> None:
    """check and run over TLS (with and without the handshake): no `unexpected eof` in
    Fluentd's log, i.e. every TLS connection ended with close_notify. (Runs before the
    mismatch tests below, whose broken connections do log it.)"""
    ca = receiver.certs["ca.pem"]
    for name, params in (
        ("tls", {"ca_file": str(ca)}),
        ("tls_user", {**CASES["tls_gzip_key_user"][1], "ca_file": str(ca)}),
    ):
        url = receiver.url(name, f"openai.audit.clean.{name}", **params)
        for command in (["check"], ["run", "--once"]):
            result = forwarder(*command, "--input", str(SAMPLE), "--state",
                               str(tmp_path / f"{name}.db"), "--sink", url, env=ENV)  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
    settled_lines(
        lambda: sorted(receiver.out.glob("openai.audit.clean.*.log")),
        2 * len(SAMPLE_TIMES),
        receiver.out,
    )
    log = receiver.peer.log.read_text()
    assert "unexpected eof" not in log
    assert "[error]" not in log, log[-3000:]


SHARED = {"shared_key_env": "FLUENTD_SHARED_KEY"}
NO_VERIFY = {"verify": "false"}
USER_WRONG = {"username_env": "FLUENTD_USER", "password_env": "WRONG_KEY"}
SPEAKS_TLS = "server speaks TLS; use fluentd+tls://"
NOT_TLS = "server does not speak TLS (no <transport tls>); use fluentd://"
NO_SECURITY = "server has no <security>; drop shared_key_env"
MISMATCHES = {
    "wrong_shared_key": (
        "key", {"shared_key_env": "WRONG_KEY"},
        "shared key rejected by the server (shared_key mismatch)",
    ),
    "wrong_password": (
        "tls_user", {"ca_file": "{ca}", **SHARED, **USER_WRONG},
        "user name or password rejected by the server (username/password mismatch)",
    ),
    "wrong_ca": (
        "tls", {"ca_file": "{other_ca}"},
        "TLS certificate verification failed: unable to get local issuer certificate",
    ),
    "plain_to_tls": ("plain@tls", {}, SPEAKS_TLS),
    "plain_key_to_tls": ("plain@tls_user", SHARED, SPEAKS_TLS),
    "tls_to_plain": ("tls@plain", NO_VERIFY, NOT_TLS),
    "tls_to_key": ("tls@key", {**NO_VERIFY, **SHARED}, NOT_TLS),
    "key_to_plain": ("plain", SHARED, NO_SECURITY),
    "tls_key_to_tls": ("tls", {**NO_VERIFY, **SHARED}, NO_SECURITY),
    "no_key_to_key": (
        "key", {}, "the server requires shared-key authentication (set shared_key_env)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_wrong_credentials_and_protocol_mismatches_end_at_once_with_one_line_naming_the_cause(
    case: str, receiver: Receiver, tmp_path: Path
) -> None:
    target, params, cause = MISMATCHES[case]
    other_ca = make_certs(tmp_path / "other")["ca.pem"]
    params = {
        k: v.format(ca=receiver.certs["ca.pem"], other_ca=other_ca) for k, v in params.items()
    }
    scheme_of, _, port_of = target.partition("@")
    url = receiver.url(scheme_of, f"openai.audit.bad.{case}", to=port_of or None, **params)
    started = time.monotonic()
    result = forwarder(
        "run", "--once", "--input", str(SAMPLE), "--state", str(tmp_path / "s.db"), "--sink", url,
        env={**ENV, "WRONG_KEY": "not-the-secret"}, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert elapsed < 10, f"took {elapsed:.1f}s"
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(f"fluentd 127.0.0.1:{receiver.ports[port_of or scheme_of]}: {cause}")
    for secret in (KEY, PASSWORD, "not-the-secret"):
        assert secret not in result.stderr + result.stdout
    assert not list(receiver.out.glob("openai.audit.bad.*"))


def test_kill_9_mid_delivery_of_50000_events_loses_none_and_repeats_at_most_one_batch(
    tmp_path: Path,
) -> None:
    now = int(time.time())
    events = make_events(50_000, start=now - 20 * 3600, end=now - 3600, seed=9)
    source_file = tmp_path / "events.jsonl"
    source_file.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    port = free_port()
    out = tmp_path / "out"
    config = source(port) + (OUTPUT + FILE_OUTPUT).format(out=out)
    peer = fluentd_peer().FluentdPeer(config, peer_workdir())

    def delivered_bytes() -> int:
        return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

    with peer:
        run = subprocess.Popen(
            [
                str(FORWARDER), "run", "--once", "--input", str(source_file),
                "--state", str(tmp_path / "s.db"), "--batch-size", "1000",
                "--sink", f"fluentd://127.0.0.1:{port}?tag=openai.audit.kill",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_for(lambda: delivered_bytes() > 8 << 20, 120, "8 MB delivered to Fluentd")
            assert run.poll() is None, "the run ended before the kill"
            peer.kill()
            time.sleep(1)
            peer.start()
            _, stderr = run.communicate(timeout=240)
        finally:
            if run.poll() is None:
                run.kill()
        assert run.returncode == 0, stderr[-2000:]
        wanted = {e["id"] for e in events}
        wait_for(
            lambda: {d["event"]["id"] for d in json_lines(sorted(out.glob("*.log")))} >= wanted,
            120,
            "every event in Fluentd's output after the restart",
        )
        wait_for(lambda: buffers_flushed(out), 60, "Fluentd to flush its buffer")
        ids = Counter(d["event"]["id"] for d in json_lines(sorted(out.glob("*.log"))))
    lost = len(wanted - set(ids))
    duplicates = sum(ids.values()) - len(ids)
    print(
        f"\nkill -9 mid-delivery: {len(events)} events sent, {sum(ids.values())} received, "
        f"{lost} lost, {duplicates} duplicates"
    )
    # Often no failure is logged: the sink's own reconnects (with backoff) outlast the restart.
    retried = [line for line in stderr.splitlines() if f"fluentd 127.0.0.1:{port}" in line]
    print(f"sink failures logged while Fluentd was down: {len(retried)}")
    assert lost == 0 and set(ids) == wanted
    assert duplicates <= 1000, f"{duplicates} duplicates: more than one batch"
