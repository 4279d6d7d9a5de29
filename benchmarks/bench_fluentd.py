"""Benchmark: `run --once` end to end (read, map, deliver with ack, commit) into the Fluentd sink,
against the real Fluentd (../shared/peers/fluentd) and the in-repo Forward server, plain and
TLS + gzip + shared key, side by side with a `file:` sink on the same input in the same run.
`--sink-only` times the sink alone against the in-repo server. See docs/benchmarks.md."""

from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forwarder.sinks import Record, open_sink
from tests.fluentd_support import FILE_OUTPUT
from tests.peers import free_port

REPO = Path(__file__).resolve().parent.parent

BASE_TS = 1_732_000_000
KEY_ENV = "BENCH_FLUENTD_SHARED_KEY"


def ecs_like_doc(i: int) -> dict:
    """A document of the size and shape of a mapped ECS audit event (about 1 KB as msgpack)."""
    event_id = f"audit_log-{i:016x}"
    return {
        "@timestamp": "2024-11-19T07:06:40Z",
        "ecs": {"version": "9.1.0"},
        "event": {
            "id": event_id,
            "kind": "event",
            "category": ["iam", "configuration"],
            "type": ["creation", "user"],
            "action": "api_key.created",
            "outcome": "success",
            "provider": "openai",
            "dataset": "openai_audit_forwarder.audit",
            "created": "2024-11-19T07:06:41Z",
        },
        "organization": {"id": "org-2f8cBqmN0x1yGzT4ZnJ5R3kA"},
        "user": {
            "id": f"user-{i % 997:08d}",
            "email": f"person{i % 997}@example.com",
            "target": {"id": f"key_{i:012d}", "name": "ci deploy key"},
        },
        "source": {
            "ip": "203.0.113.17",
            "geo": {
                "country_iso_code": "US",
                "region_name": "California",
                "city_name": "San Francisco",
                "location": {"lat": 37.7749, "lon": -122.4194},
            },
            "as": {"number": 13335},
        },
        "user_agent": {"original": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/131.0"},
        "openai": {
            "audit": {
                "type": "api_key.created",
                "project": {"id": "proj_abc123", "name": "Production"},
                "api_key": {
                    "id": f"key_{i:012d}",
                    "data": {"scopes": ["/v1/chat/completions", "/v1/embeddings"]},
                },
                "actor": {"type": "session", "session": {"ip_address": "203.0.113.17"}},
            }
        },
        "related": {"ip": ["203.0.113.17"], "user": [f"person{i % 997}@example.com"]},
        "tags": ["openai", "audit"],
    }


def serve(conn: Connection, shared_key: str | None, cert_dir: str | None, decode: bool) -> None:
    """Child process: a ForwardServer that acks every chunk and keeps only counts; unless
    `decode`, it frames and counts entries without building them (to time the sink, not it)."""
    import ssl

    from tests.fakes.forward_server import ForwardServer

    context = None
    if cert_dir:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(f"{cert_dir}/server.pem")
    with ForwardServer(
        shared_key=shared_key, ssl_context=context, store=False, decode=decode
    ) as server:
        conn.send(server.port)
        conn.recv()
        conn.send((server.entry_count, len(server.acked_chunks), server.errors[:3]))


def run_case(name: str, records: list[Record], batch: int, decode: bool, **options: str) -> None:
    tls = options.pop("tls", "") == "1"
    shared_key = os.environ.get(KEY_ENV) if "shared_key_env" in options else None
    with tempfile.TemporaryDirectory() as cert_dir:
        if tls:
            import trustme

            ca = trustme.CA()
            ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
                f"{cert_dir}/server.pem"
            )
            ca.cert_pem.write_to_path(f"{cert_dir}/ca.pem")
            options["ca_file"] = f"{cert_dir}/ca.pem"
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=serve, args=(child, shared_key, cert_dir if tls else None, decode)
        )
        proc.start()
        try:
            port = parent.recv()
            query = "&".join(f"{k}={v}" for k, v in options.items())
            scheme = "fluentd+tls" if tls else "fluentd"
            sink = open_sink(f"{scheme}://127.0.0.1:{port}" + (f"?{query}" if query else ""))
            sink.write(records[:batch])  # connect and warm up outside the clock
            started, cpu_started = time.perf_counter(), time.process_time()
            for i in range(0, len(records), batch):
                sink.write(records[i : i + batch])
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            sink.close()
            parent.send("stop")
            received, acked, errors = parent.recv()
        finally:
            proc.join(timeout=30)
    expected = len(records) + batch
    status = "ok" if received == expected and not errors else f"MISMATCH {received}/{expected}"
    print(
        f"{name:<24} {len(records) / elapsed:>9,.0f} events/s  "
        f"(sink CPU {cpu / len(records) * 1e6:.1f} us/event = "
        f"{len(records) / cpu:,.0f} events/s per core; "
        f"{len(records):,} events, batches of {batch}, {acked} acked chunks, {status})",
        flush=True,
    )


