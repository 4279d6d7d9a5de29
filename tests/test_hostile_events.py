"""Hostile events (issue 11) never stop the stream: JSON nested 500 deep, absurd event times,
events without an id, CR/LF/NUL in every syslog and CEF field, oversize UDP datagrams and
unreadable dead-letter lines. Each bad event goes to the dead letters with its reason, the rest
is delivered once, and received plus dead-lettered always equals the input."""

from __future__ import annotations

import io
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ADMIN_KEY,
    CliResult,
    read_ndjson,
    recent_events,
    run_cli,
    write_jsonl,
)
from tests.fakes.forward_server import ForwardServer
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.rsyslog import Rsyslog
from tests.peers import free_port
from tests.waiting import wait_for

ERROR_PREFIX = "openai-audit-forwarder: error: "
DAY = 86_400


# -- helpers ------------------------------------------------------------------------------------


def nested_body(event_id: str, effective_at: int, depth: int) -> bytes:
    """Raw JSON of an event whose objects nest `depth` levels (the event itself is level 1),
    written by hand: no JSON writer in this process has to encode it."""
    head = orjson.dumps({"id": event_id, "type": "api_key.created", "effective_at": effective_at})
    inner = b'{"x":' * (depth - 2) + b"{}" + b"}" * (depth - 2)
    return head[:-1] + b',"payload":' + inner + b"}"


