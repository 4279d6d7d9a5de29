"""Security Lake for real: the golden events go through the S3 sink's Parquet mode into a real
S3 server (SeaweedFS), and every object written is read back: Arrow types from the official
OCSF class schema, each row valid against that schema and equal to its JSON document, DuckDB
queries on nested fields over the Hive partitions, the spool's flush rules and its crash
safety (kill -9 at twelve points: nothing lost, nothing twice)."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.sinks import Record, open_sink
from mappings.golden import ORGANIZATION, inputs
from mappings.ocsf_versions import official_schema
from mappings.registry import MappingContext, load_mapper
from tests.conftest import cli_env, run_cli, write_jsonl
from tests.peers import require_module
from tests.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, s3_client, use_credentials
from tests.test_ocsf_versions import ocsf_version_problems


def arrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet (the parquet extra): skipped without, failing in CI."""
    hint = "pip install 'openai-audit-forwarder[parquet]'"
    return require_module("pyarrow", hint), require_module("pyarrow.parquet", hint)


pytestmark = pytest.mark.peer

REPO = Path(__file__).resolve().parents[1]
VERSION = "1.3.0"  # what Security Lake takes (the sink's default)
ACCOUNT = "external_org-golden"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    s3 = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield s3
    s3.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    arrow()  # every test here writes or reads Parquet
    use_credentials(monkeypatch, tmp_path)


def forwarder_env() -> dict[str, str]:
    """The environment of the forwarder run as a process: the server's credentials."""
    return cli_env(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_EC2_METADATA_DISABLED="true",
    )


@pytest.fixture
def bucket(server: SeaweedFS) -> str:
    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3_client(server).create_bucket(Bucket=name)
    return name


def lake_url(server: SeaweedFS, bucket: str, spool: Path, **params: Any) -> str:
    query = {
        "format": "parquet",
        "schema": "ocsf",
        "source": "openai",
        "account_id": ACCOUNT,
        "region": "us-east-1",
        "endpoint_url": server.endpoint,
        "spool": str(spool),
        **params,
    }
    return f"s3://{bucket}/?" + "&".join(f"{k}={v}" for k, v in query.items())