def sink_only(args: argparse.Namespace) -> None:
    os.environ.setdefault(KEY_ENV, "benchmark-shared-key")
    # Distinct documents for a few thousand events, then reused: building 200,000 dicts in
    # Python would take longer than sending them.
    docs = [ecs_like_doc(i) for i in range(min(args.events, 5000))]
    records = [
        Record(
            id=f"audit_log-{i:016x}",
            type="api_key.created",
            effective_at=BASE_TS + i // 50,
            doc=docs[i % len(docs)],
        )
        for i in range(args.events)
    ]
    server = "decodes every entry" if args.decode else "frames and counts entries"
    print(
        f"Fluentd Forward sink -> in-repo ForwardServer in its own process ({server}), "
        f"{os.cpu_count()} CPUs, documents of ~{len(msgpack.packb(docs[0]))} bytes as msgpack",
        flush=True,
    )
    run_case("plain, acks", records, args.batch, args.decode)
    run_case("gzip, acks", records, args.batch, args.decode, compress="gzip")
    run_case(
        "tls + shared key, acks", records, args.batch, args.decode, tls="1", shared_key_env=KEY_ENV
    )


FLUENTD_CONFIG = """<source>
  @type forward
  port {plain}
  bind 127.0.0.1
</source>
<source>
  @type forward
  port {tls}
  bind 127.0.0.1
  <transport tls>
    cert_path {cert_dir}/server.crt
    private_key_path {cert_dir}/server.key
    min_version TLS1_2
    max_version TLS1_3
  </transport>
  <security>
    self_hostname fluentd-bench
    shared_key "#{{ENV['{key_env}']}}"
  </security>
</source>
{output}"""
# What the shipped receivers do (an ack means "in a file buffer"), or nothing at all (`null`:
# the receiver's own work out of the picture, leaving in_forward and the sink).
OUTPUTS = {
    "file": FILE_OUTPUT,
    "null": """<match **>
  @type null
</match>
""",
}


def start_in_repo_server(tls: bool, cert_dir: str) -> tuple[int, Connection, mp.Process]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    key = os.environ[KEY_ENV] if tls else None
    proc = ctx.Process(target=serve, args=(child, key, cert_dir if tls else None, False))
    proc.start()
    return parent.recv(), parent, proc


def run_once(work: Path, events_file: Path, sink: str, n: int, root: Path = REPO) -> float:
    """Wall seconds of `run --once` of the code in `root` from a fresh state; checks that all
    `n` were delivered."""
    state = work / f"state-{time.monotonic_ns()}.db"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "forwarder", "run", "--once", "--input", str(events_file),
         "--state", str(state), "--sink", sink],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    delivered = re.search(r"sweep done: (\d+) events delivered", result.stderr)
    if result.returncode != 0 or not delivered or int(delivered.group(1)) != n:
        raise SystemExit(f"{sink}: run failed: {result.stderr[-1500:]}")
    return elapsed