def depth_of(value: Any) -> int:
    """Nesting depth of objects and arrays (iterative: the value may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def read_letters(directory: Path) -> list[dict[str, Any]]:
    """Every stored dead letter, read back independently of the forwarder."""
    letters = []
    for path in sorted(directory.glob("dead-letters-*.ndjson")):
        letters.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
    return letters


def letter_event(letter: dict[str, Any]) -> Any:
    """The event of a letter: `event`, or `event_json` for one orjson cannot encode."""
    if letter.get("event") is None and isinstance(letter.get("event_json"), str):
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(10_000)  # the standard library recurses per level
        try:
            return json.loads(letter["event_json"])
        finally:
            sys.setrecursionlimit(limit)
    return letter.get("event")


def key(event: dict[str, Any]) -> str:
    """What identifies an input event: its id, or its marker when it has none."""
    return event.get("id") or event["marker"]


def assert_one_line_error(result: CliResult, code: int, *fragments: str) -> str:
    assert result.code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert ADMIN_KEY not in result.output
    return lines[0]


def run_cli_bytes(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, bytes, str]:
    """Like run_cli, with stdout kept as bytes (for msgpack)."""
    done = subprocess.run(
        [sys.executable, "-m", "forwarder", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr.decode("utf-8", "replace")


def sweep(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--once",
        "-q",
        "--start-at",
        "2h",
        "--state",
        str(tmp_path / "s.db"),
        "--dead-letter",
        str(tmp_path / "dl"),
        *extra,
    ]


def checkpoint_show(tmp_path: Path, *extra: str) -> dict[str, Any]:
    shown = run_cli(
        "checkpoint", "show", "--json", "--state", str(tmp_path / "s.db"), *extra, cwd=tmp_path
    )
    assert shown.code == 0, shown.output
    return orjson.loads(shown.stdout)


def assert_sane_watermarks(tmp_path: Path) -> None:
    streams = checkpoint_show(tmp_path)["streams"]
    assert streams
    for stream in streams:
        assert 1_577_836_800 <= stream["watermark_unix"] <= time.time() + DAY, stream
        assert stream["watermark_problem"] is None


class HostileFeed:
    """Listed by the fake API: ordinary events, events with hostile strings (CR, LF, NUL,
    10 KB values, in the id and type too) and the bad ones: nested 500 deep, effective_at
    2^63, 10^12 and 1 (1970), and one without an id."""

    def __init__(self, api: FakeOpenAI, tag: str, count: int = 20) -> None:
        self.tag = tag
        events = recent_events(count, hours=1, seed=11)
        hostile = recent_events(13, hours=1, seed=12, hostile_ratio=1.0)
        for i, event in enumerate(events):
            event["id"] = f"{tag}-ok-{i}"
        for i, event in enumerate(hostile):
            event["id"] = f"{tag}-hostile-{i}"
        hostile[0]["id"] = f"{tag}-cr\rlf\nnul\0id"
        hostile[0]["type"] = "api_key.cre\rat\0ed\n"
        hostile[1]["project"] = {"id": "proj\r\0x", "name": "n\r\n\0"}
        self.good = events + hostile
        api.add_events(self.good)
        at = int(time.time()) - 600
        bodies = [
            nested_body(f"{tag}-deep500", at, 500),
            orjson.dumps(bad_time(f"{tag}-at2pow63", 2**63)),
            orjson.dumps(bad_time(f"{tag}-at10pow12", 10**12)),
            orjson.dumps(bad_time(f"{tag}-at1970", 1)),
            orjson.dumps({"type": "api_key.created", "effective_at": at, "marker": "noid"}),
        ]
        for offset, body in enumerate(bodies):
            api.add_raw(body, at + offset, "api_key.created")
        self.bad = [f"{tag}-deep500", f"{tag}-at2pow63", f"{tag}-at10pow12", f"{tag}-at1970"]
        self.bad.append("noid")

    def keys(self) -> Counter[str]:
        return Counter([key(event) for event in self.good] + self.bad)


def bad_time(event_id: str, effective_at: int) -> dict[str, Any]:
    return {"id": event_id, "type": "api_key.created", "effective_at": effective_at}


def assert_nothing_lost(feed: HostileFeed, received: list[str], letters: list[dict]) -> None:
    """Received plus dead-lettered equals the input, each exactly once; the bad ones are
    dead-lettered as invalid events with their reason."""
    lettered = [key(letter_event(letter)) for letter in letters]
    assert Counter(received) + Counter(lettered) == feed.keys()
    assert set(feed.bad) <= set(lettered)
    reasons = {key(letter_event(letter)): letter["reason"] for letter in letters}
    assert "nested deeper than 128 levels" in reasons[f"{feed.tag}-deep500"]
    assert "'effective_at' 9223372036854775808 is outside" in reasons[f"{feed.tag}-at2pow63"]
    assert "'effective_at' 1000000000000 is outside" in reasons[f"{feed.tag}-at10pow12"]
    assert "'effective_at' 1 (1970-01-01T00:00:01Z) is outside" in reasons[f"{feed.tag}-at1970"]
    assert "missing or invalid 'id'" in reasons["noid"]
    deep = next(letter for letter in letters if key(letter_event(letter)).endswith("deep500"))
    assert depth_of(letter_event(deep)) == 500  # kept whole, as JSON text


# -- peers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[Any]:
    from tests.test_sink_s3 import Moto

    server = Moto()
    server.start()
    yield server
    server.stop()


def aws_env(tmp_path: Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "AKIDTESTINGONLY",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-hostile",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


CEF_ESCAPE = re.compile(r"\\(.)")


def syslog_doc(message: dict[str, Any]) -> dict[str, Any]:
    """The raw event a syslog message carries: its JSON body, or a CEF body's cs6."""
    msg = message["msg"]
    if msg.startswith("CEF:"):
        cs6 = msg.partition(" cs6=")[2]
        msg = CEF_ESCAPE.sub(lambda m: {"r": "\r", "n": "\n"}.get(m.group(1), m.group(1)), cs6)
    return orjson.loads(msg)


def syslog_received(peer: Rsyslog, tag: str, count: int, timeout: float = 60.0) -> list[dict]:
    """The messages of one test (its tag starts every event id, so the SD id), once `count`
    arrived and rsyslog wrote everything it received (the run is over), so that duplicates
    show too."""

    def mine() -> list[dict[str, Any]]:
        return [m for m in peer.messages() if f'id="{tag}' in m["structured_data"]]

    wait_for(lambda: len(mine()) >= count, timeout, f"{count} messages of {tag}")
    peer.drain()
    return mine()


def assert_no_raw_line_breaks_or_nul(message: dict[str, Any]) -> None:
    """rsyslog shows a control character it received raw as #ooo (escapeControlCharacters-
    OnReceive): neither raw nor as #015 (CR), #012 (LF), #000 (NUL) may appear."""
    for name, value in message.items():
        text = str(value)
        for raw in ("\r", "\n", "\0", "#015", "#012", "#000"):
            assert raw not in text, (name, text[:200])


