"""Benchmark: the fake OpenAI API answers requests side by side. N requests with `--latency`
each, sent one after another and then all at once from N threads (one httpx pool), side by
side in one run; prints both wall times and the speed-up (N would be perfect overlap).

    PYTHONPATH=. python benchmarks/bench_fake_api.py [--requests 32] [--latency 0.4]

The test (tests/test_fake_api.py) checks only that requests overlap at all; how much they
overlap is a timing, measured here, where a loaded machine shows as a number, not a failure."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.events import make_events
from tests.fakes.openai_api import DEFAULT_ADMIN_KEY, FakeOpenAI

T0 = 1767225600  # 2026-01-01T00:00:00Z
PATH = "/organization/audit_logs"


def timed(requests: int, client: httpx.Client, threads: int) -> float:
    """Seconds for `requests` GETs from `threads` threads (each thread an equal share)."""
    statuses: list[int] = []

    def share(count: int) -> None:
        for _ in range(count):
            statuses.append(client.get(PATH).status_code)

    workers = [threading.Thread(target=share, args=(requests // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if statuses != [200] * requests:
        raise SystemExit(f"unexpected answers: {sorted(set(statuses))}")
    return elapsed


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmark_commands.py parses docs/benchmarks.md with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.4)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    events = make_events(50, start=T0, end=T0 + 10)
    with FakeOpenAI(events, latency=args.latency) as fake:
        headers = {"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}"}
        with httpx.Client(base_url=fake.base_url, headers=headers, timeout=60) as client:
            serial = timed(args.requests, client, threads=1)
            parallel = timed(args.requests, client, threads=args.requests)
        peak = fake.peak_concurrency
    print(f"{args.requests} requests, {args.latency:g} s latency each")
    print(f"  one after another: {serial:6.2f} s")
    print(f"  all at once:       {parallel:6.2f} s   (at most {peak} waiting at the same time)")
    print(f"  speed-up:          {serial / parallel:6.1f}x  (perfect overlap: {args.requests}x)")


if __name__ == "__main__":
    main()
