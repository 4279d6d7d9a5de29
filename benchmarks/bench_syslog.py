"""Benchmark: events/s through the syslog sink (udp, tcp, tls, relp, relp+tls) into a local
rsyslogd, batches of 1000. Run from the repo root: `python benchmarks/bench_syslog.py`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forwarder.sinks import Record, open_sink
from tests.fakes.rsyslog import Rsyslog

TYPES = ("api_key.created", "login.succeeded", "login.failed", "project.updated", "user.deleted")


def make_records(count: int, start: int = 0) -> list[Record]:
    """ECS-shaped documents of a realistic size (~700 bytes as JSON)."""
    records = []
    for i in range(start, start + count):
        event_type = TYPES[i % len(TYPES)]
        event_id = f"audit_log-{i:012d}"
        doc = {
            "@timestamp": "2025-06-01T12:00:00Z",
            "ecs": {"version": "9.0.0"},
            "event": {
                "id": event_id,
                "action": event_type,
                "kind": "event",
                "category": ["iam"],
                "type": ["change"],
                "outcome": "failure" if event_type.endswith("failed") else "success",
                "provider": "openai",
            },
            "user": {"id": f"user-{i % 97}", "email": f"person{i % 97}@example.com"},
            "source": {"ip": f"192.0.2.{i % 250}", "geo": {"country_iso_code": "US"}},
            "user_agent": {"original": "Mozilla/5.0 (X11; Linux x86_64) Chrome/125.0"},
            "organization": {"id": "org-abc123"},
            "openai": {"project": {"id": "proj_abc", "name": "Production"}, "n": i},
        }
        records.append(Record(id=event_id, type=event_type, effective_at=1748779200 + i, doc=doc))
    return records


def bench(peer: Rsyslog, transport: str, records: list[Record], batch: int) -> None:
    before = peer.count()
    sink = open_sink(peer.url(transport))
    sink.open()
    started, cpu_started = time.perf_counter(), time.process_time()
    for offset in range(0, len(records), batch):
        rejected = sink.write(records[offset : offset + batch])
        assert not rejected, rejected[0].reason
        if transport == "udp":
            # rsyslog's imudp must keep up or the kernel drops datagrams: pace per batch.
            peer.wait_for(before + offset + batch, timeout=60)
    sent = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    sink.close()
    peer.wait_for(before + len(records), timeout=300)
    landed = time.perf_counter() - started
    n = len(records)
    print(
        f"{transport:9s} {n:7d} events  write() {n / sent:8,.0f}/s  "
        f"written by rsyslog {n / landed:8,.0f}/s  "
        f"sink CPU {cpu / n * 1e6:5.1f} us/event (one free core: {n / cpu:9,.0f}/s)",
        flush=True,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--transports", default="tcp,tls,relp,relp+tls,udp", help="comma-separated list"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; rsyslog shares them")
    with tempfile.TemporaryDirectory() as tmp:
        peer = Rsyslog(Path(tmp)).start()
        try:
            records = make_records(args.events)
            for transport in args.transports.split(","):
                bench(peer, transport, records, args.batch)
        finally:
            peer.stop()


if __name__ == "__main__":
    main()
