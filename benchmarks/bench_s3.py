"""Throughput of the S3 sink against a local moto server: events/s for gzip NDJSON and for
OCSF Parquet, written in collector-sized batches. Run from the repo root:

    python benchmarks/bench_s3.py [--events 100000] [--batch 5000] [--in-process]

moto runs in its own process by default (as a real endpoint would), so that the server's work
does not compete with the sink for this interpreter's GIL; --in-process uses moto's
ThreadedMotoServer inside this process, as the tests do.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from moto.server import ThreadedMotoServer

from forwarder.sinks import Record, open_sink
from tests.peers import free_port

BASE = 1_709_251_200  # 2024-03-01T00:00:00Z


def ecs_doc(i: int, rid: str, ts: int) -> dict[str, Any]:
    return {
        "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
        "event": {
            "id": rid,
            "action": "api_key.created",
            "category": ["iam"],
            "type": ["creation"],
            "outcome": "success",
            "kind": "event",
        },
        "user": {"id": f"user-{i % 50}", "email": f"user{i % 50}@example.com"},
        "source": {"ip": "192.0.2.10", "geo": {"country_iso_code": "NL", "city_name": "Delft"}},
        "organization": {"id": "org-123"},
        "openai": {"project": {"id": "proj_abc", "name": "prod"}, "api_key": {"id": f"key_{i}"}},
        "message": "api_key.created by user",
    }


def ocsf_doc(i: int, rid: str, ts: int) -> dict[str, Any]:
    class_uid = (3001, 3002, 6003)[i % 3]
    return {
        "class_uid": class_uid,
        "category_uid": class_uid // 1000,
        "activity_id": 1,
        "type_uid": class_uid * 100 + 1,
        "time": ts * 1000,
        "severity_id": 1,
        "status_id": 1,
        "message": "api_key.created by user",
        "metadata": {
            "version": "1.8.0",
            "uid": rid,
            "original_event_uid": rid,
            "tenant_uid": "org-123",
            "product": {"name": "OpenAI Audit Log", "vendor_name": "OpenAI"},
        },
        "actor": {"user": {"uid": f"user-{i % 50}", "email_addr": f"user{i % 50}@example.com"}},
        "src_endpoint": {"ip": "192.0.2.10", "location": {"country": "NL", "city": "Delft"}},
        "api": {"operation": "api_key.created"},
        "unmapped": {"project": {"id": "proj_abc"}},
    }


def records(n: int, make: Any) -> list[Record]:
    out = []
    for i in range(n):
        rid = f"audit_log-{i:08d}"
        ts = BASE + i * 2
        out.append(Record(id=rid, type="api_key.created", effective_at=ts, doc=make(i, rid, ts)))
    return out


def run(url: str, schema: str, data: list[Record], batch: int) -> float:
    sink = open_sink(url, schema)
    sink.open()
    start = time.perf_counter()
    for i in range(0, len(data), batch):
        sink.write(data[i : i + batch])
    elapsed = time.perf_counter() - start
    sink.close()
    return len(data) / elapsed


def start_moto(port: int, in_process: bool) -> Callable[[], None]:
    """Start moto on 127.0.0.1:port; return the function that stops it."""
    if in_process:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        return server.stop
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("moto server did not start") from None
            time.sleep(0.1)

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=10)

    return stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--in-process", action="store_true", help="moto in this process")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ[name] = value
    port = free_port()
    stop = start_moto(port, args.in_process)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        query = f"endpoint_url={endpoint}&region=us-east-1"
        ndjson = run(f"s3://bench/nd?{query}", "ecs", records(args.events, ecs_doc), args.batch)
        where = "moto in-process" if args.in_process else "moto in its own process"
        detail = f"{args.events:,} events, batches of {args.batch:,}, {where}"
        print(f"s3 ndjson  : {ndjson:>9,.0f} events/s ({detail})")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            print("s3 parquet : skipped (pip install 'openai-audit-forwarder[parquet]')")
            return
        parquet_url = f"s3://bench/?{query}&format=parquet&source=openai&account_id=123456789012"
        parquet = run(parquet_url, "ocsf", records(args.events, ocsf_doc), args.batch)
        print(f"s3 parquet : {parquet:>9,.0f} events/s ({detail})")
    finally:
        stop()


if __name__ == "__main__":
    main()
