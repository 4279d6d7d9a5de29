"""The garbage collector's first-generation threshold, measured side by side: the real
commands run with each threshold in turn (interleaved, `--runs` times each), and the medians
are printed. It decides the one GC policy of the forwarder (`forwarder/process.py`).

    PYTHONPATH=. python benchmarks/bench_gc.py [--thresholds 700,10000] [--runs 7]
        [--events 100000] [--backfill-events 200000] [--concurrency 8] [--tmp DIR]

- `run --once --input FILE --sink file:OUT` (fresh default state each time): CPU and wall s;
- `backfill --concurrency N` from the fake API with no latency: events/s (the command's own
  summary) and the forwarder's peak RSS (VmHWM, sampled).

Each run starts the forwarder through a wrapper that sets the threshold and then makes
`gc.set_threshold` a no-op, so the figure is that of the threshold named whatever the code
under test would set. 700 is CPython's default.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_backfill import ADMIN_KEY, T0, fake_api, write_events  # noqa: E402
from benchmarks.bench_pipeline import check_output, load  # noqa: E402

WRAPPER = (
    "import gc, runpy, sys\n"
    "gc.set_threshold({threshold}, 10, 10)\n"
    "gc.set_threshold = lambda *args: None\n"
    "sys.argv = ['openai-audit-forwarder', *sys.argv[1:]]\n"
    "runpy.run_module('forwarder', run_name='__main__', alter_sys=True)\n"
)


def forwarder(threshold: int) -> list[str]:
    return [sys.executable, "-c", WRAPPER.format(threshold=threshold)]


def peak_rss(pid: int, peak: list[int], done: threading.Event) -> None:
    """The process's VmHWM, sampled until it exits. (`ru_maxrss` from wait4 would start at
    this process's size at the fork, which holds the generated events.)"""
    while not done.wait(0.05):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if match:
            peak[0] = max(peak[0], int(match.group(1)))


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, str]:
    """(wall s, CPU s, peak RSS kB, stderr) of one run; exits on a failed run."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak, done = [0], threading.Event()
    sampler = threading.Thread(target=peak_rss, args=(proc.pid, peak, done), daemon=True)
    sampler.start()
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    done.set()
    sampler.join()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[3:6]} failed:\n{stderr[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak[0], stderr


def print_table(title: str, rate: str, rows: dict[int, list[tuple[float, float, float]]]) -> None:
    """Medians per threshold of (wall s, `rate`, peak MB), and `rate` of each run."""
    print(title)
    print(f"{'threshold':>10}{'wall s':>9}{rate:>9}{'peak MB':>9}   {rate} of each run")
    for threshold, runs in rows.items():
        wall, value, peak = (statistics.median(run[i] for run in runs) for i in range(3))
        digits = 2 if value < 100 else 0
        each = " ".join(f"{run[1]:.{digits}f}" for run in runs)
        print(f"{threshold:>10}{wall:>9.2f}{value:>9.{digits}f}{peak:>9.0f}   {each}")


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmark_commands.py parses docs/benchmarks.md with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="700,10000")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--backfill-events", type=int, default=200_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tmp")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    thresholds = [int(t) for t in args.thresholds.split(",")]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_"))}
    env["PYTHONPATH"] = str(ROOT)
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-gc-") as tmp_name:
        tmp = Path(tmp_name)
        end = T0 + int(args.days * 86400)
        run_input, fake_input = tmp / "run.jsonl", tmp / "fake.jsonl"
        write_events(run_input, args.events, T0, end)
        write_events(fake_input, args.backfill_events, T0, end)
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load {load()}", flush=True)
        with fake_api(fake_input, T0, end, 0.0) as base_url:
            api = {**env, "OPENAI_ADMIN_KEY": ADMIN_KEY, "OPENAI_BASE_URL": base_url}
            for attempt in range(args.runs):
                for threshold in thresholds:
                    out = tmp / "run.ndjson"
                    command = [*forwarder(threshold), "run", "--once", "-q"]
                    command += ["--input", str(run_input), "--sink", f"file:{out}"]
                    xdg = {"XDG_STATE_HOME": str(tmp / f"xdg-{threshold}-{attempt}")}
                    wall, cpu, rss, _ = timed(command, {**env, **xdg}, tmp)
                    check_output("run", out, args.events, distinct=True)
                    results.setdefault(("run", threshold), []).append((wall, cpu, rss / 1024))

                    out = tmp / "backfill.ndjson"
                    command = [*forwarder(threshold), "backfill", "--since", str(T0)]
                    command += ["--until", str(end), "--window", "1h", "--without-tenant"]
                    command += ["--concurrency", str(args.concurrency), "--sink", f"file:{out}"]
                    command += ["--state", str(tmp / f"bf-{threshold}-{attempt}.db")]
                    wall, cpu, rss, stderr = timed(command, api, tmp)
                    check_output("backfill", out, args.backfill_events, distinct=True)
                    rate = re.search(r"\((\d+) events/s\)", stderr)
                    assert rate, stderr[-500:]
                    results.setdefault(("backfill", threshold), []).append(
                        (wall, float(rate.group(1)), rss / 1024)
                    )
                print(f"  round {attempt + 1}/{args.runs} done; load {load()}", flush=True)

    print(f"\nmedians of {args.runs} interleaved runs; load after: {load()}")
    print_table(
        f"run --once --input ({args.events:,} events)",
        "CPU s",
        {t: results[("run", t)] for t in thresholds},
    )
    print_table(
        f"backfill --concurrency {args.concurrency} ({args.backfill_events:,} events, fake)",
        "ev/s",
        {t: results[("backfill", t)] for t in thresholds},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
