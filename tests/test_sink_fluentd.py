"""The Fluentd Forward sink against the in-repo Forward server over real loopback sockets:
exactly-once delivery with EventTime, TLS, shared key, acks withheld, receiver restarts."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator

import msgpack
import pytest
import trustme
from fluent.sender import EventTime, FluentSender

from forwarder.sinks import Record, SinkConfigError, SinkError, open_sink
from forwarder.sinks.fluentd import FluentdSink
from tests.fakes.forward_server import EventTimeValue, ForwardServer
from tests.peers import free_port
from tests.waiting import wait_for

BASE_TS = 1_732_000_000
SECRET = "s3cr3t-shared-key-value"


def make_records(n: int, start: int = 0, prefix: str = "evt") -> list[Record]:
    return [
        Record(
            id=f"{prefix}_{i:06d}",
            type="api_key.created",
            effective_at=BASE_TS + i // 10,
            doc={
                "@timestamp": BASE_TS + i // 10,
                "event": {"id": f"{prefix}_{i:06d}", "action": "api_key.created"},
                "user": {"email": f"user{i}@example.com"},
                "n": i,
            },
        )
        for i in range(start, start + n)
    ]


def ids_of(server: ForwardServer) -> list[str]:
    return [record["event"]["id"] for _, _, record in server.entries]


def write_in_batches(sink: FluentdSink, records: list[Record], size: int) -> None:
    for i in range(0, len(records), size):
        assert sink.write(records[i : i + size]) == []


@pytest.fixture
def server() -> Iterator[ForwardServer]:
    with ForwardServer() as srv:
        yield srv


@pytest.fixture
def sinks() -> Iterator[list[FluentdSink]]:
    opened: list[FluentdSink] = []
    yield opened
    for sink in opened:
        sink.close()


@pytest.fixture
def make_sink(sinks: list[FluentdSink]):
    def make(url: str) -> FluentdSink:
        sink = open_sink(url)
        assert isinstance(sink, FluentdSink)
        sinks.append(sink)
        return sink

    return make


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


@pytest.fixture
def shared_key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLUENTD_TEST_KEY", SECRET)
    return "FLUENTD_TEST_KEY"


# -- delivery -----------------------------------------------------------------------------------


def test_ten_thousand_records_arrive_exactly_once_with_event_time(server, make_sink):
    records = make_records(10_000)
    sink = make_sink(server.url(tag="openai.audit.ecs"))
    write_in_batches(sink, records, 1000)

    assert Counter(ids_of(server)) == Counter(r.id for r in records)
    assert all(count == 1 for count in Counter(ids_of(server)).values())
    by_id = {r.id: r for r in records}
    for tag, event_time, record in server.entries:
        assert tag == "openai.audit.ecs"
        assert event_time == EventTimeValue(by_id[record["event"]["id"]].effective_at, 0)
        assert record == by_id[record["event"]["id"]].doc
    assert server.modes == Counter({"PackedForward": 10})
    assert server.time_formats == Counter({"EventTime": 10_000})
    assert server.acked_chunks == server.received_chunks
    assert len(set(server.received_chunks)) == 10
    assert server.errors == []


def test_event_time_carries_nanoseconds_of_a_fractional_effective_at(server, make_sink):
    record = Record(id="a", type="t", effective_at=BASE_TS + 0.25, doc={"id": "a"})  # type: ignore[arg-type]
    make_sink(server.url()).write([record])
    assert server.entries[0][1] == EventTimeValue(BASE_TS, 250_000_000)


HOSTILE = [
    "line one\nline two\r\nline three",
    "quotes \" and ' and `",
    "brackets ] [ } { and pipes | and equals = and backslash \\",
    "nul \x00 inside \x00\x00",
    "x" * 9 * 1024,
    "unicode: żółć ✓ \u2028 \U0001f600",
    "",
]


def test_hostile_strings_arrive_unchanged_as_one_entry_each(server, make_sink):
    records = [
        Record(
            id=f"h{i}",
            type="weird]|=\n",
            effective_at=BASE_TS,
            doc={"id": f"h{i}", "value": value, f"key\n{value[:20]}": value, "nested": [value]},
        )
        for i, value in enumerate(HOSTILE)
    ]
    make_sink(server.url()).write(records)
    assert [record for _, _, record in server.entries] == [r.doc for r in records]


def test_gzip_sends_compressed_packed_forward_that_decodes_to_the_same_entries(server, make_sink):
    records = make_records(3000)
    write_in_batches(make_sink(server.url(compress="gzip")), records, 1000)
    assert server.modes == Counter({"CompressedPackedForward": 3})
    assert [record for _, _, record in server.entries] == [r.doc for r in records]


def test_a_large_batch_is_split_into_chunks_each_acknowledged(server, make_sink):
    records = make_records(2000)
    make_sink(server.url(chunk_bytes="20000")).write(records)
    assert len(server.batches) > 5
    assert sorted(server.acked_chunks) == sorted(set(server.received_chunks))
    assert len(server.received_chunks) == len(server.batches)
    assert ids_of(server) == [r.id for r in records]


def test_hundreds_of_small_chunks_in_one_batch_are_all_acknowledged(server, make_sink):
    records = make_records(3000)
    make_sink(server.url(chunk_bytes="1024")).write(records)
    assert len(server.received_chunks) > 300
    assert len(set(server.received_chunks)) == len(server.received_chunks)
    assert ids_of(server) == [r.id for r in records]


def test_a_counting_server_counts_entries_without_keeping_them(make_sink):
    with ForwardServer(store=False, decode=False) as srv:
        sink = make_sink(srv.url(compress="gzip"))
        sink.write(make_records(1500))
        make_sink(srv.url()).write(make_records(500))
        assert srv.entry_count == 2000 and srv.entries == []
        assert len(srv.acked_chunks) == 2


def test_a_record_that_cannot_be_encoded_is_rejected_and_the_rest_delivered(server, make_sink):
    records = make_records(3)
    bad = Record(id="bad", type="t", effective_at=BASE_TS, doc={"x": {1, 2}})
    rejections = make_sink(server.url()).write([records[0], bad, *records[1:]])
    assert [(r.record.id, "cannot encode" in r.reason) for r in rejections] == [("bad", True)]
    assert ids_of(server) == [r.id for r in records]


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_with_the_right_ca_delivers(ca, ca_file, make_sink):
    with ForwardServer(ssl_context=server_context(ca)) as srv:
        sink = make_sink(srv.url("fluentd+tls", ca_file=ca_file))
        assert sink.check() == f"fluentd+tls://127.0.0.1:{srv.port}: connected (tls)"
        sink.write(make_records(100))
        assert len(srv.entries) == 100


def test_tls_with_a_wrong_ca_fails_with_one_line_error_and_sends_nothing(ca, make_sink, tmp_path):
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with ForwardServer(ssl_context=server_context(ca)) as srv:
        sink = make_sink(srv.url("fluentd+tls", ca_file=str(other), backoff="0"))
        for action in (sink.check, lambda: sink.write(make_records(5))):
            with pytest.raises(SinkError) as info:
                action()
            message = str(info.value)
            assert message.startswith(f"fluentd 127.0.0.1:{srv.port}: TLS certificate verification")
            assert "\n" not in message
        assert srv.messages == 0


def test_tls_checks_the_server_hostname(ca, ca_file, make_sink):
    with ForwardServer(ssl_context=server_context(ca, "fluentd.example.com")) as srv:
        sink = make_sink(srv.url("fluentd+tls", ca_file=ca_file))
        with pytest.raises(SinkError, match=r"verification failed: .*mismatch"):
            sink.check()


def test_tls_verify_false_accepts_an_unknown_ca_only_when_asked(ca, make_sink):
    with ForwardServer(ssl_context=server_context(ca)) as srv:
        with pytest.raises(SinkError, match="certificate verification failed"):
            make_sink(srv.url("fluentd+tls")).check()  # system CAs do not know the test CA
        sink = make_sink(srv.url("fluentd+tls", verify="false"))
        sink.write(make_records(10))
        assert len(srv.entries) == 10


# -- shared key -----------------------------------------------------------------------------------


def test_shared_key_over_tls_handshakes_and_delivers(ca, ca_file, shared_key_env, make_sink):
    with ForwardServer(ssl_context=server_context(ca), shared_key=SECRET) as srv:
        sink = make_sink(srv.url("fluentd+tls", ca_file=ca_file, shared_key_env=shared_key_env))
        assert sink.check() == (
            f"fluentd+tls://127.0.0.1:{srv.port}: connected (tls, shared key ok)"
        )
        assert srv.messages == 0
        sink.write(make_records(500))
        assert len(srv.entries) == 500
        assert srv.auth_failures == [] and srv.errors == []


def test_shared_key_from_a_file_handshakes_and_a_missing_file_is_a_config_error(
    make_sink, tmp_path
):
    key_file = tmp_path / "shared-key"
    key_file.write_text(SECRET + "\n")
    with ForwardServer(shared_key=SECRET) as srv:
        sink = make_sink(srv.url(shared_key_file=str(key_file)))
        sink.write(make_records(10))
        assert len(srv.entries) == 10 and srv.auth_failures == []
        with pytest.raises(SinkConfigError, match="shared_key_file: cannot read") as caught:
            open_sink(srv.url(shared_key_file=str(tmp_path / "missing")))
        assert SECRET not in str(caught.value)


def test_wrong_shared_key_is_a_one_line_error_without_the_key(monkeypatch, make_sink):
    monkeypatch.setenv("FLUENTD_TEST_KEY", SECRET)
    with ForwardServer(shared_key="the-server-key") as srv:
        sink = make_sink(srv.url(shared_key_env="FLUENTD_TEST_KEY", backoff="0"))
        for action in (sink.check, lambda: sink.write(make_records(5))):
            with pytest.raises(SinkError) as info:
                action()
            message = str(info.value)
            assert message.startswith(f"fluentd 127.0.0.1:{srv.port}: shared key rejected")
            assert "\n" not in message
            assert SECRET not in message and SECRET not in repr(info.value)
            assert "the-server-key" not in message
            assert info.value.__cause__ is None and info.value.__suppress_context__
        assert srv.auth_failures == ["shared_key mismatch"] * 2
        assert srv.entries == []
        assert SECRET not in repr(sink)


def test_a_server_that_does_not_know_the_key_is_rejected(shared_key_env, make_sink):
    with ForwardServer(shared_key="guess", accept_any_key=True) as srv:
        sink = make_sink(srv.url(shared_key_env=shared_key_env))
        with pytest.raises(SinkError, match="server failed shared-key verification"):
            sink.write(make_records(5))
        assert srv.messages == 0


def test_a_server_wanting_a_shared_key_is_reported_by_check(make_sink):
    with (
        ForwardServer(shared_key=SECRET) as srv,
        pytest.raises(SinkError, match="requires shared-key authentication"),
    ):
        make_sink(srv.url()).check()


def test_user_authentication_with_username_and_password(monkeypatch, shared_key_env, make_sink):
    monkeypatch.setenv("FLUENTD_USER", "collector")
    monkeypatch.setenv("FLUENTD_PASSWORD", "pa55")
    users = {"collector": "pa55"}
    with ForwardServer(shared_key=SECRET, users=users) as srv:
        url = srv.url(
            shared_key_env=shared_key_env,
            username_env="FLUENTD_USER",
            password_env="FLUENTD_PASSWORD",
        )
        assert make_sink(url).check().endswith("(tcp, shared key ok, user auth ok)")
        monkeypatch.setenv("FLUENTD_PASSWORD", "wrong")
        with pytest.raises(SinkError, match=r"rejected by the server \(username/password mismatch"):
            make_sink(url).check()
        with pytest.raises(SinkError, match=r"user name or password rejected by the server"):
            make_sink(srv.url(shared_key_env=shared_key_env)).check()


def test_shared_key_alone_answers_the_auth_salt_that_real_fluentd_always_sends(
    shared_key_env, make_sink
):
    with ForwardServer(shared_key=SECRET) as srv:
        sink = make_sink(srv.url(shared_key_env=shared_key_env))
        assert sink.check().endswith("(tcp, shared key ok)")
        sink.write(make_records(20))
        assert len(srv.entries) == 20 and srv.auth_failures == []


def test_a_shared_key_for_a_server_without_security_fails_at_once_naming_the_cause(
    server, shared_key_env, make_sink
):
    sink = make_sink(server.url(shared_key_env=shared_key_env))
    for action in (sink.check, lambda: sink.write(make_records(5))):
        started = time.monotonic()
        with pytest.raises(SinkError, match=r"server has no <security>; drop shared_key_env$") as e:
            action()
        assert e.value.permanent and time.monotonic() - started < 5
    assert server.entry_count == 0


def test_a_plain_client_to_a_tls_server_fails_at_once_naming_the_cause(ca, make_sink):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with ForwardServer(ssl_context=context) as srv:
        sink = make_sink(srv.url())
        for action in (sink.check, lambda: sink.write(make_records(5))):
            started = time.monotonic()
            with pytest.raises(SinkError, match=r"server speaks TLS; use fluentd\+tls://$") as e:
                action()
            assert e.value.permanent and time.monotonic() - started < 5
        assert srv.entry_count == 0


@pytest.mark.parametrize("key", [False, True])
def test_a_tls_client_to_a_plain_server_fails_at_once_naming_the_cause(
    key, shared_key_env, make_sink
):
    with ForwardServer(shared_key=SECRET if key else None) as srv:
        params = {"verify": "false"} | ({"shared_key_env": shared_key_env} if key else {})
        sink = make_sink(srv.url("fluentd+tls", **params))
        started = time.monotonic()
        with pytest.raises(SinkError, match=r"server does not speak TLS .*; use fluentd://$") as e:
            sink.write(make_records(5))
        assert e.value.permanent and time.monotonic() - started < 5
        assert srv.entry_count == 0


def test_a_server_without_keepalive_gets_a_new_connection_per_write(shared_key_env, make_sink):
    with ForwardServer(shared_key=SECRET, keepalive=False) as srv:
        sink = make_sink(srv.url(shared_key_env=shared_key_env))
        sink.write(make_records(10))
        sink.write(make_records(10, start=10))
        assert srv.connections == 2 and len(srv.entries) == 20


def test_a_missing_shared_key_variable_is_a_config_error_naming_it(monkeypatch):
    monkeypatch.delenv("NO_SUCH_FLUENTD_KEY", raising=False)
    with pytest.raises(SinkConfigError, match="NO_SUCH_FLUENTD_KEY is not set"):
        open_sink("fluentd://127.0.0.1:24224?shared_key_env=NO_SUCH_FLUENTD_KEY")


# -- acks, retries, restarts ----------------------------------------------------------------------


def test_withheld_ack_times_out_and_the_same_chunk_id_is_resent(server, make_sink):
    server.withhold_acks = 1
    records = make_records(200)
    sink = make_sink(server.url(ack_timeout="0.3", backoff="0.01"))
    started = time.monotonic()
    assert sink.write(records) == []
    assert time.monotonic() - started >= 0.3
    assert len(server.received_chunks) == 2
    assert server.received_chunks[0] == server.received_chunks[1]
    assert server.acked_chunks == server.received_chunks[1:]
    # The receiver keeps both copies (it does not de-duplicate): at least once, same chunk id.
    assert Counter(ids_of(server)) == Counter({r.id: 2 for r in records})
    assert set(server.chunk_of_entry()) == {server.received_chunks[0]}


def test_an_ack_for_another_chunk_is_not_taken_as_delivery(server, make_sink):
    server.corrupt_acks = 1
    make_sink(server.url(backoff="0.01")).write(make_records(100))
    assert len(server.received_chunks) == 2
    assert server.received_chunks[0] == server.received_chunks[1]
    assert server.acked_chunks == server.received_chunks[1:]


def test_acks_are_matched_to_their_chunks_when_several_are_in_flight(server, make_sink):
    server.corrupt_acks = 1
    records = make_records(2000)
    make_sink(server.url(chunk_bytes="20000", backoff="0.01")).write(records)
    assert set(ids_of(server)) == {r.id for r in records}
    assert sorted(set(server.acked_chunks)) == sorted(set(server.received_chunks))
    assert len(server.received_chunks) > len(set(server.received_chunks))


def test_garbage_instead_of_an_ack_is_a_retried_then_one_line_error(make_sink):
    listener = socket.create_server(("127.0.0.1", 0))
    connections = []

    def answer_garbage() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn)
            conn.recv(1 << 20)
            conn.sendall(b"\xc1\xc1")  # 0xc1 is never used in msgpack

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        sink = make_sink(f"fluentd://127.0.0.1:{port}?retries=2&backoff=0.01")
        with pytest.raises(SinkError, match=r"invalid msgpack from the server .*\(2 attempts"):
            sink.write(make_records(3))
        assert len(connections) == 2
    finally:
        listener.close()
        for conn in connections:
            conn.close()


def test_a_delayed_ack_within_the_timeout_is_not_resent(server, make_sink):
    server.ack_delay = 0.2
    make_sink(server.url(ack_timeout="2")).write(make_records(100))
    assert len(server.received_chunks) == 1 and len(server.entries) == 100


def test_acks_never_coming_raise_after_bounded_retries(make_sink):
    with ForwardServer(require_ack=False) as srv:
        sink = make_sink(srv.url(ack_timeout="0.1", retries="3", backoff="0.01"))
        with pytest.raises(SinkError) as info:
            sink.write(make_records(10))
        assert str(info.value) == (
            f"fluentd 127.0.0.1:{srv.port}: no ack within 0.1s "
            "(3 attempts, 1 chunk(s) unacknowledged)"
        )
        assert len(srv.received_chunks) == 3 and len(set(srv.received_chunks)) == 1


def test_connection_dropped_before_processing_is_resent_and_arrives_exactly_once(server, make_sink):
    sink = make_sink(server.url(backoff="0.01"))
    records = make_records(3000)
    server.drop_connection_after(2, store=False)
    write_in_batches(sink, records, 1000)
    assert ids_of(server) == [r.id for r in records]
    assert server.connections == 2


def test_connection_dropped_after_storing_resends_only_that_chunk(server, make_sink):
    sink = make_sink(server.url(backoff="0.01"))
    records = make_records(3000)
    server.drop_connection_after(2, store=True)
    write_in_batches(sink, records, 1000)
    counts = Counter(ids_of(server))
    assert set(counts) == {r.id for r in records}
    assert {i for i, c in counts.items() if c > 1} == {r.id for r in records[1000:2000]}
    duplicated_chunk = server.received_chunks[1]
    assert server.received_chunks.count(duplicated_chunk) == 2


def test_receiver_restart_between_writes_delivers_the_next_batch_exactly_once(make_sink):
    port = free_port()
    records = make_records(2000)
    with ForwardServer(port=port) as srv:
        sink = make_sink(srv.url(backoff="0.05"))
        sink.write(records[:1000])
        srv.stop()
        srv.start()
        assert srv.port == port
        sink.write(records[1000:])
        assert ids_of(srv) == [r.id for r in records]


def test_receiver_stopped_mid_stream_and_restarted_loses_nothing(make_sink):
    records = make_records(10_000)
    with ForwardServer() as srv:
        sink = make_sink(srv.url(ack_timeout="1", retries="50", backoff="0.05"))
        failures: list[BaseException] = []

        def produce() -> None:
            try:
                write_in_batches(sink, records, 500)
            except BaseException as exc:  # surfaced by the assertion below
                failures.append(exc)

        writer = threading.Thread(target=produce)
        writer.start()
        wait_for(lambda: len(srv.received_chunks) >= 5, 60, "5 chunks received", interval=0.005)
        srv.stop()
        time.sleep(0.4)
        srv.start()
        writer.join(timeout=60)
        assert failures == []
        assert srv.connections >= 2  # the sink did reconnect to the restarted receiver
        counts = Counter(ids_of(srv))
        assert set(counts) == {r.id for r in records}
        # A repeat is only possible for a chunk whose ack was lost, and it has the same chunk id.
        owners = srv.chunk_of_entry()
        resent = {chunk for chunk, n in Counter(srv.received_chunks).items() if n > 1}
        for index, (_, _, record) in enumerate(srv.entries):
            if counts[record["event"]["id"]] > 1:
                assert owners[index] in resent
        if not resent:
            assert all(n == 1 for n in counts.values())
        assert set(srv.acked_chunks) == set(srv.received_chunks)


def test_write_while_the_receiver_is_down_raises_after_bounded_retries(make_sink):
    port = free_port()
    sink = make_sink(f"fluentd://127.0.0.1:{port}?retries=3&backoff=0.05")
    started = time.monotonic()
    with pytest.raises(SinkError) as info:
        sink.write(make_records(10))
    assert time.monotonic() - started < 2
    assert str(info.value) == (
        f"fluentd 127.0.0.1:{port}: connection refused (3 attempts, 1 chunk(s) unacknowledged)"
    )
    with ForwardServer(port=port) as srv:  # the collector's later retry succeeds
        sink.write(make_records(10))
        assert len(srv.entries) == 10


# -- check and configuration --------------------------------------------------------------------


def test_check_connects_without_sending_events(server, make_sink):
    assert make_sink(server.url()).check() == f"fluentd://127.0.0.1:{server.port}: connected (tcp)"
    # One empty Forward message, acked: the receiver takes our messages, and gets no event.
    assert server.connections == 1 and server.entry_count == 0 and len(server.acked_chunks) == 1


def test_check_of_an_unreachable_receiver_is_a_one_line_error():
    port = free_port()
    with pytest.raises(SinkError, match=rf"^fluentd 127.0.0.1:{port}: connection refused$"):
        open_sink(f"fluentd://127.0.0.1:{port}").check()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("fluentd://127.0.0.1:24224?tga=x", "unknown parameter 'tga'"),
        ("fluentd://127.0.0.1:24224?compress=zstd", "compress='zstd' is not one of none, gzip"),
        ("fluentd://127.0.0.1:24224?ack_timeout=soon", "ack_timeout='soon' is not a number"),
        ("fluentd://127.0.0.1:24224?retries=0", "retries must be >= 1"),
        ("fluentd://127.0.0.1:24224?ca_file=/x.pem", "apply to fluentd+tls:// only"),
        ("fluentd+tls://127.0.0.1:24224?ca_file=/nonexistent.pem", "cannot be loaded"),
        ("fluentd+tls://127.0.0.1:24224?verify=maybe", "verify='maybe' is not true or false"),
        ("fluentd://127.0.0.1", "needs HOST:PORT"),
        ("fluentd://127.0.0.1:24224?tag=", "tag must not be empty"),
    ],
)
def test_invalid_urls_are_config_errors(url, message):
    with pytest.raises(SinkConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        open_sink(url)


# -- the Forward server itself (it is the oracle for everything above) ---------------------------


def test_server_accepts_message_mode_from_fluent_logger(server):
    sender = FluentSender("app", host="127.0.0.1", port=server.port, nanosecond_precision=True)
    try:
        assert sender.emit_with_time("login", EventTime(BASE_TS, 123), {"a": 1})
    finally:
        sender.close()
    wait_for(lambda: server.entries, 5, "the entry")
    assert server.entries == [("app.login", EventTimeValue(BASE_TS, 123), {"a": 1})]
    assert server.modes == Counter({"Message": 1})


def test_server_accepts_forward_mode_and_acks_its_chunk(server):
    message = ["tag.f", [[BASE_TS, {"a": 1}], [EventTime(BASE_TS, 5), {"b": 2}]], {"chunk": "c1"}]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(msgpack.packb(message, use_bin_type=True))
        assert msgpack.unpackb(sock.recv(1024)) == {"ack": "c1"}
    assert server.entries == [
        ("tag.f", EventTimeValue(BASE_TS, 0), {"a": 1}),
        ("tag.f", EventTimeValue(BASE_TS, 5), {"b": 2}),
    ]
    assert server.modes == Counter({"Forward": 1})


def test_server_rejects_a_ping_with_the_wrong_digest():
    with (
        ForwardServer(shared_key=SECRET) as srv,
        socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock,
    ):
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(sock.recv(1024))
        helo = unpacker.unpack()
        assert helo[0] == "HELO" and len(helo[1]["nonce"]) == 16 and len(helo[1]["auth"]) == 16
        sock.sendall(msgpack.packb(["PING", "me", "salt", "0" * 128, "", ""]))
        unpacker.feed(sock.recv(1024))
        assert unpacker.unpack()[:3] == ["PONG", False, "shared_key mismatch"]
