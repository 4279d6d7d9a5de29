"""Helpers for tests against the real Fluentd (v1.18.0 in ../shared/peers/fluentd): start it, run
the forwarder's CLI, read what Fluentd wrote. Skips without the peer, fails under CI."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trustme

from tests.peers import missing_peer
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
PEER_DIR = Path(os.environ.get("FLUENTD_PEER_DIR", REPO.parent / "shared" / "peers" / "fluentd"))
PEER = PEER_DIR / "fluentd-peer"
SAMPLE = REPO / "samples" / "audit-log.jsonl"
# The console script of the interpreter running the tests (the venv's), else the one on PATH.
FORWARDER = Path(sys.executable).with_name("openai-audit-forwarder")
if not FORWARDER.exists():
    FORWARDER = Path(shutil.which("openai-audit-forwarder") or FORWARDER)
APT_HINT = (
    "apt-get install -y --no-install-recommends ruby ruby-msgpack ruby-cool.io "
    "ruby-serverengine ruby-yajl ruby-strptime ruby-sigdump ruby-tzinfo ruby-webrick "
    "ruby-http-parser.rb"
)


def fluentd_peer() -> Any:
    """The `fluentd_peer` module of the shared peer, or skip/fail (under CI) without it."""
    if not PEER.exists():
        missing_peer(f"fluentd-peer not found at {PEER_DIR} (set FLUENTD_PEER_DIR)")
    if str(PEER_DIR) not in sys.path:
        sys.path.insert(0, str(PEER_DIR))
    import fluentd_peer

    if not fluentd_peer.available():
        missing_peer(f"fluentd-peer: Ruby packages not installed ({APT_HINT})")
    return fluentd_peer


def peer_workdir() -> Path:
    """A short directory for a FluentdPeer: serverengine puts a unix socket there, and pytest's
    tmp paths can exceed the 108-byte socket path limit. Removed at interpreter exit."""
    path = Path(tempfile.mkdtemp(prefix="fluentd-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def dry_run(config: Path, *plugin_dirs: Path, env: dict[str, str] | None = None) -> str:
    """`fluentd --dry-run -c CONFIG`; returns the log, asserts the exit code 0."""
    args = [str(PEER), "--dry-run", "-c", str(config)]
    for directory in plugin_dirs:
        args += ["-p", str(directory)]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"fluentd --dry-run {config.name} failed:\n{log[-3000:]}"
    return log


def make_certs(directory: Path) -> dict[str, Path]:
    """A CA and a certificate for 127.0.0.1 / localhost, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {n: directory / n for n in ("ca.pem", "server.crt", "server.key")}
    ca.cert_pem.write_to_path(str(paths["ca.pem"]))
    cert.private_key_pem.write_to_path(str(paths["server.key"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["server.crt"]))
    return paths


def forwarder(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The installed console script, with a clean environment plus `env`."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))
    }
    return subprocess.run(
        [str(FORWARDER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def json_lines(paths: list[Path]) -> list[dict[str, Any]]:
    """Every whole line Fluentd wrote; a last line without its newline is still being
    written (read while out_file appends) and is left for the next read."""
    return [
        json.loads(line) for path in paths for line in path.read_text().split("\n")[:-1] if line
    ]


# A staged (b) or queued (q) chunk of a file buffer: buffer.b<32 hex digits>.log (and .meta).
CHUNK_FILE = re.compile(r"\.[bq][0-9a-f]{32}\.")


def buffers_flushed(root: Path) -> bool:
    """No file-buffer chunk is left under `root`: Fluentd wrote out all it had taken in."""
    return not any(CHUNK_FILE.search(path.name) for path in root.rglob("*"))


def settled_lines(
    paths: Callable[[], list[Path]], count: int, buffers: Path, timeout: float = 60
) -> list[dict]:
    """The JSON lines Fluentd wrote, once there are `count` and no chunk is left in its file
    buffers under `buffers`. Call it when the sender is done: its events were acknowledged
    (in_forward acks once they are in a buffer chunk) or read (in_exec), so with the buffers
    empty every one of them, a duplicate too, is in the output."""
    wait_for(lambda: len(json_lines(paths())) >= count, timeout, f"{count} lines from Fluentd")
    wait_for(
        lambda: buffers_flushed(buffers), timeout, f"Fluentd to flush its buffers in {buffers}"
    )
    return json_lines(paths())


# What in_forward received, as JSON lines in one file per tag behind a file buffer (an ack
# then means "in the buffer", as with the shipped receivers). Format with out=DIRECTORY.
FILE_OUTPUT = """<match **>
  @type file
  path {out}/${{tag}}
  append true
  <format>
    @type json
  </format>
  <buffer tag>
    @type file
    path {out}/buffer
    flush_mode interval
    flush_interval 1s
    flush_at_shutdown true
  </buffer>
</match>
"""

# Fluentd's own v1 config parser, with embedded Ruby ("#{ENV['X']}") kept as written, dumped
# as JSON: the structure the packaging tests check is the one Fluentd reads.
_DUMP = r"""
require "json"
require "fluent/config"
class Fluent::Config::LiteralParser
  def eval_embedded_code(code) = "\#{#{code}}"
end
def dump(e) = { "name" => e.name, "arg" => e.arg, "params" => e.to_h,
                "children" => e.elements.map { |c| dump(c) } }
path = ARGV[0]
puts JSON.generate(dump(Fluent::Config.parse(File.read(path), File.basename(path),
                                             File.dirname(path), true)))
"""


def parse_config(path: Path) -> dict[str, Any]:
    """The config tree as Fluentd parses it: {name, arg, params, children}."""
    result = subprocess.run(
        ["ruby", "-I", str(PEER_DIR / "fluentd" / "lib"), "-e", _DUMP, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"Fluentd cannot parse {path.name}: {result.stderr[-2000:]}"
    return json.loads(result.stdout)
