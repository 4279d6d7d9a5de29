"""Rank the functions of a py-spy profile recorded with `-f raw` (one line per stack and its
sample count) by the share of samples they are on the stack (inclusive) and on top (own),
counting only the stacks that pass through FUNCTION when it is given:

    python benchmarks/profile_rank.py s3.prof record_batch [--top 25]

(FUNCTION as py-spy names it: `_spool_write` or `S3Sink._spool_write`.)
"""

from __future__ import annotations

import argparse
from collections import Counter


def frame_name(frame: str) -> str:
    """`function (file.py)` of a py-spy frame `function (path/file.py:line)`."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})"


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmark_commands.py parses docs/benchmarks.md with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("function", nargs="?", help="only stacks through this function")
    parser.add_argument("--top", type=int, default=25)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with open(args.profile) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            frames = [frame_name(f) for f in stack.split(";")]
            if args.function:
                names = [f.split(" (")[0] for f in frames]
                through = [
                    i
                    for i, name in enumerate(names)
                    if name == args.function or name.endswith(f".{args.function}")
                ]
                if not through:
                    continue
                frames = frames[through[0] :]
            total += int(count)
            for name in set(frames):
                inclusive[name] += int(count)
            own[frames[-1]] += int(count)
    print(f"{total} samples" + (f" through {args.function}" if args.function else ""))
    print(f"{'inclusive':>9} {'own':>6}  function")
    for name, count in inclusive.most_common(args.top):
        print(f"{count / total:9.1%} {own[name] / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
