"""The help text is a user interface: every example in the `--help` of every command runs as
printed (against the fake OpenAI API, the sample file and a loopback Forward server standing in
for the hosts the examples name), each command offers only the options it uses, defaults read in
one style, and `checkpoint --stream` names one stream or fails with exit 2."""

from __future__ import annotations

import functools
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import orjson
import pytest

from forwarder.cli import cli
from forwarder.deadletter import DeadLetters
from tests.conftest import ADMIN_KEY, REPO, cli_env, read_ndjson, recent_events, run_cli
from tests.fakes.forward_server import ForwardServer
from tests.fakes.openai_api import FakeOpenAI
from tests.waiting import wait_for

PROG = "openai-audit-forwarder"
SAMPLE = REPO / "samples" / "audit-log.jsonl"


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> Iterator[tuple]:
    """Every command and group, as the words that name it (the root is `()`)."""
    yield prefix
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def help_text(path: tuple[str, ...]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "forwarder", *path, "--help"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def examples(text: str) -> list[str]:
    """The command lines of the help's Example(s) block, continuation lines joined."""
    found: list[str] = []
    block = False
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("Example:", "Examples:"):
            block = True
            continue
        if block and not stripped:
            block = False
        if not block:
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        found.append(pending)
        pending = ""
    return found


ALL_PATHS = list(command_paths())


@functools.cache
def helps() -> dict[tuple[str, ...], str]:
    """The `--help` of every command, as a user runs it."""
    return {path: help_text(path) for path in ALL_PATHS}


def options_of(path: tuple[str, ...]) -> set[str]:
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z-]+)", helps()[path], re.MULTILINE))


# Options -------------------------------------------------------------------------------------


def test_run_no_longer_offers_window_which_it_does_not_use() -> None:
    assert "--window" not in options_of(("run",))
    assert "--window" in options_of(("backfill",))


def test_check_offers_only_what_it_checks_input_yes_batch_size_retry_timeout_dead_letter_no() -> (
    None
):
    check = options_of(("check",))
    assert not check & {"--batch-size", "--sink-retry-timeout", "--dead-letter", "--window"}
    # check reads the input (its events are checked well-formed) and every sink
    assert {"--input", "--sink", "--schema", "--state", "--stream"} <= check


def test_checkpoint_set_help_does_not_mention_an_overlap_option_it_does_not_take() -> None:
    assert "--overlap" not in helps()[("checkpoint", "set")]


def test_deadletter_replay_help_says_letters_go_back_to_the_configured_sink_not_stdout() -> None:
    text = " ".join(helps()[("deadletter", "replay")].split())
    assert "stdout" not in text
    assert "back to the configured sink that refused it" in text


def test_metrics_addr_help_names_metrics_healthz_and_livez() -> None:
    for path in [("run",), ("backfill",)]:
        text = " ".join(helps()[path].split())
        assert "/metrics, /healthz and /livez" in text


def test_defaults_read_in_one_style_everywhere() -> None:
    for path, text in helps().items():
        flat = " ".join(text.split())
        assert "[default:" not in flat, path  # click's own style is not used
        assert "default:" not in flat.lower(), path
        assert not re.search(r"\(Default", flat), path


def test_every_example_quotes_what_a_shell_would_expand() -> None:
    """A `?`, `&` or `*` in a URL must be quoted, or a shell globs or backgrounds it: each
    example reads exactly as shlex quotes its words."""
    for path in ALL_PATHS:
        for line in examples(helps()[path]):
            assert shlex.join(shlex.split(line)) == line, (path, line)
    assert "'fluentd://127.0.0.1:24224?tag=openai.audit'" in helps()[("run",)]


def test_every_command_has_an_example() -> None:
    missing = [path for path in ALL_PATHS if path and not examples(helps()[path])]
    assert missing == []


# checkpoint --stream -------------------------------------------------------------------------


@pytest.fixture
def two_streams(tmp_path: Path) -> list[str]:
    """A state with two streams (the API's default and an input file's)."""
    state = str(tmp_path / "s.db")
    for extra in (["--stream", "default"], []):
        args = ["run", "--once", "-q", "--input", str(SAMPLE), *extra]
        done = run_cli(*args, "--sink", f"file:{tmp_path}/o.ndjson", "--state", state, cwd=tmp_path)
        assert done.code == 0, done.stderr
    return ["--state", state]


def test_checkpoint_show_with_a_stream_lists_that_stream_alone(
    tmp_path: Path, two_streams: list[str]
) -> None:
    every = orjson.loads(run_cli("checkpoint", "show", "--json", *two_streams, cwd=tmp_path).stdout)
    assert len(every["streams"]) == 2
    one = run_cli("checkpoint", "show", "--json", "--stream", "default", *two_streams, cwd=tmp_path)
    assert one.code == 0, one.stderr
    assert [s["stream"] for s in orjson.loads(one.stdout)["streams"]] == ["default"]
    text = run_cli("checkpoint", "show", "--stream", "default", *two_streams, cwd=tmp_path)
    assert [line.split(":")[0] for line in text.stdout.splitlines() if "watermark" in line] == [
        "stream default"
    ]


