"""The configuration snippets and recipes in docs/ that a peer can run, extracted from the
Markdown and run as written by that peer: the Fluentd receivers of docs/sink-fluentd.md by the
real Fluentd, the rsyslog lines of docs/sink-syslog.md and the relay recipe of docs/deploy.md
(certificates included) by rsyslogd; the events arrive. Only ports, hosts and absolute paths
are moved into the test's directory, and each test checks that none was left behind."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from compose_spec import PyCompose

from forwarder.sinks import Record, open_sink
from tests.fakes.rsyslog import rsyslogd_path
from tests.fluentd_support import (
    SAMPLE,
    fluentd_peer,
    forwarder,
    json_lines,
    make_certs,
    peer_workdir,
)
from tests.peers import free_port, missing_peer
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SAMPLE_IDS = [orjson.loads(line)["id"] for line in SAMPLE.read_bytes().splitlines()]


@dataclass(frozen=True)
class Block:
    """A fenced block of a Markdown file: its language tag, text and first line number."""

    lang: str
    text: str
    line: int


def fenced_blocks(path: Path, section: str | None = None) -> list[Block]:
    """The fenced blocks of `path`, or of its section headed `section` (up to the next heading
    of the same or a higher level)."""
    lines = path.read_text().splitlines()
    start, end = 0, len(lines)
    if section is not None:
        start = lines.index(section)
        level = len(section.split(" ")[0])
        end = next(
            (i for i in range(start + 1, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[i])),
            len(lines),
        )
    blocks, current, lang, first = [], None, "", 0
    for number in range(start, end):
        line = lines[number]
        if line.startswith("```"):
            if current is None:
                current, lang, first = [], line[3:].strip(), number + 1
            else:
                blocks.append(Block(lang, "\n".join(current) + "\n", first))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def replace_all(text: str, replacements: dict[str, object]) -> str:
    for old, new in replacements.items():
        assert old in text, f"{old!r} is not in the recipe any more: update the test"
        text = text.replace(old, str(new))
    return text


# -- Fluentd: docs/sink-fluentd.md "Receiver configuration" ---------------------------------


def fluentd_recipes() -> list[tuple[str, Block]]:
    """(the forwarder's --sink URL, the Fluentd config that receives it), in document order."""
    blocks = fenced_blocks(DOCS / "sink-fluentd.md", "## Receiver configuration")
    recipes = []
    for before, block in itertools.pairwise(blocks):
        if "<source>" in block.text:
            assert before.lang == "sh", f"line {block.line}: no forwarder command before it"
            url = re.search(r"--sink '([^']+)'", before.text)
            assert url, f"line {before.line}: no --sink URL"
            recipes.append((url.group(1), block))
    return recipes


FLUENTD_RECIPES = fluentd_recipes()
SECRETS = {"FLUENTD_SHARED_KEY": "doc-shared-key", "FLUENTD_USER": "ops", "FLUENTD_PASSWORD": "pw"}


def test_the_fluentd_guide_has_a_receiver_for_each_mode() -> None:
    urls = [url for url, _ in FLUENTD_RECIPES]
    assert len(urls) == 4, urls
    assert [url.split(":")[0] for url in urls] == [
        "fluentd",
        "fluentd+tls",
        "fluentd",
        "fluentd+tls",
    ]
    assert "shared_key_env=" in urls[2] and "username_env=" in urls[3]
    assert all("<match openai.audit.**>" in block.text for _, block in FLUENTD_RECIPES)


def _local_fluentd(url: str, config: str, work: Path) -> tuple[str, str]:
    """The recipe pointed at a free port and files under `work`."""
    certs = make_certs(work / "certs")
    port = free_port()
    config = replace_all(config, {"port 24224": f"port {port}"})
    for old, new in {
        "/var/log/fluent/": f"{work}/log/",
        "/var/lib/fluent/": f"{work}/lib/",
        "/etc/fluent/tls/server.crt": certs["server.crt"],
        "/etc/fluent/tls/server.key": certs["server.key"],
    }.items():
        config = config.replace(old, str(new))
    url = replace_all(url, {"fluentd.example.com:24224": f"127.0.0.1:{port}"})
    url = url.replace("/etc/ssl/fluentd-ca.pem", str(certs["ca.pem"]))
    assert "/etc/" not in config + url and "/var/" not in config
    return url, config


@pytest.mark.peer
@pytest.mark.parametrize(
    ("url", "block"), FLUENTD_RECIPES, ids=[f"line{b.line}" for _, b in FLUENTD_RECIPES]
)
def test_a_fluentd_receiver_from_the_guide_stores_every_event_once(
    url: str, block: Block, tmp_path: Path
) -> None:
    peer_module = fluentd_peer()
    url, config = _local_fluentd(url, block.text, tmp_path)
    peer = peer_module.FluentdPeer(config, peer_workdir(), env=SECRETS)
    with peer:
        sent = forwarder(
            "run", "--once", "--input", str(SAMPLE), "--state", str(tmp_path / "s.db"),
            "--sink", url, env=SECRETS,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr[-2000:]
        peer.stop()  # a clean stop flushes the file buffer (flush_at_shutdown)
    docs = json_lines(sorted((tmp_path / "log" / "openai-audit").glob("*.log")))
    assert Counter(doc["event"]["id"] for doc in docs) == Counter(SAMPLE_IDS)
    log = peer.log.read_text()
    assert "no patterns matched" not in log and "[error]" not in log, log[-3000:]


@pytest.mark.peer
def test_fluentd_without_a_match_acks_and_drops_what_it_received(tmp_path: Path) -> None:
    """What the guide warns about: only the <source> of the plain recipe. Fluentd acks every
    chunk, the forwarder reports the sample delivered, and Fluentd's log says it dropped it."""
    peer_module = fluentd_peer()
    url, block = FLUENTD_RECIPES[0]
    source = block.text[: block.text.index("</source>") + len("</source>")] + "\n"
    url, config = _local_fluentd(url, source, tmp_path)
    peer = peer_module.FluentdPeer(config, peer_workdir())
    with peer:
        sent = forwarder(
            "run", "--once", "--input", str(SAMPLE), "--state", str(tmp_path / "s.db"),
            "--sink", url,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr[-2000:]
        peer.stop()
    assert f"sweep done: {len(SAMPLE_IDS)} events delivered" in sent.stderr
    assert 'no patterns matched tag="openai.audit"' in peer.log.read_text()


# -- rsyslog: docs/sink-syslog.md, the lines that raise rsyslog's message size ---------------


def _run_rsyslogd(conf: Path, work: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [rsyslogd_path(), "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> str:
    process.terminate()
    return process.communicate(timeout=30)[0].decode(errors="replace")


def _listening(port: int) -> bool:
    with open("/proc/net/tcp") as table:
        return any(
            fields[1].endswith(f":{port:04X}") and fields[3] == "0A"
            for fields in (line.split() for line in table.readlines()[1:])
        )


@pytest.mark.peer
def test_the_rsyslog_lines_for_64_kib_messages_take_one_whole(tmp_path: Path) -> None:
    (block,) = [b for b in fenced_blocks(DOCS / "sink-syslog.md") if "maxMessageSize" in b.text]
    port = free_port()
    out = tmp_path / "out.ndjson"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        replace_all(block.text, {'port="2514"': f'port="{port}"'})
        # The output a receiver has anyway: each message body as one line.
        + 'template(name="body" type="string" string="%msg%\\n")\n'
        + f'action(type="omfile" file="{out}" template="body")\n'
    )
    sink = open_sink(f"syslog+relp://127.0.0.1:{port}")
    # The largest document the sink's default max_size (65536) lets through: near 64 KiB.
    big = {"id": "audit_log-big", "type": "login.failed", "pad": "x" * 65_200}
    small = {"id": "audit_log-small", "type": "login.failed"}
    records = [Record(doc["id"], doc["type"], 1_700_000_000, doc) for doc in (big, small)]
    process = _run_rsyslogd(conf, tmp_path)
    try:
        wait_for(lambda: _listening(port), 20, "rsyslogd")
        sink.open()
        try:
            assert list(sink.write(records)) == []  # neither is over max_size
        finally:
            sink.close()
        wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 2, 20, "the output")
    finally:
        log = _stop(process)
    received = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert received == [big, small], log


# -- rsyslog relay: docs/deploy.md "Through an rsyslog relay" --------------------------------


@pytest.mark.peer
def test_the_relay_recipe_makes_its_certificates_passes_rsyslogd_check_and_relays_events(
    tmp_path: Path,
) -> None:
    rsyslogd = rsyslogd_path()
    main_conf = Path("/etc/rsyslog.conf")
    if not main_conf.exists():
        missing_peer("/etc/rsyslog.conf not found (apt-get install rsyslog)")
    shutil.which("openssl") or missing_peer("openssl not installed (apt-get install openssl)")
    section = "### Through an rsyslog relay"
    (recipe,) = [b for b in fenced_blocks(DOCS / "deploy.md", section) if b.lang == "sh"]
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "rsyslog.d").mkdir()
    # Debian's main config, including our directory instead of /etc/rsyslog.d.
    (etc / "rsyslog.conf").write_text(
        replace_all(main_conf.read_text(), {"/etc/rsyslog.d/": f"{etc}/rsyslog.d/"})
    )
    lines = recipe.text.splitlines()
    assert lines[0].startswith("apt-get install ")  # installed here already
    *steps, check = lines[1:]
    assert check == "rsyslogd -N1 -f /etc/rsyslog.conf && systemctl restart rsyslog"

    def run(script: str) -> subprocess.CompletedProcess[str]:
        script = replace_all(script, {"/etc/rsyslog.": f"{etc}/rsyslog."})
        assert "/etc/" not in script.replace(str(etc), "")
        return subprocess.run(
            ["sh", "-eu", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
            env={"PATH": f"{Path(rsyslogd).parent}:/usr/bin:/bin"},
        )  # fmt: skip

    made = run("\n".join(steps) + "\n")
    assert made.returncode == 0, made.stdout + made.stderr
    installed = etc / "rsyslog.d" / "openai-audit-relay.conf"
    # The installed file names /etc/rsyslog.d/tls/: read as if /etc were the test's.
    installed.write_text(
        replace_all(installed.read_text(), {"/etc/rsyslog.d/": f"{etc}/rsyslog.d/"})
    )
    checked = run(check.replace(" && systemctl restart rsyslog", ""))  # started below
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "End of config validation run" in checked.stderr, checked.stderr
    assert "error" not in checked.stderr.lower(), checked.stderr
    tls = etc / "rsyslog.d" / "tls"
    assert sorted(p.name for p in tls.iterdir()) == [
        "ca.key", "ca.pem", "forwarder.crt", "forwarder.key", "relay.crt", "relay.key",
    ]  # fmt: skip
    assert all((tls / k).stat().st_mode & 0o077 == 0 for k in ("ca.key", "relay.key"))

    # The relay as installed, run on its own (Debian's main config would take over the host's
    # /dev/log): free ports, its spool and output files in the test directory, "Splunk" a
    # closed port (its queue keeps retrying; the file output is what is checked).
    relp, tcp, splunk = free_port(), free_port(), free_port()
    work = tmp_path / "var"
    relay = replace_all(
        (etc / "rsyslog.d" / "openai-audit-relay.conf").read_text(),
        {
            "/var/spool/rsyslog": work / "spool",
            "/var/log/openai-audit/": f"{work}/log/",
            'port="2514"': f'port="{relp}"',
            'input(type="imtcp" port="6514"': f'input(type="imtcp" port="{tcp}"',
            'target="splunk.example.internal"\n      port="6514"': (
                f'target="127.0.0.1"\n      port="{splunk}"'
            ),
        },
    )
    (work / "spool").mkdir(parents=True)
    conf = tmp_path / "relay.conf"
    conf.write_text(relay)
    section_text = (DOCS / "deploy.md").read_text().split(section)[1]
    url = re.search(r"`(syslog\+relp://relay\.example\.internal[^`]+)`", section_text).group(1)  # type: ignore[union-attr]
    url = replace_all(
        url,
        {
            "relay.example.internal:2514": f"127.0.0.1:{relp}",
            "/etc/ssl/relay-ca.pem": tls / "ca.pem",
            "/etc/ssl/forwarder.crt": tls / "forwarder.crt",
            "/etc/ssl/forwarder.key": tls / "forwarder.key",
        },
    )
    url += "&server_name=relay.example.internal"  # the name in relay.crt; we dial 127.0.0.1
    out = work / "log" / "relay.ndjson"
    process = _run_rsyslogd(conf, tmp_path)
    try:
        wait_for(lambda: _listening(relp), 20, "the relay")
        sent = forwarder(
            "run", "--once", "--input", str(SAMPLE), "--state", str(tmp_path / "s.db"),
            "--sink", url,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr[-2000:]
        wait_for(
            lambda: out.exists() and out.read_bytes().count(b"\n") >= len(SAMPLE_IDS),
            30,
            "the relay's output file",
        )
    finally:
        log = _stop(process)
    docs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert Counter(doc["event"]["id"] for doc in docs) == Counter(SAMPLE_IDS), log[-3000:]


# -- Docker and Compose: docs/deploy.md, the key files the containers read --------------------

DOCKER = REPO / "packaging" / "docker"
CONTAINER_UID = 10001  # USER in the Dockerfile; the fluentd service joins its group


def _read_as(path: Path, uid: int, gid: int, groups: list[int]) -> str | None:
    """The file's text as a process of that uid, gid and supplementary groups sees it."""
    done = subprocess.run(
        ["cat", str(path)], user=uid, group=gid, extra_groups=groups, capture_output=True
    )
    return done.stdout.decode() if done.returncode == 0 else None


def _deploy_lines(section: str, word: str) -> list[str]:
    blocks = fenced_blocks(DOCS / "deploy.md", section)
    return [line for b in blocks if b.lang == "sh" for line in b.text.splitlines() if word in line]


def test_the_image_runs_as_the_uid_the_key_steps_are_made_for_and_has_the_parquet_extra() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(rf"^USER {CONTAINER_UID}:{CONTAINER_UID}$", dockerfile, re.M)
    assert 'pip wheel --no-cache-dir --wheel-dir /wheels ".[parquet]"' in dockerfile
    compose = PyCompose.from_yaml((DOCKER / "compose.yaml").read_text()).to_dict()
    assert str(CONTAINER_UID) in [str(g) for g in compose["services"]["fluentd"]["group_add"]]
    assert "user" not in compose["services"]["forwarder"]  # the image's USER


@pytest.mark.peer
def test_the_documented_key_file_steps_give_files_the_container_users_can_read() -> None:
    """The `install` lines of docs/deploy.md, run as written (without sudo: the tests run as
    root), then each file read as the containers' users: the forwarder (uid and gid 10001),
    Fluentd (another uid, in group 10001 by group_add) and anyone else."""
    if os.geteuid() != 0:
        missing_peer("making files owned by uid 10001 needs root (CI runs as root)")
    # The lines that make the files: `mkdir -p secrets` and an `install` per key file.
    made = [
        line
        for line in _deploy_lines("## Docker and Compose", "")
        if line.startswith("mkdir -p secrets") or " install " in line
    ]
    assert len(made) == 4 and made[1] == "mkdir -p secrets", made
    # A directory the other uids may enter (pytest's tmp_path is under a 0700 one).
    work = Path(tempfile.mkdtemp(prefix="oaf-keys-"))
    work.chmod(0o755)
    key = "sk-admin-DOCKER-0123456789abcdef"
    script = "\n".join(made).replace("sudo ", "") + "\n"
    try:
        done = subprocess.run(
            ["sh", "-eu", "-c", script], cwd=work, capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "OPENAI_ADMIN_KEY": key},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        admin, shared = (
            work / "secrets" / "openai_admin_key",
            work / "secrets" / "fluentd_shared_key",
        )
        forwarder_user = (CONTAINER_UID, CONTAINER_UID, [])
        fluentd_user = (999, 999, [CONTAINER_UID])
        stranger = (999, 999, [])
        for path in (admin, work / "admin-key"):
            assert _read_as(path, *forwarder_user) == key
            assert _read_as(path, *fluentd_user) is None
            assert _read_as(path, *stranger) is None
        assert re.fullmatch(r"[0-9a-f]{64}\n", _read_as(shared, *forwarder_user) or "")
        assert _read_as(shared, *fluentd_user) == _read_as(shared, *forwarder_user)
        assert _read_as(shared, *stranger) is None
        # The files compose mounts are the ones made here.
        compose_file = (DOCKER / "compose.yaml").read_text()
        for name in (admin.name, shared.name):
            assert f"file: ./secrets/{name}" in compose_file
    finally:
        shutil.rmtree(work)


# -- systemd: the units' Documentation= -----------------------------------------------------


def test_the_systemd_units_documentation_is_installed_by_the_documented_step(
    tmp_path: Path,
) -> None:
    (step,) = _deploy_lines("## systemd", "/usr/share/doc/")
    done = subprocess.run(
        ["sh", "-eu", "-c", step.replace("/usr/share/doc/", f"{tmp_path}/")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    units = sorted((REPO / "packaging" / "systemd").glob("openai-audit-forwarder*.*"))
    targets = set()
    for unit in units:
        (line,) = [ln for ln in unit.read_text().splitlines() if ln.startswith("Documentation=")]
        targets.update(line.removeprefix("Documentation=").split())
    assert targets
    for uri in targets:
        assert uri.startswith("file:///usr/share/doc/"), uri
        installed = tmp_path / uri.removeprefix("file:///usr/share/doc/")
        source = DOCS / installed.name
        assert installed.read_bytes() == source.read_bytes(), uri


# -- README: what `pytest -q` says about a missing peer -------------------------------------


def test_pytest_q_names_the_reason_of_a_skip_and_fluentd_peer_dir_is_read() -> None:
    """The README's test command on a machine without the Fluentd peer (FLUENTD_PEER_DIR
    pointing nowhere, CI unset): the skip is listed with its reason."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["FLUENTD_PEER_DIR"] = "/nonexistent/fluentd-peer"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_doc_recipes.py::test_fluentd_without_a_match_acks_and_drops_what_it_received"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(
        r"^SKIPPED \[1\] .*fluentd-peer not found at /nonexistent/fluentd-peer "
        r"\(set FLUENTD_PEER_DIR\)$",
        done.stdout,
        re.M,
    ), done.stdout