def sink_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The sink URL of a test kind; the peer is started only for the kinds that need it."""
    if kind == "file":
        return f"file:{tmp_path / 'out.ndjson'}"
    if kind.startswith("stdout"):
        return f"stdout:?format={kind.partition('-')[2]}"
    if kind == "s3":
        from tests.seaweedfs import s3_client

        moto = request.getfixturevalue("moto")
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for name, value in aws_env(tmp_path).items():  # for the test's own boto3 client
            monkeypatch.setenv(name, value)
        bucket = f"hostile-{uuid.uuid4().hex[:12]}"
        s3_client(moto).create_bucket(Bucket=bucket)
        return f"s3://{bucket}/audit?endpoint_url={moto.endpoint}&region=us-east-1"
    peer: Rsyslog = request.getfixturevalue("rsyslog")
    transport, _, body = kind.partition("-")[2].partition("-")
    params = {"framing": "lf"} if transport == "tcp" else {}
    return peer.url(transport, format=body, **params)


def delivered_ids(kind: str, url: str, tmp_path: Path, stdout: bytes, request: Any) -> list[str]:
    """The ids the sink's receiver got (independently read back), or, for syslog, what it
    got so far (`syslog_received` waits for a count)."""
    if kind == "file":
        return [doc["id"] for doc in read_ndjson(tmp_path / "out.ndjson")]
    if kind == "stdout-json":
        return [orjson.loads(line)["id"] for line in stdout.splitlines()]
    if kind == "stdout-msgpack":
        return [doc["id"] for doc in msgpack.Unpacker(io.BytesIO(stdout), raw=False)]
    if kind == "s3":
        from tests.test_sink_s3 import list_keys
        from tests.test_sink_s3 import read_ndjson as read_object

        moto = request.getfixturevalue("moto")
        bucket = url.removeprefix("s3://").partition("/")[0]
        return [doc["id"] for k in list_keys(moto, bucket) for doc in read_object(moto, bucket, k)]
    raise AssertionError(kind)


PEER = pytest.mark.peer
SINK_KINDS = [
    "file",
    "stdout-json",
    "stdout-msgpack",
    pytest.param("s3", marks=PEER),
    pytest.param("syslog-udp-json", marks=PEER),
    pytest.param("syslog-tcp-json", marks=PEER),
    pytest.param("syslog-tcp-cef", marks=PEER),
]


# -- the general rule: no sink stops ------------------------------------------------------------


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_hostile_events_never_stop_a_sink_and_received_plus_dead_lettered_equals_the_input(
    kind: str,
    tmp_path: Path,
    fake_api: FakeOpenAI,
    api_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    tag = f"h{uuid.uuid4().hex[:8]}"
    feed = HostileFeed(fake_api, tag)
    url = sink_for(kind, tmp_path, request)
    env = {**api_env, **aws_env(tmp_path)}
    args = sweep(tmp_path, "--schema", "raw", "--sink", url)

    code, stdout, stderr = run_cli_bytes(*args, cwd=tmp_path, env=env)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr
    letters = read_letters(tmp_path / "dl")
    if kind.startswith("syslog"):
        peer: Rsyslog = request.getfixturevalue("rsyslog")
        messages = syslog_received(peer, tag, sum(feed.keys().values()) - len(letters))
        for message in messages:
            assert_no_raw_line_breaks_or_nul(message)
        received = [syslog_doc(m)["id"] for m in messages]
    else:
        received = delivered_ids(kind, url, tmp_path, stdout, request)
    assert_nothing_lost(feed, received, letters)
    assert_sane_watermarks(tmp_path)

    # The rerun meets the bad events again in the overlap: it goes on, adds no letter.
    time.sleep(1.1)
    code, stdout, stderr = run_cli_bytes(*args, cwd=tmp_path, env=env)
    assert code == 0, stderr
    assert len(read_letters(tmp_path / "dl")) == len(letters)
    if kind.startswith("stdout"):
        assert stdout == b""
    elif kind.startswith("syslog"):
        assert len(syslog_received(peer, tag, len(received))) == len(received)
    else:
        assert Counter(delivered_ids(kind, url, tmp_path, stdout, request)) == Counter(received)
    assert_sane_watermarks(tmp_path)


# -- item 2(a): deep nesting ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "stdout-json", "stdout-msgpack"])
def test_event_nested_500_deep_is_dead_lettered_and_the_stream_goes_on(
    kind: str,
    tmp_path: Path,
    fake_api: FakeOpenAI,
    api_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    events = recent_events(30, hours=1, seed=21)
    fake_api.add_events(events)
    at = int(time.time()) - 900
    # 2000: deeper than orjson parses, so its whole page needs the slow parser.
    for offset, depth in enumerate((128, 129, 500, 2000)):
        fake_api.add_raw(nested_body(f"deep-{depth}", at + offset, depth), at + offset, "x.y")
    args = sweep(tmp_path, "--sink", sink_for(kind, tmp_path, request))  # ECS, the default

    code, stdout, stderr = run_cli_bytes(*args, cwd=tmp_path, env=api_env)

    assert code == 0, stderr
    if kind == "file":
        docs = read_ndjson(tmp_path / "out.ndjson")
    elif kind == "stdout-json":
        docs = [orjson.loads(line) for line in stdout.splitlines()]
    else:
        docs = list(msgpack.Unpacker(io.BytesIO(stdout), raw=False))
    received = [doc["event"]["id"] for doc in docs]
    letters = read_letters(tmp_path / "dl")
    lettered = [letter_event(letter)["id"] for letter in letters]
    # 128 levels is the limit: delivered; deeper is dead-lettered, kept whole.
    assert Counter(received) == Counter([e["id"] for e in events] + ["deep-128"])
    assert sorted(lettered) == ["deep-129", "deep-2000", "deep-500"]
    assert all(
        letter["reason"] == "invalid event: nested deeper than 128 levels" for letter in letters
    )
    assert sorted(depth_of(letter_event(letter)) for letter in letters) == [129, 500, 2000]
    assert_sane_watermarks(tmp_path)

    time.sleep(1.1)  # the rerun reads the overlap, so the deep events, again
    code, stdout, stderr = run_cli_bytes(*args, cwd=tmp_path, env=api_env)
    assert code == 0, stderr
    assert len(read_letters(tmp_path / "dl")) == 3
    if kind != "file":
        assert stdout == b""
    else:
        assert len(read_ndjson(tmp_path / "out.ndjson")) == len(received)


def test_input_line_nested_2000_deep_is_dead_lettered_not_refused_as_malformed(
    tmp_path: Path,
) -> None:
    events = recent_events(20, hours=1, seed=31)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    deep = nested_body("deep-2000", events[5]["effective_at"], 2000)
    with source.open("ab") as handle:
        handle.write(deep + b"\n")
    out = tmp_path / "out.ndjson"
    args = sweep(tmp_path, "--input", str(source), "--schema", "raw", "--sink", f"file:{out}")

    result = run_cli(*args, cwd=tmp_path)

    assert result.code == 0, result.stderr
    [letter] = read_letters(tmp_path / "dl")
    assert letter["reason"] == "invalid event: nested deeper than 128 levels"
    assert depth_of(letter_event(letter)) == 2000
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)
    assert_sane_watermarks(tmp_path)


# -- item 2(b), 2(c): absurd event times and watermarks ------------------------------------------


@pytest.mark.parametrize("source", ["api", "input"])
def test_effective_at_2_to_the_63_is_dead_lettered_and_the_state_commits(
    source: str, tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    events = recent_events(25, hours=1, seed=22)
    absurd = {"id": "audit_log-2pow63", "type": "login.succeeded", "effective_at": 2**63}
    if source == "api":
        fake_api.add_events(events)
        fake_api.add_raw(orjson.dumps(absurd), int(time.time()) - 600, absurd["type"])
        extra: list[str] = []
    else:
        extra = ["--input", str(write_jsonl(tmp_path / "in.jsonl", [*events, absurd]))]
    out = tmp_path / "out.ndjson"
    args = sweep(tmp_path, "--schema", "raw", "--sink", f"file:{out}", *extra)

    first = run_cli(*args, cwd=tmp_path, env=api_env)

    assert first.code == 0, first.stderr
    assert first.stderr == ""
    letters = read_letters(tmp_path / "dl")
    assert [letter_event(letter) for letter in letters] == [absurd]
    assert letters[0]["reason"].startswith(
        "invalid event: 'effective_at' 9223372036854775808 is outside 2020-01-01T00:00:00Z"
    )
    received = [doc["id"] for doc in read_ndjson(out)]
    assert Counter(received) == Counter(e["id"] for e in events)
    assert_sane_watermarks(tmp_path)  # the commit went through
    time.sleep(1.1)
    again = run_cli(*args, cwd=tmp_path, env=api_env)
    assert again.code == 0, again.stderr
    assert len(read_letters(tmp_path / "dl")) == 1
    assert len(read_ndjson(out)) == len(events)


def test_effective_at_10_to_the_12_from_input_is_dead_lettered_and_the_watermark_stays_sane(
    tmp_path: Path,
) -> None:
    events = recent_events(40, hours=1, seed=23)
    absurd = {"id": "audit_log-tera", "type": "api_key.created", "effective_at": 10**12}
    source = write_jsonl(tmp_path / "in.jsonl", [*events[:20], absurd, *events[20:]])
    out = tmp_path / "out.ndjson"
    args = sweep(tmp_path, "--input", str(source), "--schema", "raw", "--sink", f"file:{out}")

    first = run_cli(*args, cwd=tmp_path)

    assert first.code == 0, first.stderr
    [letter] = read_letters(tmp_path / "dl")
    assert letter_event(letter) == absurd
    assert "'effective_at' 1000000000000 is outside" in letter["reason"]
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)
    [stream] = checkpoint_show(tmp_path)["streams"]
    # One past the newest event delivered: not the dead-lettered one (year 33658).
    assert stream["watermark_unix"] == max(e["effective_at"] for e in events) + 1
    assert stream["watermark_problem"] is None
    text = run_cli("checkpoint", "show", "--state", str(tmp_path / "s.db"), cwd=tmp_path)
    assert text.code == 0 and "OUT OF RANGE" not in text.stdout, text.output

    rerun = run_cli(*args, cwd=tmp_path)
    assert rerun.code == 0, rerun.stderr
    assert len(read_ndjson(out)) == len(events)  # nothing again
    assert len(read_letters(tmp_path / "dl")) == 1
    assert_sane_watermarks(tmp_path)


@pytest.mark.parametrize(
    ("when", "why"),
    [
        ("99999999999999", "is not a time between 1970 and 9999"),  # refused as a WHEN at all
        ("2019-12-31T23:59:59Z", "is outside 2020-01-01"),
        ("1000000000", "is outside 2020-01-01"),
    ],
)
def test_checkpoint_set_refuses_an_out_of_range_time_with_exit_2_and_one_line(
    when: str, why: str, tmp_path: Path
) -> None:
    state = tmp_path / "s.db"
    events = recent_events(5, hours=1, seed=24)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    sink = f"file:{tmp_path / 'out.ndjson'}"
    assert run_cli(*sweep(tmp_path, "--input", str(source), "--sink", sink), cwd=tmp_path).code == 0
    [before] = checkpoint_show(tmp_path)["streams"]

    result = run_cli(
        "checkpoint", "set", when, "--stream", before["stream"], "--state", str(state), cwd=tmp_path
    )

    line = assert_one_line_error(result, 2, "invalid setting WHEN", why)
    assert result.stdout == ""
    assert line.count("\n") == 0
    assert checkpoint_show(tmp_path)["streams"] == [before]  # untouched


def test_an_out_of_range_watermark_from_an_older_version_stops_with_the_repair_and_checkpoint_set_repairs_it(  # noqa: E501
    tmp_path: Path,
) -> None:
    events = recent_events(30, hours=1, seed=25)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    out = tmp_path / "out.ndjson"
    args = sweep(tmp_path, "--input", str(source), "--schema", "raw", "--sink", f"file:{out}")
    assert run_cli(*args, cwd=tmp_path).code == 0
    [stream] = checkpoint_show(tmp_path)["streams"]
    name = stream["stream"]
    # What an older version stored after an event at 10^12 (year 33658).
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE streams SET watermark=? WHERE stream=?", (10**12 + 1, name))

    broken = run_cli(*args, cwd=tmp_path)

    assert_one_line_error(
        broken,
        1,  # not a configuration error: the state is damaged
        f"stream {name}: the stored watermark 1000000000001 is outside",
        f"'checkpoint set WHEN --stream {name}'",
    )
    shown = run_cli("checkpoint", "show", "--state", str(tmp_path / "s.db"), cwd=tmp_path)
    assert shown.code == 0, shown.output
    assert f"stream {name}: OUT OF RANGE: watermark 1000000000001" in shown.stdout
    assert checkpoint_show(tmp_path)["streams"][0]["watermark_problem"]
    assert len(read_ndjson(out)) == len(events)  # nothing moved

    # The repair: back to the last good watermark. `checkpoint set` forgets the remembered
    # ids (documented), so the overlap (10 minutes) before it is delivered once more.
    good = stream["watermark_unix"]
    where = ["--stream", name, "--state", str(tmp_path / "s.db")]
    repair = run_cli("checkpoint", "set", str(good), *where, cwd=tmp_path)
    assert repair.code == 0, repair.output
    assert f"stream {name}: watermark set to" in repair.stdout
    again = run_cli(*args, cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert_sane_watermarks(tmp_path)
    assert checkpoint_show(tmp_path)["streams"][0]["watermark_unix"] == good
    overlap = [e["id"] for e in events if e["effective_at"] >= good - 600]
    assert overlap  # the check below means something
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(
        [e["id"] for e in events] + overlap
    )


# -- item 12: CR, LF and NUL in every syslog and CEF field ---------------------------------------

BREAKS = "\r\n\0"


def events_with_line_breaks(tag: str) -> list[dict[str, Any]]:
    """Events with CR, LF and NUL in the id, the type, the user's email and ip, the project
    and the payload: every field that reaches an RFC 5424 header, SD-PARAM or CEF field."""
    events = recent_events(6, hours=1, seed=26, types=["api_key.created", "login.succeeded"])
    for i, event in enumerate(events):
        event["id"] = f"{tag}-{i}-cr\rlf\nnul\0end"
        event["type"] = f"{event['type']}\r\0\n"
        event["actor"] = {
            "type": "session",
            "session": {
                "user": {"id": f"user\r{i}", "email": f"a\rb\0c\nd{i}@example.com"},
                "ip_address": "192.0.2.1\r\0",
                "user_agent": "agent\r\n\0",
            },
        }
        event["project"] = {"id": f"proj\r\0{i}", "name": "name\r\n\0"}
    return events


@pytest.mark.peer
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("body", ["json", "cef"])
def test_syslog_escapes_cr_lf_and_nul_in_every_field_and_each_event_arrives_once(
    transport: str, body: str, tmp_path: Path, rsyslog: Rsyslog
) -> None:
    tag = f"br{uuid.uuid4().hex[:8]}"
    events = events_with_line_breaks(tag)
    source = write_jsonl(tmp_path / "in.jsonl", events)
    params = {"framing": "lf"} if transport == "tcp" else {}
    url = rsyslog.url(transport, format=body, **params)

    result = run_cli(*sweep(tmp_path, "--input", str(source), "--sink", url), cwd=tmp_path)

    assert result.code == 0, result.stderr
    assert read_letters(tmp_path / "dl") == []
    messages = syslog_received(rsyslog, tag, len(events))
    # Each event arrived once, whole: received plus dead-lettered (none) equals the input.
    docs = [syslog_doc(m) for m in messages]
    assert Counter(doc["event"]["id"] for doc in docs) == Counter(e["id"] for e in events)
    by_id = {doc["event"]["id"]: m for doc, m in zip(docs, messages, strict=True)}
    for i, event in enumerate(events):
        message = by_id[event["id"]]
        assert_no_raw_line_breaks_or_nul(message)
        base = event["type"].rstrip(BREAKS)
        # SD-PARAM values: CR and LF as the two characters \r and \n, NUL as a space.
        assert message["structured_data"] == (
            f'[openai@32473 id="{tag}-{i}-cr\\rlf\\nnul end" type="{base}\\r \\n"]'
        )
        assert message["msgid"] == base  # a header field: printable ASCII only
        if body == "cef":
            # CEF header: line breaks and NUL become spaces; extensions: \r, \n, space.
            assert f"|{base}   |" in message["msg"]
            assert f"externalId={tag}-{i}-cr\\rlf\\nnul end " in message["msg"]
            assert f"suser=a\\rb c\\nd{i}@example.com " in message["msg"]
            assert f"cs1=proj\\r {i} " in message["msg"]


# -- item 13: UDP datagram size ------------------------------------------------------------------


@pytest.mark.peer
def test_udp_max_size_over_65507_is_a_configuration_error_with_exit_2_and_one_line(
    tmp_path: Path, rsyslog: Rsyslog
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", recent_events(5, hours=1, seed=27))
    url = rsyslog.url("udp", max_size=65508)
    before = rsyslog.count()

    result = run_cli(*sweep(tmp_path, "--input", str(source), "--sink", url), cwd=tmp_path)

    assert_one_line_error(result, 2, "max_size=65508 is over 65507, the largest UDP datagram")
    assert not (tmp_path / "dl").exists()
    rsyslog.drain()
    assert rsyslog.count() == before  # nothing sent


@pytest.mark.peer
def test_udp_message_over_max_size_is_dead_lettered_and_the_rest_of_the_batch_arrives_once(
    tmp_path: Path, rsyslog: Rsyslog
) -> None:
    tag = f"udp{uuid.uuid4().hex[:8]}"
    events = recent_events(12, hours=1, seed=28, types=["api_key.created"])
    for i, event in enumerate(events):
        event["id"] = f"{tag}-{i}"
    events[3]["project"] = {"id": "proj_big", "name": "A" * 60_000}  # fits 65,507
    events[7]["project"] = {"id": "proj_huge", "name": "B" * 70_000}  # cannot
    source = write_jsonl(tmp_path / "in.jsonl", events)
    args = ["--input", str(source), "--schema", "raw"]

    result = run_cli(
        *sweep(tmp_path, *args, "--sink", rsyslog.url("udp", max_size=65507)), cwd=tmp_path
    )

    assert result.code == 0, result.stderr
    assert "too long" not in result.stderr.lower()  # no failed batch, no retries
    [letter] = read_letters(tmp_path / "dl")
    assert letter_event(letter) == events[7]
    assert "over max_size=65507" in letter["reason"]
    messages = syslog_received(rsyslog, tag, len(events) - 1)
    received = [syslog_doc(m)["id"] for m in messages]
    assert Counter(received) + Counter([events[7]["id"]]) == Counter(e["id"] for e in events)
    assert len(next(m for m in messages if f'id="{tag}-3"' in m["structured_data"])["msg"]) > 60_000


# -- item 16: dead letters ----------------------------------------------------------------------


def test_event_without_an_id_swept_11_times_leaves_exactly_one_dead_letter(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    events = recent_events(10, hours=1, seed=29)
    fake_api.add_events(events)
    at = int(time.time()) - 300  # inside the overlap every following sweep re-reads
    anonymous = {"type": "login.failed", "effective_at": at, "actor": {"type": "session"}}
    fake_api.add_raw(orjson.dumps(anonymous), at, "login.failed")
    out = tmp_path / "out.ndjson"
    args = [a for a in sweep(tmp_path, "--schema", "raw", "--sink", f"file:{out}") if a != "-q"]

    for number in range(11):
        result = run_cli(*args, cwd=tmp_path, env=api_env)
        assert result.code == 0, result.stderr
        # Every sweep meets the event again; only the first one writes, counts and warns of a
        # letter: the others find its letter on file. (Its stream, then the companion.)
        counted = re.findall(
            r"sweep done: \d+ events delivered, (\d+) dead-lettered", result.stderr
        )
        assert counted == ["1" if number == 0 else "0", "0"], (number, result.stderr)
        assert result.stderr.count(" WARNING ") == (1 if number == 0 else 0), result.stderr
        time.sleep(1.1)  # the next sweep has a new second to ask for

    letters = read_letters(tmp_path / "dl")
    assert [letter_event(letter) for letter in letters] == [anonymous]
    assert letters[0]["reason"] == "invalid event: missing or invalid 'id' (a non-empty string)"
    listing = run_cli(
        "deadletter", "list", "--json", "--dead-letter", str(tmp_path / "dl"), cwd=tmp_path
    )
    assert orjson.loads(listing.stdout)["total"] == 1
    # No loss, no duplicate: received plus dead-lettered equals the input.
    received = [doc["id"] for doc in read_ndjson(out)]
    assert Counter(received) == Counter(e["id"] for e in events)
    assert len(received) + len(letters) == len(events) + 1


def test_a_sink_down_for_3_sweeps_leaves_one_letter_for_an_invalid_event_counted_once(
    tmp_path: Path, fake_api: FakeOpenAI, api_env: dict[str, str]
) -> None:
    events = recent_events(20, hours=1, seed=31)
    fake_api.add_events(events)
    at = int(time.time()) - 1800
    anonymous = {"type": "login.failed", "effective_at": at}
    fake_api.add_raw(orjson.dumps(anonymous), at, "login.failed")
    fluentd = ForwardServer(port=free_port())  # not started yet: the sink is down
    sink = ("--schema", "raw", "--sink", fluentd.url(tag="openai.audit", retries="1", timeout="1"))
    port = free_port()
    args = [a for a in sweep(tmp_path, *sink) if a not in ("--once", "-q")]
    process = subprocess.Popen(
        [sys.executable, "-m", "forwarder", *args, "--interval", "1s", "--without-tenant",
         "--sink-retry-timeout", "1s", "--metrics-addr", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=api_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def metric(name: str, **labels: str) -> float:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return -1.0  # not listening yet
        wanted = {"stream": "default", **labels}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and wanted.items() <= sample.labels.items():
                    return sample.value
        return 0.0

    try:
        # Each failed sweep listed the window, met the invalid event, and handed it in again.
        assert wait_for(lambda: metric("oaf_sweeps_total", outcome="failure") >= 3, 60)
        assert len(read_letters(tmp_path / "dl")) == 1
        assert metric("oaf_events_dead_lettered_total", kind="invalid") == 1

        fluentd.start()  # the receiver is back
        assert wait_for(lambda: len(fluentd.entries) >= len(events), 60)
        assert wait_for(lambda: metric("oaf_sweeps_total", outcome="success") >= 2, 60)
        assert metric("oaf_events_dead_lettered_total", kind="invalid") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        fluentd.stop()
    assert process.returncode == 0, stderr.decode()
    letters = read_letters(tmp_path / "dl")
    assert [letter_event(letter) for letter in letters] == [anonymous]
    # No loss, no duplicate: received plus dead-lettered equals the input.
    received = Counter(entry[2]["id"] for entry in fluentd.entries)
    assert received == Counter(e["id"] for e in events)


def test_deadletter_list_and_replay_report_a_non_object_and_a_garbage_line_by_number_and_process_the_rest(  # noqa: E501
    tmp_path: Path,
) -> None:
    events = recent_events(3, hours=1, seed=30)
    good = [
        orjson.dumps(
            {
                "time": "2026-11-30T10:00:00Z",
                "stream": "default",
                "sink": None,
                "schema": "ecs",
                "reason": "mapping ecs: something",
                "event": event,
            }
        )
        for event in events
    ]
    dl = tmp_path / "dl"
    dl.mkdir()
    name = "dead-letters-2026-11-30.ndjson"
    lines = [good[0], b"[1, 2, 3]", good[1], b"garbage {not json", b'"a string"', good[2]]
    (dl / name).write_bytes(b"\n".join(lines) + b"\n")
    where = ["--dead-letter", str(dl)]

    listing = run_cli("deadletter", "list", *where, cwd=tmp_path)

    assert listing.code == 0, listing.output
    assert f"6 dead letters in {dl} (1 files)" in listing.stdout
    assert f"bad line {name}:2: not a dead letter: a JSON array" in listing.stdout
    assert f"bad line {name}:4: not a dead letter: invalid JSON" in listing.stdout
    assert f"bad line {name}:5: not a dead letter: a JSON string" in listing.stdout
    assert listing.stdout.count("bad line") == 3
    as_json = orjson.loads(run_cli("deadletter", "list", "--json", *where, cwd=tmp_path).stdout)
    assert [(bad["file"], bad["line"]) for bad in as_json["bad_lines"]] == [
        (name, 2),
        (name, 4),
        (name, 5),
    ]

    out = tmp_path / "out.ndjson"
    replay = run_cli(
        "deadletter",
        "replay",
        "--sink",
        f"file:{out}",
        "--schema",
        "raw",
        "--state",
        str(tmp_path / "s.db"),
        *where,
        cwd=tmp_path,
    )

    # The three letters are delivered; the three bad lines stay, reported by number.
    assert replay.code == 1, replay.output
    errors = [line for line in replay.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert errors == [f"{ERROR_PREFIX}3 dead letters could not be delivered; see 'deadletter list'"]
    assert replay.stderr.strip().splitlines()[-1] == errors[0]
    assert "replayed 6 dead letters: 3 delivered, 3 dead-lettered again" in replay.stderr
    for number in (2, 4, 5):
        assert f"{name} line {number}: not a dead letter" in replay.stderr
    assert Counter(doc["id"] for doc in read_ndjson(out)) == Counter(e["id"] for e in events)
    kept = read_letters(dl)
    assert sorted(letter["event"] for letter in kept) == [
        '"a string"',
        "[1, 2, 3]",
        "garbage {not json",
    ]
    assert {letter["reason"] for letter in kept} == {"unreadable dead-letter line"}
    assert len(read_ndjson(out)) + len(kept) == len(lines)  # nothing lost
