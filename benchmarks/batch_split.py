"""Where one batch's time goes in `run --once --input` (in process, timers around the calls):
rendering (map + serialize), the sinks' writes (for Fluentd: send and wait for the ack), the
commit, and the rest; into a `file:` sink or the real Fluentd with a file buffer.

    python benchmarks/batch_split.py [--events 100000] [--sink file|fluentd] [--root DIR]

`--root DIR` times the code of another checkout (e.g. main) with this script's helpers."""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def timer(totals: dict[str, float], key: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - started

    return timed


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmark_commands.py parses docs/benchmarks.md with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--sink", choices=("file", "fluentd"), default="fluentd")
    parser.add_argument("--root", default=str(REPO), help="checkout whose code is timed")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    sys.path[:0] = [str(REPO)]
    from benchmarks.bench_fluentd import FLUENTD_CONFIG, OUTPUTS
    from tests.fakes.events import make_events
    from tests.fluentd_support import PEER_DIR, peer_workdir
    from tests.peers import free_port

    root = str(Path(args.root).resolve())
    sys.path.insert(0, root)  # the forwarder timed: the helpers' import of it is dropped
    for name in [n for n in sys.modules if n.split(".")[0] in ("forwarder", "mappings")]:
        del sys.modules[name]
    import forwarder.delivery as delivery
    import forwarder.state as state
    from forwarder.cli import cli

    assert delivery.__file__.startswith(root), delivery.__file__

    work = Path(tempfile.mkdtemp(prefix="batch-split-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    now = int(time.time())
    events = make_events(args.events, start=now - 20 * 3600, end=now - 3600, seed=11)
    source = work / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))

    totals = {"render": 0.0, "sink writes": 0.0, "commit": 0.0}
    delivery.Delivery._render = timer(totals, "render", delivery.Delivery._render)
    state.State.commit = timer(totals, "commit", state.State.commit)
    retry = delivery.Delivery._retry

    def write(self: Any, sink: Any, action: Any) -> Any:  # _retry around sink.write only
        if action.__name__ != "<lambda>":
            return retry(self, sink, action)
        return timer(totals, "sink writes", retry)(self, sink, action)

    delivery.Delivery._retry = write
    peer = None
    if args.sink == "fluentd":
        sys.path.insert(0, str(PEER_DIR))
        import fluentd_peer

        port = free_port()
        plain = FLUENTD_CONFIG.split("<source>")[1].replace("{plain}", str(port))
        output = OUTPUTS["file"].format(out=work / "fluentd-out")
        peer = fluentd_peer.FluentdPeer(f"<source>{plain}{output}", peer_workdir()).start()
        sink = f"fluentd://127.0.0.1:{port}?tag=bench"
    else:
        sink = f"file:{work}/out.jsonl"
    command = ["run", "--once", "-q", "--input", str(source), "--state", str(work / "s.db")]
    started = time.perf_counter()
    try:
        cli([*command, "--sink", sink], standalone_mode=False)
    finally:
        total = time.perf_counter() - started
        if peer is not None:
            peer.stop()
    batches = args.events / 1000
    parts = [f"{key} {seconds / batches * 1000:.1f} ms" for key, seconds in totals.items()]
    rest = (total - sum(totals.values())) / batches * 1000
    print(
        f"{Path(root).name}, {args.sink}: {total:.2f} s; per batch of 1,000: "
        f"{', '.join(parts)}, rest {rest:.1f} ms (read, check, take_new, state, start-up)"
    )


if __name__ == "__main__":
    main()
