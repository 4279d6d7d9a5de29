"""What the pipeline costs around its mapper, on one input of 200,000 events, measured side by
side in one run (the commands interleaved, the fastest of --runs counts):

- `map --schema ecs FILE -o OUT`, file to file: the reference;
- `run --once --input FILE --sink file:OUT` with the default state (target: at most 1.5x map);
- `backfill --concurrency 8` of the same events from the fake API with no latency
  (target: at least 20,000 events/s);

then the peak RSS of a 1,000,000-event backfill from the fake with no latency (target: under
150 MB; --skip-rss to leave it out, it takes a few minutes).

    PYTHONPATH=. python benchmarks/bench_pipeline.py [--events 200000] [--runs 3]
        [--concurrency 8] [--rss-events 1000000] [--skip-rss] [--tmp DIR] [--compare DIR]

`--compare DIR` also times `run --once --input` with the code of another checkout (e.g. main
before a change), interleaved with the others: before and after in one run.

Every run is checked: each output holds exactly one line per event, with distinct ids for `run`
and `backfill`. The machine may be shared: the load average is printed before and after, and
the ratio to `map` is the figure that compares across machines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_backfill import (  # noqa: E402
    T0,
    backfill,
    count_output,
    fake_api,
    write_events,
)

RUN_TARGET = 1.5  # run --once --input / map, at most
BACKFILL_TARGET = 20_000  # events/s, at least
RSS_TARGET_MB = 150


@dataclass
class Timing:
    wall: float  # seconds, process start to exit
    cpu: float  # user + system seconds of the process
    peak_rss_kb: int


def timed(command: list[str], env: dict[str, str], cwd: Path) -> Timing:
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(command[2:5])} exited {code}:\n{stderr.decode()[-2000:]}")
    return Timing(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def check_output(label: str, path: Path, expected: int, distinct: bool) -> None:
    lines, ids = count_output(path, "ecs")
    if lines != expected or (distinct and ids != expected):
        raise SystemExit(f"{label}: {lines:,} lines, {ids:,} distinct ids; expected {expected:,}")
    path.unlink()


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmark_commands.py parses docs/benchmarks.md with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--days", type=float, default=7.0, help="time span of the events")
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (fastest counts)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rss-events", type=int, default=1_000_000)
    parser.add_argument("--rss-days", type=float, default=30.0)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--tmp", help="work directory (default: a temporary one)")
    parser.add_argument("--compare", metavar="DIR", help="also time `run` with this checkout")
    return parser


def main() -> int:
    args = build_parser().parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))}
    env["PYTHONPATH"] = str(ROOT)
    forwarder = [sys.executable, "-m", "forwarder"]
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        end = T0 + int(args.days * 86400)
        events = tmp / "events.jsonl"
        write_events(events, args.events, T0, end)
        n = args.events
        print(
            f"{n:,} events over {args.days:g} days ({events.stat().st_size / n:.0f} bytes each), "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load before: {load()}",
            flush=True,
        )
        walls: dict[str, list[float]] = {"map": [], "run": [], "backfill": []}
        cpus: dict[str, list[float]] = {"map": [], "run": []}
        rates: list[float] = []
        with fake_api(events, T0, end, 0.0) as base_url:
            for attempt in range(1, args.runs + 1):
                out = tmp / "map.ndjson"
                command = [*forwarder, "map", "--schema", "ecs", str(events), "-o", str(out)]
                timing = timed(command, env, tmp)
                check_output("map", out, n, distinct=False)
                walls["map"].append(timing.wall)
                cpus["map"].append(timing.cpu)

                out = tmp / "run.ndjson"
                xdg = tmp / f"xdg-{attempt}"  # the default state, fresh each time
                command = [*forwarder, "run", "--once", "-q", "--input", str(events)]
                command += ["--sink", f"file:{out}"]
                timing = timed(command, {**env, "XDG_STATE_HOME": str(xdg)}, tmp)
                check_output("run", out, n, distinct=True)
                walls["run"].append(timing.wall)
                cpus["run"].append(timing.cpu)

                if args.compare:
                    xdg = tmp / f"xdg-compare-{attempt}"
                    other = {**env, "PYTHONPATH": str(Path(args.compare).resolve())}
                    timing = timed(command, {**other, "XDG_STATE_HOME": str(xdg)}, tmp)
                    check_output("run (compare)", out, n, distinct=True)
                    walls.setdefault("compare", []).append(timing.wall)
                    cpus.setdefault("compare", []).append(timing.cpu)

                run = backfill(
                    f"backfill-{attempt}",
                    base_url,
                    tmp,
                    start=T0,
                    end=end,
                    expected=n,
                    concurrency=args.concurrency,
                    schema="ecs",
                )
                walls["backfill"].append(run.wall)
                rates.append(run.rate)
        after = load()

        rss = None
        if not args.skip_rss:
            rss_end = T0 + int(args.rss_days * 86400)
            rss_events = tmp / "rss.jsonl"
            write_events(rss_events, args.rss_events, T0, rss_end)
            print(f"loading {args.rss_events:,} events into the fake ...", flush=True)
            with fake_api(rss_events, T0, rss_end, 0.0) as base_url:
                rss_events.unlink()
                rss = backfill(
                    f"rss-{args.rss_events}",
                    base_url,
                    tmp,
                    start=T0,
                    end=rss_end,
                    expected=args.rss_events,
                    concurrency=args.concurrency,
                    schema="ecs",
                )

    map_wall, run_wall = min(walls["map"]), min(walls["run"])
    map_cpu, run_cpu = min(cpus["map"]), min(cpus["run"])
    rate = max(rates)
    print(f"\nfastest of {args.runs} interleaved runs; load after: {after}")
    print(f"{'command':<44}{'wall s':>8}{'x map':>7}{'CPU s':>8}{'x map':>7}{'events/s':>10}")
    print(
        f"{'map --schema ecs FILE -o OUT':<44}{map_wall:>8.2f}{1:>7.2f}"
        f"{map_cpu:>8.2f}{1:>7.2f}{n / map_wall:>10,.0f}"
    )
    print(
        f"{'run --once --input FILE --sink file:OUT':<44}{run_wall:>8.2f}"
        f"{run_wall / map_wall:>7.2f}{run_cpu:>8.2f}{run_cpu / map_cpu:>7.2f}{n / run_wall:>10,.0f}"
    )
    if args.compare:
        label = f"  the same, code of {Path(args.compare).resolve().name}"
        wall, cpu = min(walls["compare"]), min(cpus["compare"])
        print(
            f"{label:<44}{wall:>8.2f}{wall / map_wall:>7.2f}"
            f"{cpu:>8.2f}{cpu / map_cpu:>7.2f}{n / wall:>10,.0f}"
        )
    print(
        f"{f'backfill --concurrency {args.concurrency} (fake, no latency)':<44}"
        f"{min(walls['backfill']):>8.2f}{min(walls['backfill']) / map_wall:>7.2f}"
        f"{'':>8}{'':>7}{rate:>10,.0f}"
    )
    print("(backfill events/s: the command's own summary, without interpreter start-up)\n")
    ratio = run_wall / map_wall
    print(
        f"run --once --input / map: {ratio:.2f}x; target <= {RUN_TARGET}x: "
        f"{'met' if ratio <= RUN_TARGET else 'MISSED'}"
    )
    print(
        f"backfill --concurrency {args.concurrency}: {rate:,.0f} events/s; target >= "
        f"{BACKFILL_TARGET:,}: {'met' if rate >= BACKFILL_TARGET else 'MISSED'}"
    )
    if rss is not None:
        mb = rss.peak_rss_kb / 1024
        print(
            f"backfill of {rss.expected:,} events: peak RSS {mb:.0f} MB, {rss.rate:,.0f} events/s;"
            f" target < {RSS_TARGET_MB} MB: {'met' if mb < RSS_TARGET_MB else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