def test_checkpoint_reset_or_show_of_a_stream_the_state_lacks_is_exit_2_no_such_stream(
    tmp_path: Path, two_streams: list[str]
) -> None:
    before = run_cli("checkpoint", "show", "--json", *two_streams, cwd=tmp_path).stdout
    for command in ("reset", "show"):
        result = run_cli("checkpoint", command, "--stream", "nosuch", *two_streams, cwd=tmp_path)
        assert result.code == 2, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(
            f"{PROG}: error: invalid setting stream: no such stream 'nosuch' in "
            f"{two_streams[1]} (streams there: default, jsonl:audit-log.jsonl-"
        )
        assert result.stdout == ""
    assert run_cli("checkpoint", "show", "--json", *two_streams, cwd=tmp_path).stdout == before
    removed = run_cli("checkpoint", "reset", "--stream", "default", *two_streams, cwd=tmp_path)
    assert removed.code == 0 and removed.stdout == "stream default: checkpoint removed\n"
    again = run_cli("checkpoint", "reset", "--stream", "default", *two_streams, cwd=tmp_path)
    assert again.code == 2 and "no such stream 'default'" in again.stderr


# Every example runs --------------------------------------------------------------------------


class Examples:
    """Runs help examples as printed, in one place: the hosts, the absolute paths and the key
    placeholder they name are rewritten to the test's peers and directories, nothing else."""

    def __init__(self, tmp: Path, api: FakeOpenAI, forward: ForwardServer) -> None:
        self.tmp = tmp
        self.forward = forward
        self.env = cli_env(OPENAI_BASE_URL=api.base_url, XDG_STATE_HOME=str(tmp / "xdg"))
        self.rewrites = {
            "fluentd.example:24224": f"127.0.0.1:{forward.port}",
            "127.0.0.1:24224": f"127.0.0.1:{forward.port}",
            "/var/lib/openai-audit-forwarder/": f"{tmp}/var/",
            "/etc/openai-audit-forwarder/": f"{tmp}/etc/",
            "sk-admin-...": ADMIN_KEY,
        }

    def rewrite(self, line: str) -> str:
        for old, new in self.rewrites.items():
            line = line.replace(old, new)
        return line

    def run(self, line: str) -> None:
        words = shlex.split(self.rewrite(line))
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            self.env[name] = value
            return
        assert words[0] == PROG, line
        argv = [sys.executable, "-m", "forwarder", *words[1:]]
        if words[1] == "run" and "--once" not in words:
            self._daemon(argv, line)
            return
        done = subprocess.run(
            argv, cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"

    def _daemon(self, argv: list[str], line: str) -> None:
        """A daemon example: runs until its first sweeps are done, then stops on SIGTERM."""
        log = self.tmp / "daemon.log"
        with log.open("w") as err:
            process = subprocess.Popen(argv, cwd=self.tmp, env=self.env, stderr=err)
            try:
                wait_for(lambda: log.read_text().count("sweep done") >= 2 or process.poll())
                assert process.poll() is None, log.read_text()
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=60) == 0, f"{line}\n{log.read_text()}"
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()


def test_every_example_in_the_help_of_every_command_runs_as_printed(tmp_path: Path) -> None:
    sample = [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines() if line.strip()]
    (tmp_path / "samples").symlink_to(REPO / "samples")
    (tmp_path / "var").mkdir()
    (tmp_path / "etc").mkdir()
    with (
        FakeOpenAI(sample + recent_events(30, hours=2, seed=5), admin_key=ADMIN_KEY) as api,
        ForwardServer() as forward,
    ):
        runner = Examples(tmp_path, api, forward)
        (tmp_path / "etc" / "config.toml").write_text(
            f'sinks = ["{forward.url(tag="openai.audit")}"]\nstate = "{tmp_path}/var/state.db"\n'
        )
        # What the checkpoint and dead-letter examples look at: a state at the path the
        # examples name, and a letter a sink refused in each dead-letter directory.
        prepared = run_cli(
            "run", "--once", "-q", "--config", str(tmp_path / "etc" / "config.toml"),
            cwd=tmp_path, env={**runner.env, "OPENAI_ADMIN_KEY": ADMIN_KEY},
        )  # fmt: skip
        assert prepared.code == 0, prepared.stderr
        for directory in (tmp_path / "var" / "dead-letter", runner.env["XDG_STATE_HOME"]):
            letters = Path(directory)
            if letters.name != "dead-letter":
                letters = letters / "openai-audit-forwarder" / "dead-letter"
            DeadLetters(letters, "default").add(
                "rejected: message over max_size=2048", sample[0], schema="ecs", sink="udp:x"
            )
        received = len(forward.entries)
        ran = []
        for path in ALL_PATHS:
            for line in examples(helps()[path]):
                runner.run(line)
                ran.append(line)

    assert len(ran) >= 15, ran
    assert len(forward.entries) > received  # the run and backfill examples delivered there
    # The backfill example's span holds the sample: every event of it went to the receiver.
    assert {event["id"] for event in sample} <= {
        doc["event"]["id"] for _, _, doc in forward.entries
    }
    assert read_ndjson(tmp_path / "out" / "ecs.ndjson")
    assert read_ndjson(tmp_path / "out" / "ocsf.ndjson")
    replayed = read_ndjson(tmp_path / "out" / "replayed.ndjson")
    assert [doc["event"]["id"] for doc in replayed] == [sample[0]["id"]]
