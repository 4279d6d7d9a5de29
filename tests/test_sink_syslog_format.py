"""The syslog sink without rsyslog: the exact RFC 5424 bytes, severities, facilities, SD and
CEF escaping, URL parameters, and the RELP client against a scripted server for the error
answers rsyslog cannot be made to give."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest

from forwarder.sinks import Record, SinkConfigError, SinkError, open_sink
from forwarder.sinks.syslog.cef import CefBody, escape_extension, escape_header
from forwarder.sinks.syslog.relp import RelpError, RelpSession
from forwarder.sinks.syslog.rfc5424 import (
    MessageBuilder,
    escape_param,
    parse_facility,
    printable_ascii,
    severity_for,
)

EPOCH = 1_748_779_200  # 2025-06-01T12:00:00Z


def test_message_is_rfc5424_with_single_spaces_and_the_json_document() -> None:
    builder = MessageBuilder(
        facility=16,
        hostname="host.example",
        app_name="openai-audit-forwarder",
        procid="4242",
        body=lambda record, severity: b'{"a":1}',
    )
    record = Record(id='audit_log-1"]\\', type="login.failed", effective_at=EPOCH, doc={})
    assert builder.build(record) == (
        b"<132>1 2025-06-01T12:00:00Z host.example openai-audit-forwarder 4242 login.failed "
        b'[openai@32473 id="audit_log-1\\"\\]\\\\" type="login.failed"] {"a":1}'
    )


@pytest.mark.parametrize(
    ("event_type", "severity"),
    [
        ("login.failed", 4),
        ("logout.failed", 4),
        ("api_key.deleted", 5),
        ("tenant.group.member.removed", 5),
        ("tenant.chatgpt_access_token.revoked", 5),
        ("certificates.deactivated", 5),
        ("role.unbound_from_resource", 5),
        ("tenant.session_revocation.started", 5),
        ("api_key.created", 6),
        ("login.succeeded", 6),
        ("some.future.event", 6),
        ("", 6),
    ],
)
def test_severity_comes_from_the_event_type(event_type: str, severity: int) -> None:
    assert severity_for(event_type) == severity


def test_facility_by_name_or_number_and_bad_values_are_config_errors() -> None:
    assert parse_facility("local0") == 16
    assert parse_facility("AUTHPRIV") == 10
    assert parse_facility("23") == 23
    for bad in ("local8", "24", "-1", ""):
        with pytest.raises(ValueError):
            parse_facility(bad)
    with pytest.raises(SinkConfigError, match="facility"):
        open_sink("syslog+tcp://127.0.0.1:514?facility=nope")


def test_default_facility_is_authpriv() -> None:
    sink = open_sink("syslog+tcp://127.0.0.1:514?hostname=h")
    record = Record(id="x", type="user.added", effective_at=EPOCH, doc={})
    assert sink._builder.build(record).startswith(b"<86>1 ")  # 10 * 8 + 6


def test_header_fields_keep_printable_ascii_and_are_cut_to_their_limits() -> None:
    assert printable_ascii("a b\tc\x00dé", 32) == "abcd"
    assert printable_ascii("x" * 40, 32) == "x" * 32
    assert printable_ascii(" \n", 32) == "-"
    assert escape_param('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert escape_param("a\r\nb\x00c\x1bd\te") == "a\\r\\nb c d\te"


def test_cef_escaping() -> None:
    assert escape_header("a|b\\c\nd") == "a\\|b\\\\c d"
    assert escape_header("a\rb\x00c") == "a b c"
    assert escape_extension("k=v\\x\r\ny\x00z\tt") == "k\\=v\\\\x\\r\\ny z\tt"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("syslog+udp://127.0.0.1:514?framing=lf", "unknown parameter 'framing'"),
        ("syslog+tcp://127.0.0.1:514?ca_file=/x", "unknown parameter 'ca_file'"),
        ("syslog+relp://127.0.0.1:514?ca_file=/x", "TLS parameters need tls=true"),
        ("syslog+tcp://127.0.0.1:514?framing=nul", "framing"),
        ("syslog+tcp://127.0.0.1:514?format=xml", "format"),
        ("syslog+tcp://127.0.0.1:514?max_size=10", "max_size must be >= 64"),
        ("syslog+tls://127.0.0.1:514?ca_file=/nonexistent.pem", "TLS setup"),
        ("syslog+tcp://127.0.0.1", "needs HOST:PORT"),
        ("syslog+tcp://127.0.0.1:514?sd_id=ours]x", "sd_id='ours]x' must not contain"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_setting(url: str, message: str) -> None:
    with pytest.raises(SinkConfigError, match=message.replace("'", ".")):
        open_sink(url)


def test_default_max_sizes_are_explicit() -> None:
    assert open_sink("syslog+udp://127.0.0.1:514").max_size == 8192
    for scheme in ("tcp", "tls", "relp"):
        assert open_sink(f"syslog+{scheme}://127.0.0.1:514").max_size == 65536


# -- RELP framing ------------------------------------------------------------------------


def test_relp_frames_split_at_every_byte_are_reassembled() -> None:
    ours, theirs = socket.socketpair()
    session = RelpSession(ours)
    stream = b"1 rsp 6 200 OK\n2 rsp 0\n3 rsp 13 500 error\nxyz\n0 serverclose 0\n"
    frames = []
    for byte in stream:
        theirs.sendall(bytes([byte]))
        frames.extend(session.frames())
    assert frames == [
        (1, b"rsp", b"200 OK"),
        (2, b"rsp", b""),
        (3, b"rsp", b"500 error\nxyz"),
        (0, b"serverclose", b""),
    ]


@pytest.mark.parametrize("garbage", [b"hello world\n", b"1 rsp 6 200 OKX\n", b"1 rsp x\n"])
def test_relp_malformed_frames_break_the_session(garbage: bytes) -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(garbage)
    with pytest.raises(RelpError):
        RelpSession(ours).frames()


def _read_frame(reader: BinaryIO) -> tuple[bytes, bytes, bytes] | None:
    """`TXNR SP COMMAND SP DATALEN [SP DATA] LF`, read byte by byte."""
    head = b""
    while head.count(b" ") < 2:
        byte = reader.read(1)
        if not byte:
            return None
        head += byte
    digits = b""
    while (byte := reader.read(1)).isdigit():
        digits += byte
    if not byte:
        return None
    data = b""
    if byte == b" ":
        data = reader.read(int(digits))
        reader.read(1)
    txnr, command, _ = head.split(b" ")
    return txnr, command, data


class ScriptedRelpServer:
    """A RELP server on loopback whose answer to each `syslog` command is scripted:
    `answer(connection_number, message_number_on_connection) -> bytes`."""

    def __init__(self, answer: Callable[[int, int], bytes], offers: bytes = b"syslog") -> None:
        self.answer = answer
        self.offers = offers
        self.received: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._session, args=(conn, self.connections)).start()

    def _session(self, conn: socket.socket, number: int) -> None:
        reader = conn.makefile("rb")
        count = 0
        with conn, contextlib.suppress(OSError):
            while True:
                frame = _read_frame(reader)
                if frame is None:
                    return
                txnr, command, data = frame
                if command == b"open":
                    reply = b"200 OK\nrelp_version=0\ncommands=" + self.offers
                    conn.sendall(b"%s rsp %d %s\n" % (txnr, len(reply), reply))
                elif command == b"close":
                    conn.sendall(b"%s rsp 0\n" % txnr)
                    return
                else:
                    count += 1
                    reply = self.answer(number, count)
                    if reply.startswith(b"200"):
                        self.received.append(data)
                    conn.sendall(b"%s rsp %d %s\n" % (txnr, len(reply), reply))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def records() -> list[Record]:
    return [
        Record(id=f"r-{i}", type="user.updated", effective_at=EPOCH, doc={"i": i})
        for i in range(20)
    ]


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ScriptedRelpServer]]:
    servers: list[ScriptedRelpServer] = []

    def make(*args: object, **kwargs: object) -> ScriptedRelpServer:
        servers.append(ScriptedRelpServer(*args, **kwargs))  # type: ignore[arg-type]
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_relp_error_answer_reconnects_and_resends_the_unacknowledged(
    records: list[Record], server_factory: Callable[..., ScriptedRelpServer]
) -> None:
    server = server_factory(
        lambda conn, n: b"500 queue full" if conn == 1 and n == 5 else b"200 OK"
    )
    sink = open_sink(f"syslog+relp://127.0.0.1:{server.port}?window=4")
    assert sink.write(records) == []
    sink.close()
    ids = {r.id for r in records}
    got = {m.split(b' id="')[1].split(b'"')[0].decode() for m in server.received}
    assert got == ids
    assert server.connections == 2


def test_relp_persistent_error_answers_end_in_one_line_sink_error(
    records: list[Record], server_factory: Callable[..., ScriptedRelpServer]
) -> None:
    server = server_factory(lambda conn, n: b"500 disk full\nmore detail")
    sink = open_sink(f"syslog+relp://127.0.0.1:{server.port}?retries=1")
    with pytest.raises(SinkError) as excinfo:
        sink.write(records)
    text = str(excinfo.value)
    assert "\n" not in text
    assert "20 of 20 messages not acknowledged after 2 attempts" in text
    assert "500 disk full" in text


def test_relp_server_without_the_syslog_command_is_refused(
    server_factory: Callable[..., ScriptedRelpServer],
) -> None:
    server = server_factory(lambda conn, n: b"200 OK", offers=b"rsp")
    with pytest.raises(SinkError, match="does not offer the RELP syslog command"):
        open_sink(f"syslog+relp://127.0.0.1:{server.port}").check()


@pytest.mark.parametrize("schema", ["ecs", "ocsf", "raw"])
def test_cef_extensions_are_found_in_each_schemas_mapped_document(schema: str) -> None:
    """The CEF lookup paths match what the mappers produce (actor, source IP, project)."""
    from mappings.registry import MappingContext, load_mapper

    sample = Path(__file__).resolve().parents[1] / "samples" / "audit-log.jsonl"
    event = next(
        e
        for e in map(orjson.loads, sample.read_bytes().splitlines())
        if e["type"] == "api_key.created"
        and (e.get("actor") or {}).get("type") == "session"
        and e.get("project")
    )
    doc = load_mapper(schema, MappingContext("org-test"))(event)
    record = Record(id=event["id"], type=event["type"], effective_at=event["effective_at"], doc=doc)
    line = CefBody()(record, severity_for(record.type)).decode()
    session = event["actor"]["session"]
    assert f"externalId={event['id']} " in line
    assert "act=api_key.created " in line
    assert f"suser={session['user']['email']} " in line
    assert f"src={session['ip_address']} " in line
    assert f"cs1Label=project cs1={event['project']['id']} " in line
    assert line.split("|")[:7] == [
        "CEF:0",
        "OpenAI",
        "Audit Log",
        "0.1.0",
        "api_key.created",
        "api key created",
        "3",
    ]


def test_relp_retries_count_failures_in_a_row_without_progress(
    records: list[Record], server_factory: Callable[..., ScriptedRelpServer]
) -> None:
    """Every connection answers its 3rd message with an error: each attempt gets two messages
    acknowledged, so retries=1 (two failures in a row without progress) never runs out."""
    server = server_factory(lambda conn, n: b"500 busy" if n == 3 else b"200 OK")
    sink = open_sink(f"syslog+relp://127.0.0.1:{server.port}?retries=1&window=1")
    assert sink.write(records) == []
    sink.close()
    assert len(server.received) == len(records)
    assert server.connections == 10
