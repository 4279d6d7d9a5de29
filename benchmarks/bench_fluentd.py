"""Benchmark: events/s through the Fluentd sink to the in-repo Forward server (in its own
process, acks on), plain, gzip, and TLS with shared key. Run: python benchmarks/bench_fluentd.py"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forwarder.sinks import Record, open_sink

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
            "dataset": "openai.audit",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--decode", action="store_true", help="have the server decode every entry (slower)"
    )
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
