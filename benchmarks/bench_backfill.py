"""Backfill benchmark against the fake OpenAI API in its own process: events/s of the real
`backfill` command at --concurrency 1 and 8 with 100 ms per page (target: 8 is at least 5x
faster), and the forwarder's peak RSS over a 1,000,000-event backfill (target: under 150 MB).

    PYTHONPATH=. python benchmarks/bench_backfill.py [--events 30000] [--latency 0.1]
        [--rss-events 1000000] [--rss-latency 0.005] [--skip-rss] [--schema ecs]

Every run is checked: the file sink must hold exactly the expected number of lines, each with a
distinct event id, or the benchmark fails. Only organization-scoped event types are served
(tenant.* types are listed only under tenant_only=true; the backfill runs --without-tenant).
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.events import EVENT_TYPES, is_tenant_scoped, iter_events  # noqa: E402

T0 = 1767225600  # 2026-01-01T00:00:00Z
ADMIN_KEY = "sk-admin-BENCH-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
ORG_TYPES = [t for t in EVENT_TYPES if not is_tenant_scoped(t)]
ID_PATHS = {"ecs": ("event", "id"), "ocsf": ("metadata", "original_event_uid"), "raw": ("id",)}


@dataclass
class Run:
    label: str
    expected: int
    lines: int
    distinct_ids: int
    wall: float  # seconds, process start to exit (includes interpreter start-up)
    reported_rate: float | None  # the command's own summary line (backfill loop only)
    peak_rss_kb: int  # ru_maxrss of the forwarder process, from wait4
    rss_trace: list[tuple[float, int]] = field(default_factory=list)  # (seconds, VmRSS kB)

    @property
    def wall_rate(self) -> float:
        return self.expected / self.wall

    @property
    def rate(self) -> float:
        return self.reported_rate or self.wall_rate


def write_events(path: Path, n: int, start: int, end: int) -> None:
    with path.open("wb") as fh:
        chunk: list[bytes] = []
        for event in iter_events(
            n, start=start, end=end, seed=11, same_second_ratio=0.3, types=ORG_TYPES
        ):
            chunk.append(orjson.dumps(event))
            if len(chunk) >= 10_000:
                fh.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            fh.write(b"\n".join(chunk) + b"\n")


@contextmanager
def fake_api(events_file: Path, start: int, end: int, latency: float) -> Iterator[str]:
    """The fake in another process; yields its base URL once it has loaded every event."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tests.fakes.openai_api", "--port", "0",
            "--events-file", str(events_file), "--start", str(start), "--end", str(end),
            "--latency", str(latency), "--admin-key", ADMIN_KEY,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=1800):
                raise SystemExit("fake API: no READY line within 30 minutes")
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            raise SystemExit(f"fake API did not start (exit {proc.poll()}): {line}")
        yield line[1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def trace_rss(pid: int, trace: list[tuple[float, int]], done: threading.Event) -> None:
    started = time.monotonic()
    while not done.wait(1.0):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if match:
            trace.append((time.monotonic() - started, int(match.group(1))))


def count_output(path: Path, schema: str) -> tuple[int, int]:
    """(lines, distinct event ids) of the NDJSON the file sink wrote."""
    keys = ID_PATHS.get(schema)
    lines = 0
    ids: set[str] = set()
    with path.open("rb") as fh:
        for line in fh:
            lines += 1
            if keys:
                value = orjson.loads(line)
                for key in keys:
                    value = value[key]
                ids.add(value)
    return lines, len(ids) if keys else lines


def backfill(
    label: str,
    base_url: str,
    tmp: Path,
    *,
    start: int,
    end: int,
    expected: int,
    concurrency: int,
    schema: str,
) -> Run:
    """Run the real CLI once on a fresh state and output file; fail unless it is complete."""
    out, state, log = tmp / f"{label}.ndjson", tmp / f"{label}.sqlite", tmp / f"{label}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))}
    env.update(
        OPENAI_ADMIN_KEY=ADMIN_KEY,
        OPENAI_BASE_URL=base_url,
        PYTHONPATH=str(ROOT),
        XDG_STATE_HOME=str(tmp / "xdg"),
    )
    command = [
        sys.executable, "-m", "forwarder", "backfill", "--since", str(start),
        "--until", str(end), "--window", "1h", "--concurrency", str(concurrency),
        "--sink", f"file:{out}", "--schema", schema, "--state", str(state), "--without-tenant",
    ]  # fmt: skip
    trace: list[tuple[float, int]] = []
    done = threading.Event()
    with log.open("wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        sampler = threading.Thread(target=trace_rss, args=(proc.pid, trace, done), daemon=True)
        sampler.start()
        # wait4 gives the rusage of this one child: its own peak RSS, not the fake's.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{label}: backfill exited {proc.returncode}:\n{text[-2000:]}")
    match = re.search(r"\((\d+) events/s\)", text)
    lines, distinct = count_output(out, schema)
    print(
        f"  {label}: {lines:,} lines ({distinct:,} distinct ids, expected {expected:,}) "
        f"in {wall:.1f}s; summary: {text.strip().splitlines()[-1] if text.strip() else '-'}",
        flush=True,
    )
    if lines != expected or distinct != expected:
        raise SystemExit(f"{label}: incomplete or duplicated output, see {out}")
    out.unlink()
    return Run(
        label,
        expected,
        lines,
        distinct,
        wall,
        float(match.group(1)) if match else None,
        usage.ru_maxrss,  # kB on Linux
        trace,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmark_commands.py parses docs/benchmarks.md with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000, help="events for the speed runs")
    parser.add_argument("--days", type=float, default=2.0, help="time span of the speed runs")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per page (speed)")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated speed runs")
    parser.add_argument("--rss-events", type=int, default=1_000_000)
    parser.add_argument("--rss-days", type=float, default=30.0)
    parser.add_argument("--rss-latency", type=float, default=0.005, help="seconds per page")
    parser.add_argument("--rss-concurrency", type=int, default=8)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--schema", default="ecs", choices=["ecs", "ocsf", "raw"])
    parser.add_argument("--tmp", help="work directory (default: a temporary one)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-backfill-") as tmp_name:
        tmp = Path(tmp_name)
        runs: list[Run] = []
        end = T0 + int(args.days * 86400)
        events_file = tmp / "speed.jsonl"
        write_events(events_file, args.events, T0, end)
        print(
            f"speed: {args.events:,} events over {args.days:g} days, window 1h, "
            f"{args.latency * 1000:g} ms per page, schema {args.schema}",
            flush=True,
        )
        with fake_api(events_file, T0, end, args.latency) as base_url:
            for level in levels:
                runs.append(
                    backfill(
                        f"concurrency-{level}",
                        base_url,
                        tmp,
                        start=T0,
                        end=end,
                        expected=args.events,
                        concurrency=level,
                        schema=args.schema,
                    )
                )
        events_file.unlink()

        rss: Run | None = None
        if not args.skip_rss:
            end = T0 + int(args.rss_days * 86400)
            events_file = tmp / "rss.jsonl"
            began = time.perf_counter()
            write_events(events_file, args.rss_events, T0, end)
            print(
                f"rss: {args.rss_events:,} events over {args.rss_days:g} days written in "
                f"{time.perf_counter() - began:.0f}s; loading the fake "
                f"({args.rss_latency * 1000:g} ms per page) ...",
                flush=True,
            )
            began = time.perf_counter()
            with fake_api(events_file, T0, end, args.rss_latency) as base_url:
                print(f"  fake ready in {time.perf_counter() - began:.0f}s", flush=True)
                events_file.unlink()
                rss = backfill(
                    f"rss-{args.rss_events}",
                    base_url,
                    tmp,
                    start=T0,
                    end=end,
                    expected=args.rss_events,
                    concurrency=args.rss_concurrency,
                    schema=args.schema,
                )
            step = max(1, len(rss.rss_trace) // 10)
            points = rss.rss_trace[::step] + rss.rss_trace[-1:]
            print(
                "  forwarder RSS over time: "
                + ", ".join(f"{t:.0f}s {kb / 1024:.0f} MB" for t, kb in points),
                flush=True,
            )

    print()
    print(f"{'run':<22}{'events':>11}{'lines ok':>10}{'events/s':>11}{'wall s':>9}{'peak RSS':>11}")
    for run in runs:
        print(
            f"{run.label:<22}{run.expected:>11,}{'yes':>10}{run.rate:>11,.0f}"
            f"{run.wall:>9.1f}{run.peak_rss_kb / 1024:>8.0f} MB"
        )
    if rss is not None:
        print(
            f"{rss.label:<22}{rss.expected:>11,}{'yes':>10}{rss.rate:>11,.0f}"
            f"{rss.wall:>9.1f}{rss.peak_rss_kb / 1024:>8.0f} MB"
        )
    print()
    print("events/s: the command's own summary (backfill loop, without interpreter start-up);")
    print(f"pages: {args.latency * 1000:g} ms latency for the speed runs", end="")
    if rss is not None:
        print(f", {args.rss_latency * 1000:g} ms for the RSS run (to keep it short)")
    else:
        print()
    by_level = {int(r.label.split("-")[1]): r for r in runs}
    if 1 in by_level and 8 in by_level:
        ratio = by_level[8].rate / by_level[1].rate
        wall_ratio = by_level[1].wall / by_level[8].wall
        verdict = "met" if ratio >= 5 else "MISSED"
        print(
            f"speed-up concurrency 8 / 1: {ratio:.1f}x (wall clock incl. start-up: "
            f"{wall_ratio:.1f}x); target >= 5x: {verdict}"
        )
    if rss is not None:
        mb = rss.peak_rss_kb / 1024
        verdict = "met" if mb < 150 else "MISSED"
        print(
            f"peak RSS of the forwarder over {rss.expected:,} events: {mb:.0f} MB; "
            f"target < 150 MB: {verdict}"
        )


if __name__ == "__main__":
    main()