def end_to_end(args: argparse.Namespace) -> None:
    import trustme

    from tests.fakes.events import make_events
    from tests.fluentd_support import PEER_DIR, peer_workdir

    os.environ.setdefault(KEY_ENV, "benchmark-shared-key")
    work = Path(tempfile.mkdtemp(prefix="bench-fluentd-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    cert_dir = work / "certs"
    cert_dir.mkdir()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_dir / "server.pem"))
    cert.private_key_pem.write_to_path(str(cert_dir / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(cert_dir / "server.crt"))
    ca.cert_pem.write_to_path(str(cert_dir / "ca.pem"))
    now = int(time.time())
    events = make_events(args.events, start=now - 20 * 3600, end=now - 3600, seed=11)
    events_file = work / "events.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    tls_params = f"ca_file={cert_dir}/ca.pem&compress=gzip&shared_key_env={KEY_ENV}"

    cases: dict[str, str] = {}
    servers = []
    for tls in (False, True):
        port, conn, proc = start_in_repo_server(tls, str(cert_dir))
        servers.append((conn, proc))
        name = "in-repo server, " + ("tls+gzip+key" if tls else "plain")
        cases[name] = (
            f"fluentd+tls://127.0.0.1:{port}?{tls_params}" if tls else f"fluentd://127.0.0.1:{port}"
        )
    peer = None
    sys.path.insert(0, str(PEER_DIR))
    try:
        import fluentd_peer

        if not fluentd_peer.available():
            raise ImportError("Ruby packages missing")
        ports = {"plain": free_port(), "tls": free_port()}
        output = OUTPUTS[args.fluentd_output].format(out=work / "fluentd-out")
        config = FLUENTD_CONFIG.format(**ports, cert_dir=cert_dir, key_env=KEY_ENV, output=output)
        peer = fluentd_peer.FluentdPeer(config, peer_workdir()).start()
        real = f"real Fluentd 1.18 ({args.fluentd_output})"
        cases[f"{real}, plain"] = f"fluentd://127.0.0.1:{ports['plain']}?tag=bench"
        cases[f"{real}, tls+gzip+key"] = (
            f"fluentd+tls://127.0.0.1:{ports['tls']}?tag=bench&{tls_params}"
        )
    except (ImportError, RuntimeError) as exc:
        print(f"real Fluentd skipped: {exc}", flush=True)

    file_out = work / "file-out"
    file_out.mkdir()
    roots = [(REPO, "")]
    if args.compare:  # the same cases with another checkout's code, e.g. main before a change
        roots.append((Path(args.compare).resolve(), f" [{Path(args.compare).name}]"))
    best: dict[str, float] = {}
    print(
        f"run --once end to end, {args.events:,} events, ECS, batches of 1000, best of "
        f"{args.repeat} interleaved runs, {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    try:
        for _ in range(args.repeat):
            file_sink = f"file:{file_out}/{time.monotonic_ns()}.jsonl"
            for name, sink in [("file: sink", file_sink), *cases.items()]:
                for root, label in roots:
                    seconds = run_once(work, events_file, sink, args.events, root)
                    best[name + label] = min(best.get(name + label, seconds), seconds)
    finally:
        if peer is not None:
            peer.stop()
        for conn, proc in servers:
            conn.send("stop")
            conn.recv()
            proc.join(timeout=30)
    print(f"{'case':<48} {'events/s':>9}  {'wall s':>7}  cost vs file:", flush=True)
    for name, seconds in best.items():
        base = best["file: sink" + next(lb for _, lb in reversed(roots) if name.endswith(lb))]
        print(f"{name:<48} {args.events / seconds:>9,.0f}  {seconds:>7.2f}  {seconds / base:.2f}x")


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmark_commands.py parses docs/benchmarks.md with it)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--fluentd-output",
        choices=sorted(OUTPUTS),
        default="file",
        help="the real Fluentd's output: file (with a file buffer, as shipped) or null",
    )
    parser.add_argument("--sink-only", action="store_true", help="the sink alone, in-repo server")
    parser.add_argument(
        "--compare",
        metavar="DIR",
        help="also run every case with the code of this checkout (before/after in one run)",
    )
    parser.add_argument(
        "--decode", action="store_true", help="have the server decode every entry (slower)"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.sink_only:
        args.events = args.events or 200_000
        sink_only(args)
    else:
        args.events = args.events or 30_000
        end_to_end(args)


if __name__ == "__main__":
    main()
