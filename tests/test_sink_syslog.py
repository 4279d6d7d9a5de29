"""The syslog sink against a real rsyslogd on loopback: delivery exactly once over every
transport, the RFC 5424 fields rsyslog parsed, hostile content, CEF, size limits, TLS errors."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme

from forwarder.sinks import Record, SinkError, open_sink
from forwarder.sinks.syslog.rfc5424 import escape_param
from tests.fakes.rsyslog import Rsyslog
from tests.peers import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.peer

EPOCH = 1_748_779_200  # 2025-06-01T12:00:00Z
TRANSPORTS = ["udp", "tcp", "tls", "relp", "relp+tls"]
SD_ID = re.compile(r'id="((?:[^"\\]|\\.)*)"')


def records(tag: str, count: int, event_type: str = "api_key.created") -> list[Record]:
    return [
        Record(
            id=f"{tag}-{i}",
            type=event_type,
            effective_at=EPOCH + i % 3600,
            doc={"event": {"id": f"{tag}-{i}", "action": event_type}, "n": i, "tag": tag},
        )
        for i in range(count)
    ]


def received(peer: Rsyslog, tag: str) -> list[dict[str, Any]]:
    """The messages of one test (by the tag in their SD id)."""
    out = []
    for message in peer.messages():
        match = SD_ID.search(message["structured_data"])
        if match and match.group(1).startswith(f"{tag}-"):
            out.append(message)
    return out


def wait_received(peer: Rsyslog, tag: str, count: int, timeout: float = 60.0) -> list[dict]:
    """Wait for `count` messages of this test, then until rsyslog wrote everything it received
    (the sink is closed), so that a duplicate shows too."""
    wait_for(lambda: len(received(peer, tag)) >= count, timeout, f"{count} messages of {tag}")
    peer.drain()
    return received(peer, tag)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ten_thousand_events_arrive_exactly_once_with_rfc5424_fields(
    rsyslog: Rsyslog, transport: str
) -> None:
    tag = f"many-{transport}-{uuid.uuid4().hex[:8]}"
    batch = records(tag, 10_000)
    sink = open_sink(rsyslog.url(transport, hostname="fwd.example", facility="local3"))
    # UDP cannot push back: write batches of 500 and wait for each to land, so that the
    # kernel receive buffer (rsyslog asks for 4 MB) never overflows. Streams: batches of 1000.
    step = 500 if transport == "udp" else 1000
    base = rsyslog.count()
    for offset in range(0, len(batch), step):
        assert sink.write(batch[offset : offset + step]) == []
        if transport == "udp":
            rsyslog.wait_for(base + offset + step)
    sink.close()

    got = wait_received(rsyslog, tag, len(batch))
    counts = Counter(orjson.loads(m["msg"])["event"]["id"] for m in got)
    assert set(counts) == {r.id for r in batch}
    assert max(counts.values()) == 1
    first = next(m for m in got if orjson.loads(m["msg"])["n"] == 0)
    assert first["pri"] == str(19 * 8 + 6)  # local3.informational
    assert first["timestamp"] == "2025-06-01T12:00:00Z"
    assert first["hostname"] == "fwd.example"
    assert first["app_name"] == "openai-audit-forwarder"
    assert first["procid"].isdigit()
    assert first["msgid"] == "api_key.created"
    assert first["structured_data"] == f'[openai@32473 id="{tag}-0" type="api_key.created"]'
    assert orjson.loads(first["msg"]) == batch[0].doc
    assert {m["input"] for m in got} == {transport.replace("+", "")}


def test_severity_follows_the_event_type(rsyslog: Rsyslog) -> None:
    tag = f"sev-{uuid.uuid4().hex[:8]}"
    types = [
        "login.failed",
        "api_key.deleted",
        "tenant.workload_identity.provider.archived",
        "project.created",
    ]
    batch = [records(tag, 1, t)[0] for t in types]
    batch = [Record(f"{tag}-{i}", r.type, r.effective_at, r.doc) for i, r in enumerate(batch)]
    sink = open_sink(rsyslog.url("relp"))
    sink.write(batch)
    sink.close()
    got = {m["msgid"]: int(m["pri"]) for m in wait_received(rsyslog, tag, len(batch))}
    authpriv = 10
    assert got == {
        "login.failed": authpriv * 8 + 4,
        "api_key.deleted": authpriv * 8 + 5,
        "tenant.workload_identity.provide": authpriv * 8 + 5,  # MSGID cut to 32 characters
        "project.created": authpriv * 8 + 6,
    }


HOSTILE_VALUES = [
    "line one\nline two\r\nline three",
    'quotes " and \\" and \\',
    'brackets ] [ ]] and an SD look-alike [x@1 a="b"]',
    "pipes | and equals = and a=b|c",
    "NUL \x00 and other controls \x01\x07\x1b\x7f",
    "unicode: Grüße, 日本語, emoji 🙂, RTL \u202e",
    "A" * 9 * 1024,
    "<13>1 2020-01-01T00:00:00Z fake-host fake-app - - - injected syslog header\n<14>next",
    "10 octet-counting look-alike\n5 hello",
]


def hostile_records(tag: str) -> list[Record]:
    out = []
    for i, value in enumerate(HOSTILE_VALUES):
        out.append(
            Record(
                id=f'{tag}-{i}"]\\ x=y|z',
                type='custom.type with spaces "]\\|=\nmore',
                effective_at=EPOCH,
                doc={"value": value, "nested": {"k=v|]": [value, {"\n": value}]}},
            )
        )
    return out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hostile_strings_arrive_as_one_message_each(rsyslog: Rsyslog, transport: str) -> None:
    tag = f"hostile-{transport}-{uuid.uuid4().hex[:8]}"
    batch = hostile_records(tag)
    # UDP's default limit is 8 KB; loopback UDP carries up to 64 KB and rsyslog is set to 64 KB.
    params = {"max_size": 60000} if transport == "udp" else {}
    sink = open_sink(rsyslog.url(transport, **params))
    assert sink.write(batch) == []
    sink.close()

    got = wait_received(rsyslog, tag, len(batch))
    assert len(got) == len(batch)
    by_doc = {m["msg"]: m for m in got}
    for record in batch:
        message = by_doc[orjson.dumps(record.doc).decode()]
        assert orjson.loads(message["msg"]) == record.doc
        assert message["msgid"] == 'custom.typewithspaces"]\\|=more'
        # The SD value carries the newline as the two characters \n, never raw.
        assert message["structured_data"] == (
            f'[openai@32473 id="{escape_param(record.id)}" '
            'type="custom.type with spaces \\"\\]\\\\|=\\nmore"]'
        )
        assert message["hostname"] != "fake-host"


def test_cef_format_parses_with_escaped_header_and_extensions(rsyslog: Rsyslog) -> None:
    tag = f"cef-{uuid.uuid4().hex[:8]}"
    doc = {
        "event": {"action": "login.failed", "outcome": "failure", "id": f"{tag}-0"},
        "user": {"email": "mallory=admin\\x@example.com\nsecond line"},
        "source": {"ip": "198.51.100.7"},
        "openai": {"audit": {"project": {"id": "proj|1=2"}}},
        "message": "a|b=c\\d\ne\x00f",
    }
    record = Record(id=f"{tag}-0", type="login.failed", effective_at=EPOCH, doc=doc)
    sink = open_sink(rsyslog.url("tcp", format="cef"))
    assert sink.write([record]) == []
    sink.close()
    [message] = wait_received(rsyslog, tag, 1)

    header, extensions = parse_cef(message["msg"])
    assert header == ["CEF:0", "OpenAI", "Audit Log", "0.1.0", "login.failed", "login failed", "6"]
    assert extensions["rt"] == str(EPOCH * 1000)
    assert extensions["externalId"] == f"{tag}-0"
    assert extensions["act"] == "login.failed"
    assert extensions["outcome"] == "failure"
    assert extensions["suser"] == "mallory=admin\\x@example.com\nsecond line"
    assert extensions["src"] == "198.51.100.7"
    assert (extensions["cs1Label"], extensions["cs1"]) == ("project", "proj|1=2")
    assert extensions["cs6Label"] == "document"
    assert orjson.loads(extensions["cs6"]) == doc


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """An independent CEF reader: 7 header fields split on unescaped pipes, then `key=value`
    pairs where a value runs until the next unescaped ` key=`."""
    fields: list[str] = []
    current, i = "", 0
    while len(fields) < 7:
        ch = line[i]
        if ch == "\\" and line[i + 1] in "\\|":
            current += line[i + 1]
            i += 2
            continue
        if ch == "|":
            fields.append(current)
            current = ""
        else:
            current += ch
        i += 1
    rest = line[i:]
    starts = [m for m in re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", rest) if not _escaped(rest, m)]
    extensions = {}
    for n, m in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(rest)
        raw = rest[m.end() : end]
        extensions[m.group(1)] = re.sub(
            r"\\(.)", lambda e: {"n": "\n", "r": "\r"}.get(e.group(1), e.group(1)), raw
        )
    return fields, extensions


def _escaped(text: str, match: re.Match[str]) -> bool:
    """Is the `=` of this match preceded by an odd number of backslashes?"""
    eq = match.end() - 1
    backslashes = len(text[:eq]) - len(text[:eq].rstrip("\\"))
    return backslashes % 2 == 1


def test_udp_oversize_messages_are_rejected_not_truncated(rsyslog: Rsyslog) -> None:
    tag = f"udpsize-{uuid.uuid4().hex[:8]}"
    batch = [
        Record(id=f"{tag}-{i}", type="user.updated", effective_at=EPOCH, doc={"pad": "x" * size})
        for i, size in enumerate([100, 1900, 2100, 5000, 10])
    ]
    sink = open_sink(rsyslog.url("udp", max_size=2048))
    rejected = sink.write(batch)
    sink.close()
    assert [r.record.id for r in rejected] == [f"{tag}-2", f"{tag}-3"]
    assert all("over max_size=2048" in r.reason for r in rejected)
    got = wait_received(rsyslog, tag, 3)
    assert sorted(orjson.loads(m["msg"])["pad"].__len__() for m in got) == [10, 100, 1900]


def test_udp_default_limit_is_8192_bytes(rsyslog: Rsyslog) -> None:
    sink = open_sink(rsyslog.url("udp"))
    big = Record(id="big", type="user.updated", effective_at=EPOCH, doc={"pad": "x" * 8200})
    [rejection] = sink.write([big])
    assert "over max_size=8192" in rejection.reason
    sink.close()


@pytest.mark.parametrize("transport", ["tcp", "relp"])
def test_stream_oversize_messages_are_rejected(rsyslog: Rsyslog, transport: str) -> None:
    tag = f"streamsize-{transport}-{uuid.uuid4().hex[:8]}"
    sink = open_sink(rsyslog.url(transport))
    assert sink.max_size == 65536
    batch = [
        Record(id=f"{tag}-0", type="user.updated", effective_at=EPOCH, doc={"pad": "x" * 70000}),
        Record(id=f"{tag}-1", type="user.updated", effective_at=EPOCH, doc={"pad": "ok"}),
    ]
    [rejection] = sink.write(batch)
    sink.close()
    assert rejection.record.id == f"{tag}-0"
    assert len(wait_received(rsyslog, tag, 1)) == 1


def test_lf_framing_carries_line_breaks_and_nul_in_every_field_escaped(rsyslog: Rsyslog) -> None:
    tag = f"lf-{uuid.uuid4().hex[:8]}"
    batch = [
        Record(id=f"{tag}-0", type="user.updated", effective_at=EPOCH, doc={"v": "a\nb\rc\0"}),
        Record(id=f"{tag}-1\nx\ry\0z", type="user.up\rdated\0", effective_at=EPOCH, doc={"v": 1}),
        Record(id=f"{tag}-2", type="user.updated", effective_at=EPOCH, doc={"v": 2}),
    ]
    sink = open_sink(rsyslog.url("tcp", framing="lf"))
    assert sink.write(batch) == []
    sink.close()
    got = wait_received(rsyslog, tag, 3)
    assert len(got) == 3
    assert sorted(m["msg"] for m in got) == ['{"v":"a\\nb\\rc\\u0000"}', '{"v":1}', '{"v":2}']
    [escaped] = [m for m in got if m["msg"] == '{"v":1}']
    assert escaped["structured_data"] == (
        f'[openai@32473 id="{tag}-1\\nx\\ry z" type="user.up\\rdated "]'
    )
    assert escaped["msgid"] == "user.updated"


def test_unrenderable_document_is_rejected_and_the_rest_delivered(rsyslog: Rsyslog) -> None:
    tag = f"bad-{uuid.uuid4().hex[:8]}"
    batch = [
        Record(id=f"{tag}-0", type="user.updated", effective_at=EPOCH, doc={"s": "\ud800"}),
        Record(id=f"{tag}-1", type="user.updated", effective_at=EPOCH, doc={"ok": True}),
    ]
    sink = open_sink(rsyslog.url("relp"))
    [rejection] = sink.write(batch)
    sink.close()
    assert rejection.record.id == f"{tag}-0"
    assert "cannot render" in rejection.reason
    assert len(wait_received(rsyslog, tag, 1)) == 1


# -- checks and errors -----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "tls", "relp", "relp+tls"])
def test_check_connects_without_sending_events(rsyslog: Rsyslog, transport: str) -> None:
    before = rsyslog.count()
    result = open_sink(rsyslog.url(transport)).check()
    assert "\n" not in result
    assert str(rsyslog.url(transport).split("//")[1].split("?")[0]) in result
    if transport.startswith("relp"):
        assert "RELP session opened (librelp" in result
    if transport == "tls":
        assert "certificate verified" in result
    rsyslog.drain()
    assert rsyslog.count() == before


def one_line_error(excinfo: pytest.ExceptionInfo[SinkError]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wrongca") / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(path)
    return path


@pytest.mark.parametrize("transport", ["tls", "relp+tls"])
def test_wrong_ca_is_a_one_line_error_from_check_and_write(
    rsyslog: Rsyslog, wrong_ca: Path, transport: str
) -> None:
    sink = open_sink(rsyslog.url(transport, ca_file=str(wrong_ca), retries=1))
    with pytest.raises(SinkError) as excinfo:
        sink.check()
    assert "certificate" in one_line_error(excinfo)
    with pytest.raises(SinkError) as excinfo:
        sink.write(records("wrongca", 3))
    assert "certificate" in one_line_error(excinfo)


def test_tls_checks_the_server_hostname(rsyslog: Rsyslog) -> None:
    sink = open_sink(rsyslog.url("tls", server_name="not-the-server.example"))
    with pytest.raises(SinkError) as excinfo:
        sink.check()
    assert "not-the-server.example" in one_line_error(excinfo)


def test_tls_verify_false_accepts_an_unknown_ca_and_says_so(
    rsyslog: Rsyslog, wrong_ca: Path
) -> None:
    sink = open_sink(rsyslog.url("tls", ca_file=str(wrong_ca), verify="false"))
    assert "certificate NOT verified" in sink.check()


@pytest.mark.parametrize("transport", ["tcp", "tls", "relp"])
def test_unreachable_host_is_a_one_line_error_from_check_and_write(
    rsyslog: Rsyslog, transport: str
) -> None:
    sink = open_sink(rsyslog.url(transport, port=free_port(), retries=1))
    with pytest.raises(SinkError) as excinfo:
        sink.check()
    assert "cannot connect" in one_line_error(excinfo)
    with pytest.raises(SinkError) as excinfo:
        sink.write(records("unreachable", 3))
    assert "cannot connect" in one_line_error(excinfo)


def test_udp_to_a_closed_port_fails_the_write() -> None:
    # On loopback the ICMP port-unreachable comes back at once and fails a later send.
    sink = open_sink(f"syslog+udp://127.0.0.1:{free_port(2)}")
    with pytest.raises(SinkError) as excinfo:
        for _ in range(20):
            sink.write(records("closed-udp", 50))
    assert "UDP send failed" in one_line_error(excinfo)


def test_max_size_above_the_receivers_limit_gets_messages_cut_by_rsyslog(
    rsyslog: Rsyslog,
) -> None:
    """Why max_size must not exceed the receiver's maxMessageSize: rsyslog truncates an
    oversize RELP frame (and still acknowledges it) and splits an oversize TCP frame into a
    truncated message plus a bogus one made of the rest."""
    tag = f"cut-{uuid.uuid4().hex[:8]}"
    big = {"pad": "x" * 100_000}
    for transport in ("relp", "tcp"):
        sink = open_sink(rsyslog.url(transport, max_size=200_000))
        assert sink.write([Record(f"{tag}-{transport}", "user.updated", EPOCH, big)]) == []
        sink.close()
    got = wait_received(rsyslog, tag, 2)
    assert all(len(m["msg"]) < 65536 for m in got)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(got[0]["msg"])
    bogus = [m for m in rsyslog.messages()[-5:] if m["structured_data"] == "-"]
    assert bogus and set(bogus[-1]["msg"]) == {"x"} | set('"}')