def objects(server: SeaweedFS, bucket: str) -> dict[str, bytes]:
    c = s3_client(server)
    keys = [
        obj["Key"]
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    ]
    return {key: c.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def table_of(body: bytes) -> Any:
    pa, pq = arrow()
    return pq.read_table(pa.BufferReader(body))


@cache
def golden() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(event, its OCSF 1.3.0 document) for every golden input event."""
    mapper = load_mapper("ocsf", MappingContext(organization_id=ORGANIZATION, ocsf_version=VERSION))
    events = [event for path in inputs() for event in orjson.loads(path.read_bytes())]
    return [(event, mapper(event)) for event in events]


def records() -> list[Record]:
    return [Record(e["id"], e["type"], e["effective_at"], doc) for e, doc in golden()]


@pytest.fixture
def written(server: SeaweedFS, bucket: str, tmp_path: Path) -> dict[str, bytes]:
    """The golden events written by the sink (in batches, then flushed): key -> object."""
    sink = open_sink(
        lake_url(server, bucket, tmp_path / "spool", flush_interval="0", max_events=97)
    )
    batch = records()
    sink.restore(None)
    for start in range(0, len(batch), 200):
        assert sink.write(batch[start : start + 200]) == []
    sink.flush()
    sink.close()
    return objects(server, bucket)


# -- reading a row back as its document (the documented conversions) ---------------------------


def flat(value: Any, prefix: str, into: dict[str, str]) -> dict[str, str]:
    """`unmapped` flattened the documented way: dotted keys, `[i]` for list items, strings as
    they are, anything else as JSON."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            flat(item, f"{prefix}.{key}" if prefix else key, into)
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            flat(item, f"{prefix}[{i}]", into)
    else:
        into[prefix] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return into


def _object_attributes(spec: dict[str, Any]) -> dict[str, Any] | None:
    return official_schema(VERSION)["objects"][spec["object_type"]].get("attributes")


def as_document(value: Any, attributes: dict[str, Any]) -> Any:
    """A Parquet row read back as an OCSF document, by the official schema: nulls dropped,
    json_t text parsed, timestamps as RFC 3339 text, maps as objects."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        spec = attributes[key]
        if spec["type"] == "json_t":
            item = orjson.loads(item)
        elif spec["type"] == "datetime_t":  # RFC 3339 in JSON
            item = item.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        elif spec["type"] == "object_t":
            nested = _object_attributes(spec)
            if not nested:
                item = dict(item)
            elif spec.get("is_array"):
                item = [as_document(element, nested) for element in item]
            else:
                item = as_document(item, nested)
        out[key] = item
    return out


def class_attributes(class_uid: int) -> dict[str, Any]:
    cls = next(c for c in official_schema(VERSION)["classes"].values() if c["uid"] == class_uid)
    return cls["attributes"]


def expected_row(doc: dict[str, Any]) -> dict[str, Any]:
    """The JSON document as its Parquet row reads back: `unmapped` flattened, `time_dt` and
    the `datetime` profile added."""
    expected = orjson.loads(orjson.dumps(doc))
    if "unmapped" in expected:
        expected["unmapped"] = flat(expected["unmapped"], "", {})
    expected["time_dt"] = (
        dt.datetime.fromtimestamp(expected["time"] / 1000, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    metadata = expected["metadata"]
    metadata["profiles"] = sorted({*metadata.get("profiles", []), "datetime"})
    return expected


# -- the tests ------------------------------------------------------------------------------------


def test_every_object_has_the_arrow_types_of_its_class_schema(written: dict[str, bytes]) -> None:
    from forwarder.sinks.s3.ocsf_arrow import arrow_schema

    pa, _ = arrow()
    classes = set()
    for key, body in written.items():
        class_uid = int(key.split("/")[1].rsplit("-", 1)[1])
        classes.add(class_uid)
        schema = table_of(body).schema
        assert schema.remove_metadata() == arrow_schema(class_uid, VERSION), key
        assert set(schema.names) <= set(class_attributes(class_uid)), "a column outside OCSF"
        types = {name: str(schema.field(name).type) for name in schema.names}
        assert types["time"] == "int64"
        assert types["time_dt"] == "timestamp[ms, tz=UTC]"
        assert types["class_uid"] == types["activity_id"] == types["severity_id"] == "int32"
        assert types["type_uid"] == "int64"
        unmapped = schema.field("unmapped").type
        assert pa.types.is_map(unmapped)
        assert str(unmapped.key_type) == str(unmapped.item_type) == "string"
        assert types["actor"].startswith("struct<")
        assert "user: struct<" in types["actor"]
        assert types["metadata"].startswith("struct<")
        if "entity" in types:
            entity = schema.field("entity").type
            assert str(entity.field("data").type) == "string"  # json_t: JSON text
    assert classes == {3001, 3002, 3004, 3005, 3006}


def test_every_row_is_valid_ocsf_and_equals_its_json_document(written: dict[str, bytes]) -> None:
    by_id = {event["id"]: doc for event, doc in golden()}
    seen: Counter[str] = Counter()
    failures = []
    for key, body in written.items():
        class_uid = int(key.split("/")[1].rsplit("-", 1)[1])
        for row in table_of(body).to_pylist():
            back = as_document(row, class_attributes(class_uid))
            event_id = back["unmapped"]["metadata.original_event_uid"]
            seen[event_id] += 1
            doc = by_id[event_id]
            assert back["class_uid"] == class_uid
            problems = ocsf_version_problems(back, VERSION)
            if problems:
                failures.append((event_id, "invalid", problems[:2]))
            if back != expected_row(doc):
                failures.append((event_id, "differs from its document", doc["metadata"]))
    assert not failures, failures[:3]
    assert seen == Counter(list(by_id)), "every event exactly once"


def test_rows_are_sorted_by_time_and_partitioned_by_utc_event_day(
    written: dict[str, bytes],
) -> None:
    for key, body in written.items():
        parts = dict(p.split("=", 1) for p in key.split("/")[2:5])
        assert parts["region"] == "us-east-1" and parts["accountId"] == ACCOUNT
        times = table_of(body).column("time").to_pylist()
        assert times == sorted(times)
        days = {time.strftime("%Y%m%d", time.gmtime(t // 1000)) for t in times}
        assert days == {parts["eventDay"]}
        assert len(times) <= 97  # max_events


def doc_query() -> str:
    """The Athena query of docs/sink-s3.md."""
    text = (REPO / "docs" / "sink-s3.md").read_text()
    return text.split("```sql\n", 1)[1].split("```", 1)[0]


def test_duckdb_runs_the_documented_query_on_nested_fields_over_the_hive_partitions(
    written: dict[str, bytes], tmp_path: Path
) -> None:
    duckdb = require_module("duckdb", "pip install duckdb, in the test extra")
    for key, body in written.items():
        path = tmp_path / "lake" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    tree = tmp_path / "lake" / "ext" / "openai-3004" / "*" / "*" / "*" / "*.parquet"
    query = doc_query()
    table = query.split("FROM ", 1)[1].split()[0]
    query = query.replace(table, f"read_parquet('{tree}', hive_partitioning = true)")
    rows = duckdb.sql(query.rstrip().rstrip(";")).fetchall()
    day = query.split("eventday = '", 1)[1][:8]

    def day_of(doc: dict[str, Any]) -> str:
        return time.strftime("%Y%m%d", time.gmtime(doc["time"] // 1000))

    expected = [
        (
            dt.datetime.fromtimestamp(doc["time"] / 1000, dt.UTC),
            doc["activity_name"],
            doc["actor"]["user"].get("uid"),
            doc["actor"]["user"]["email_addr"],
            doc.get("src_endpoint", {}).get("ip"),
            doc.get("src_endpoint", {}).get("location", {}).get("city"),
            doc["entity"]["type"],
            doc["entity"].get("uid"),
            doc["unmapped"]["metadata.original_event_uid"],
        )
        for _, doc in golden()
        if doc["class_uid"] == 3004
        and day_of(doc) == day
        and doc.get("actor", {}).get("user", {}).get("email_addr", "").endswith("@example.com")
    ]
    assert len(rows) == len(expected) > 10
    assert sorted(rows, key=repr) == sorted(expected, key=repr)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)  # ORDER BY time_dt


def test_the_schema_depth_limit_leaves_out_nothing_our_documents_use() -> None:
    from forwarder.sinks.s3.ocsf_arrow import record_batch

    for version in ("1.1.0", "1.2.0", VERSION):
        mapper = load_mapper("ocsf", MappingContext(ocsf_version=version))
        by_class: dict[int, list[dict[str, Any]]] = {}
        for event, _ in golden():
            doc = mapper(event)
            by_class.setdefault(doc["class_uid"], []).append(doc)
        for class_uid, docs in by_class.items():
            batch = record_batch(docs, ["x"] * len(docs), [0] * len(docs), class_uid, version)
            for doc, unmapped in zip(docs, batch.column("unmapped").to_pylist(), strict=True):
                # Only what the document itself has under `unmapped`: nothing pruned.
                assert dict(unmapped or []) == flat(doc.get("unmapped", {}), "", {}), version


def test_unmapped_holds_what_does_not_fit_and_is_null_for_a_row_without_any() -> None:
    from forwarder.sinks.s3.ocsf_arrow import record_batch

    docs = [doc for _, doc in golden() if doc["class_uid"] == 3004][:3]
    bare = {k: v for k, v in docs[0].items() if k != "unmapped"}
    odd = {**docs[1], "metadata": {**docs[1]["metadata"], "profiles": ["host", 7]}}
    batch = record_batch([bare, odd, docs[2]], ["a", "b", "c"], [0, 0, 0], 3004, VERSION)
    rows = batch.column("unmapped").to_pylist()
    assert rows[0] is None
    assert dict(rows[1]) == {
        **flat(docs[1]["unmapped"], "", {}),
        "metadata.profiles[0]": "host",
        "metadata.profiles[1]": "7",
    }
    assert dict(rows[2]) == flat(docs[2]["unmapped"], "", {})
    profiles = [row["profiles"] for row in batch.column("metadata").to_pylist()]
    assert profiles == [["datetime", "host"], ["datetime"], ["datetime", "host"]]


def test_a_spool_chunk_holds_only_the_fields_its_rows_have_and_reads_back_whole(
    tmp_path: Path,
) -> None:
    """Chunks leave out the fields none of their rows has (most of a class's few hundred
    leaves); a segment of chunks with different fields reads back as the class schema, each
    row equal to its document."""
    from forwarder.sinks.s3.ocsf_arrow import (
        SPOOL_ID,
        SPOOL_TIME,
        full_table,
        record_batch,
        spool_schema,
    )
    from forwarder.sinks.spool import Spool

    docs = [doc for _, doc in golden() if doc["class_uid"] == 3004]
    plain = [{k: v for k, v in doc.items() if k != "src_endpoint"} for doc in docs]
    spool = Spool(tmp_path, "destination", "lake")
    chunks = []
    for part in (plain, docs):
        chunks.append(record_batch(part, ["id"] * len(part), [0] * len(part), 3004, VERSION))
        spool.append(3004, VERSION, chunks[-1])
    schema = spool_schema(3004, VERSION)
    assert "src_endpoint" not in chunks[0].schema.names
    assert "src_endpoint" in chunks[1].schema.names
    assert chunks[1].schema.field("actor").type != schema.field("actor").type  # pruned inside
    spool.seal_due(time.time(), 0, 0)
    (segment,) = spool.sealed()
    whole = full_table(segment.table, 3004, VERSION)
    assert whole.schema == schema
    rows = whole.drop_columns([SPOOL_ID, SPOOL_TIME]).to_pylist()
    back = [as_document(row, class_attributes(3004)) for row in rows]
    assert back == [expected_row(doc) for doc in plain + docs]


def test_the_spool_waits_for_flush_interval_or_flush_bytes(
    server: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    batch = records()[:300]
    sink = open_sink(lake_url(server, bucket, tmp_path / "spool", flush_interval="1h"))
    sink.restore(None)
    sink.write(batch[:150])
    sink.flush()
    assert objects(server, bucket) == {}
    status = sink.status()
    assert status["segments"] >= 1 and status["bytes"] > 0
    assert status["oldest_age_seconds"] < 60 and status["flush_interval_seconds"] == 3600
    small = open_sink(lake_url(server, bucket, tmp_path / "spool", flush_bytes="1"))
    small.restore(sink.position())
    small.write(batch[150:])  # the committed segments are over flush_bytes: sealed, uploaded
    uploaded = objects(server, bucket)
    assert uploaded
    assert len(ids_in(uploaded)) == 150
    small.flush()  # the second write's segments: over flush_bytes too
    assert sorted(ids_in(objects(server, bucket))) == sorted(r.id for r in batch)


def ids_in(stored: dict[str, bytes]) -> list[str]:
    ids = []
    for body in stored.values():
        for unmapped in table_of(body).column("unmapped").to_pylist():
            ids.append(dict(unmapped)["metadata.original_event_uid"])
    return ids


def test_restore_cuts_what_was_spooled_after_the_committed_position(
    server: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    batch = records()[:200]
    sink = open_sink(lake_url(server, bucket, tmp_path / "spool", flush_interval="0"))
    sink.restore(None)
    sink.write(batch[:100])
    committed = sink.position()
    sink.write(batch[100:])  # not committed: the collector rolls back
    sink.restore(committed)
    sink.flush()
    assert sorted(ids_in(objects(server, bucket))) == sorted(r.id for r in batch[:100])


def test_a_failed_upload_keeps_the_segment_and_the_retry_stores_each_event_once(
    server: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """Objects are uploaded while the next is encoded: an upload that fails fails the flush,
    after the one in flight, and leaves the segment for the retry."""
    from forwarder.sinks import SinkError

    batch = records()[:200]
    sink = open_sink(lake_url(server, bucket, tmp_path / "spool", flush_interval="1h"))
    sink.restore(None)
    sink.write(batch)
    drain = open_sink(
        lake_url(server, bucket, tmp_path / "spool", flush_interval="0", max_events=15)
    )
    drain.restore(sink.position())
    put, calls = drain.transport.put, []

    def failing_third_put(key: str, body: bytes, content_type: str) -> None:
        calls.append(key)
        if len(calls) == 3:
            raise SinkError("s3 bucket: PutObject failed: injected")
        put(key, body, content_type)

    drain.transport.put = failing_third_put
    with pytest.raises(SinkError, match="injected"):
        drain.flush()
    assert len(calls) <= 4, "the flush stops at the failure"
    assert drain.status()["segments"] >= 1
    drain.transport.put = put
    drain.flush()
    assert drain.status()["segments"] == 0
    assert sorted(ids_in(objects(server, bucket))) == sorted(r.id for r in batch)


def test_a_replayed_segment_writes_the_same_keys_with_the_same_bytes(
    server: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    batch = records()[:120]
    first = tmp_path / "a"
    second = tmp_path / "b"
    for spool in (first, second):
        sink = open_sink(lake_url(server, bucket, spool, flush_interval="0"))
        sink.restore(None)
        sink.write(batch)
        sink.flush()
        if spool is first:
            etags = {
                k: s3_client(server).head_object(Bucket=bucket, Key=k)["ETag"]
                for k in objects(server, bucket)
            }
    again = {
        k: s3_client(server).head_object(Bucket=bucket, Key=k)["ETag"]
        for k in objects(server, bucket)
    }
    assert again == etags


def test_checkpoint_show_and_healthz_show_the_spool(
    server: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [event for event, _ in golden()[:60]])
    url = lake_url(server, bucket, "", flush_interval="1h").replace("&spool=", "")
    state = tmp_path / "state" / "s.db"
    env = forwarder_env()
    done = run_cli(
        "run",
        "--once",
        "--input",
        str(source),
        "--sink",
        url,
        "--state",
        str(state),
        cwd=tmp_path,
        env=env,
    )
    assert done.code == 0, done.stderr
    assert objects(server, bucket) == {}  # a clean stop leaves the spool for the next run
    shown = run_cli("checkpoint", "show", "--json", "--state", str(state), cwd=tmp_path, env=env)
    (spool,) = orjson.loads(shown.stdout)["spools"]
    assert spool["sink"].startswith(f"s3://{bucket}/") and spool["bytes"] > 0
    assert spool["segments"] >= 1 and spool["oldest_age_seconds"] >= 0
    text = run_cli("checkpoint", "show", "--state", str(state), cwd=tmp_path, env=env).stdout
    assert "spool s3://" in text and "segments" in text
    from forwarder.health import Health

    health = Health(max_age=300)
    health.watch([open_sink(url, spool_root=state.parent / "spool")])
    healthy, report = health.report()
    (status,) = report["spools"].values()
    assert healthy and status["bytes"] == spool["bytes"]
    # Run again with flush_interval=0 (cron): the segments are due and uploaded.
    again = run_cli(
        "run",
        "--once",
        "--input",
        str(source),
        "--sink",
        url.replace("flush_interval=1h", "flush_interval=0"),
        "--state",
        str(state),
        cwd=tmp_path,
        env=env,
    )
    assert again.code == 0, again.stderr


# -- kill -9 across spool writes and uploads -------------------------------------------------------

CRASH_WRAPPER = """
import os, signal, sys
target, when, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
module_name, _, qualname = target.rpartition(":")
import importlib
module = importlib.import_module(module_name)
owner_name, _, attr = qualname.rpartition(".")
owner = getattr(module, owner_name) if owner_name else module
original = getattr(owner, attr)
calls = [0]

def wrapped(*args, **kwargs):
    calls[0] += 1
    hit = calls[0] == nth
    if hit and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    if hit and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(owner, attr, wrapped)
sys.argv = ["openai-audit-forwarder", *sys.argv[4:]]
from forwarder.cli import main
main()
"""

# (function, before/after, which call): spool writes, commits, seals, uploads, removals.
CRASH_POINTS = [
    ("forwarder.sinks.spool:Spool.append", "before", 3),
    ("forwarder.sinks.spool:Spool.append", "after", 4),
    ("forwarder.files:fsync_directory", "before", 7),
    ("forwarder.state:State.commit", "before", 2),
    ("forwarder.state:State.commit", "after", 3),
    ("forwarder.sinks.spool:Spool.seal_due", "after", 2),
    ("forwarder.sinks.s3.transport:S3Transport.put", "before", 1),
    ("forwarder.sinks.s3.transport:S3Transport.put", "after", 1),
    ("forwarder.sinks.s3.transport:S3Transport.put", "after", 5),
    ("forwarder.sinks.spool:Spool.remove", "before", 2),
    ("forwarder.sinks.spool:Spool.remove", "after", 3),
    ("forwarder.delivery:Delivery.flush", "before", 1),
]


def test_kill_9_at_twelve_points_loses_and_duplicates_nothing(
    server: SeaweedFS, tmp_path: Path
) -> None:
    events = [event for event, _ in golden()[:300]]
    source = write_jsonl(tmp_path / "in.jsonl", events)
    wrapper = tmp_path / "crash.py"
    wrapper.write_text(CRASH_WRAPPER)
    env = forwarder_env()
    failures = []
    for n, (target, when, nth) in enumerate(CRASH_POINTS):
        bucket = f"crash-{n}-{uuid.uuid4().hex[:8]}"
        s3_client(server).create_bucket(Bucket=bucket)
        state = tmp_path / f"run{n}" / "s.db"
        args = [
            "run",
            "--once",
            "--input",
            str(source),
            "--batch-size",
            "50",
            "--sink",
            lake_url(server, bucket, "", flush_interval="0", max_events="40").replace(
                "&spool=", ""
            ),
            "--state",
            str(state),
        ]
        crashed = subprocess.run(
            [sys.executable, str(wrapper), target, when, str(nth), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert crashed.returncode == -signal.SIGKILL, (target, when, nth, crashed.stderr[-500:])
        # The next cron run resumes and, flush_interval being 0, leaves nothing spooled. Its
        # batches have another size: an event spooled twice would then land in objects of
        # other keys, not overwrite itself.
        again = run_cli(*args, "--batch-size", "70", cwd=tmp_path, env=env)
        assert again.code == 0, again.stderr
        assert not [p for p in (state.parent / "spool").glob("*/*/*/*.arrows") if p.stat().st_size]
        stored = Counter(ids_in(objects(server, bucket)))
        lost = {e["id"] for e in events} - set(stored)
        twice = [i for i, c in stored.items() if c > 1]
        if lost or twice:
            failures.append((target, when, nth, len(lost), len(twice)))
    assert not failures, failures


def test_the_documented_urls_make_sinks(tmp_path: Path) -> None:
    text = (REPO / "docs" / "sink-s3.md").read_text()
    urls = [line.split("'")[1] for line in text.splitlines() if "--sink 's3://" in line]
    assert any("format=parquet" in url for url in urls)
    for url in urls:
        sink = open_sink(url, spool_root=tmp_path)
        if "format=parquet" in url:
            assert sink.mapping == f"ocsf@{VERSION}"
            assert sink.config.account_id.startswith("external_")
