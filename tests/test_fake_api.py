"""Pins down the fake audit-log endpoint (tests/fakes/openai_api.py) and the event factory over
real loopback HTTP, so that collector tests built on them test against the documented API."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.events import (
    ACTOR_KINDS,
    DOCUMENTED_TYPES,
    EVENT_TYPES,
    HOSTILE_STRINGS,
    OPENAPI_PATH,
    UNKNOWN_TYPES,
    is_tenant_scoped,
    make_event,
    make_events,
)
from tests.fakes.openai_api import DEFAULT_ADMIN_KEY, FakeOpenAI

T0 = 1767225600  # 2026-01-01T00:00:00Z
PATH = "/organization/audit_logs"
NON_TENANT = [t for t in EVENT_TYPES if not is_tenant_scoped(t)]
TENANT = [t for t in EVENT_TYPES if is_tenant_scoped(t)]


def client(fake: FakeOpenAI, key: str | None = DEFAULT_ADMIN_KEY) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=fake.base_url, headers=headers, timeout=10)


def page_all(c: httpx.Client, params: dict[str, Any], limit: int = 100) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = None
    while True:
        p = {**params, "limit": limit, **({"after": after} if after else {})}
        r = c.get(PATH, params=p)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["data"])
        if body["data"]:
            assert body["first_id"] == body["data"][0]["id"]
            assert body["last_id"] == body["data"][-1]["id"]
        if not body["has_more"]:
            return out
        after = body["last_id"]


def expected_order(events: list[dict[str, Any]], tenant_only: bool = False) -> list[str]:
    """Newest first; within one second, the later-added event first."""
    indexed = [
        (e["effective_at"], i, e["id"])
        for i, e in enumerate(events)
        if is_tenant_scoped(e["type"]) == tenant_only
    ]
    return [ev_id for _, _, ev_id in sorted(indexed, reverse=True)]


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    # Bursts of 30..300 events in one second straddle pages of 100.
    return make_events(3000, start=T0, end=T0 + 900, seed=11, same_second_ratio=0.8)


@pytest.fixture(scope="module")
def fake(events: list[dict[str, Any]]) -> Any:
    with FakeOpenAI(events) as f:
        yield f


@pytest.fixture(scope="module")
def c(fake: FakeOpenAI) -> Any:
    with client(fake) as cl:
        yield cl


# -- event factory ---------------------------------------------------------------------------


def _schema() -> dict[str, Any]:
    return json.loads(OPENAPI_PATH.read_text())["components"]["schemas"]


def _conforms(value: Any, schema: dict[str, Any], where: str) -> None:
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        assert isinstance(value, dict), where
        extra = set(value) - set(schema["properties"])
        assert not extra, f"{where}: undocumented fields {extra}"
        for k, v in value.items():
            _conforms(v, schema["properties"][k], f"{where}.{k}")
    elif kind == "array":
        assert isinstance(value, list) and value, where
        for v in value:
            _conforms(v, schema.get("items", {}), where + "[]")
    elif kind in ("string", "integer", "boolean"):
        py = {"string": str, "integer": int, "boolean": bool}[kind]
        assert isinstance(value, py), f"{where}: {value!r} is not {kind}"
        if "enum" in schema:
            assert value in schema["enum"], where


def test_event_types_are_every_documented_type_plus_unknown_ones() -> None:
    enum = _schema()["AuditLogEventType"]["enum"]
    assert enum == DOCUMENTED_TYPES
    assert len(UNKNOWN_TYPES) >= 3 and not set(UNKNOWN_TYPES) & set(enum)
    assert enum + UNKNOWN_TYPES == EVENT_TYPES


def test_documented_payloads_use_only_schema_fields_with_schema_types() -> None:
    props = _schema()["AuditLog"]["properties"]
    for seq, event_type in enumerate(EVENT_TYPES * 3):
        ev = make_event(event_type, T0, seq=seq, actor=ACTOR_KINDS[seq % 5])
        assert isinstance(ev[event_type], dict)
        if event_type in props:
            _conforms(ev[event_type], props[event_type], event_type)
        elif not event_type.startswith(("login.", "logout.")):
            assert ev[event_type].get("id") or ev[event_type].get("configs"), event_type


def test_actor_variants_look_like_the_real_api() -> None:
    session = make_event("api_key.created", T0, seq=1, actor="session")["actor"]
    details = session["session"]["ip_address_details"]
    assert session["type"] == "session"
    assert all(isinstance(details[k], str) for k in ("asn", "latitude", "longitude"))
    assert len(session["session"]["ja3"]) == 32
    user_key = make_event("api_key.created", T0, seq=1, actor="api_key_user")["actor"]["api_key"]
    assert user_key["type"] == "user" and user_key["id"].startswith("key_")
    assert user_key["user"]["email"].endswith("@example.com")
    svc = make_event("api_key.created", T0, seq=1, actor="api_key_service_account")["actor"]
    assert svc["api_key"]["service_account"]["id"].startswith("svc_acct_")
    assert make_event("api_key.created", T0, seq=1, actor="null")["actor"] is None
    assert "actor" not in make_event("api_key.created", T0, seq=1, actor="absent")


def test_make_events_is_deterministic_unique_and_covers_every_type_actor_pair() -> None:
    a = make_events(len(EVENT_TYPES) * 5, start=T0, end=T0 + 60, seed=3)
    assert a == make_events(len(EVENT_TYPES) * 5, start=T0, end=T0 + 60, seed=3)
    assert len({e["id"] for e in a}) == len(a)
    assert all(T0 <= e["effective_at"] < T0 + 60 for e in a)
    kinds: dict[str, set[str]] = {}
    for e in a:
        actor = e.get("actor", "absent")
        kind = "null" if actor is None else actor if isinstance(actor, str) else _kind(actor)
        kinds.setdefault(e["type"], set()).add(kind)
    assert set(kinds) == set(EVENT_TYPES)
    assert all(len(v) == 5 for v in kinds.values())


def test_same_second_ratio_makes_bursts_larger_than_a_page() -> None:
    evs = make_events(5000, start=T0, end=T0 + 5000, same_second_ratio=0.9)
    per_second = Counter(e["effective_at"] for e in evs)
    assert max(per_second.values()) > 100
    assert sum(n for n in per_second.values() if n > 1) > 0.8 * len(evs)


def test_hostile_events_carry_hostile_strings_and_stay_valid_json() -> None:
    evs = [make_event("login.failed", T0, seq=s, hostile=True) for s in range(26)]
    text = "\n".join(json.dumps(e) for e in evs)
    assert "\\u0000" in text and "\\n" in text and "\\u202e" in text
    assert any(len(e["login.failed"]["error_message"]) > 10_000 for e in evs)
    assert {e["login.failed"]["error_message"] for e in evs} == set(HOSTILE_STRINGS)


# -- ordering and paging ---------------------------------------------------------------------


def test_lists_newest_first_with_later_added_first_within_a_second(
    c: httpx.Client, events: list[dict[str, Any]]
) -> None:
    got = [e["id"] for e in page_all(c, {})]
    assert got == expected_order(events)
    body = c.get(PATH).json()
    assert body["object"] == "list" and len(body["data"]) == 20  # default limit


def test_cursor_paging_visits_every_event_once_across_same_second_bursts(
    c: httpx.Client, events: list[dict[str, Any]]
) -> None:
    for limit in (100, 7):
        got = [e["id"] for e in page_all(c, {}, limit=limit)]
        assert len(got) == len(set(got))
        assert got == expected_order(events)


def test_paging_inside_a_window_returns_exactly_the_window(
    c: httpx.Client, events: list[dict[str, Any]]
) -> None:
    lo, hi = T0 + 200, T0 + 600
    params = {"effective_at[gte]": lo, "effective_at[lt]": hi}
    got = [e["id"] for e in page_all(c, params)]
    window = [e for e in events if lo <= e["effective_at"] < hi]
    assert got == expected_order(window)


def test_window_bounds_gt_gte_lt_lte(c: httpx.Client, events: list[dict[str, Any]]) -> None:
    t = Counter(e["effective_at"] for e in events).most_common(1)[0][0]  # a burst second
    cases = {
        "effective_at[gt]": lambda x: x > t,
        "effective_at[gte]": lambda x: x >= t,
        "effective_at[lt]": lambda x: x < t,
        "effective_at[lte]": lambda x: x <= t,
    }
    for name, keep in cases.items():
        got = {e["id"] for e in page_all(c, {name: t})}
        assert got == {e["id"] for e in events if keep(e["effective_at"])} & set(
            expected_order(events)
        ), name


def test_before_cursor_returns_the_preceding_page_newest_first(c: httpx.Client) -> None:
    first = c.get(PATH, params={"limit": 50}).json()
    second = c.get(PATH, params={"limit": 50, "after": first["last_id"]}).json()
    back = c.get(PATH, params={"limit": 50, "before": second["first_id"]}).json()
    assert back["data"] == first["data"]
    assert back["has_more"] is False
    partial = c.get(PATH, params={"limit": 10, "before": second["first_id"]}).json()
    assert partial["data"] == first["data"][-10:] and partial["has_more"] is True


def test_a_page_after_a_cursor_examines_only_about_one_page(
    c: httpx.Client, fake: FakeOpenAI
) -> None:
    mid = fake.listing()[len(fake.listing()) // 2]
    r = c.get(PATH, params={"limit": 100, "after": mid, "effective_at[lt]": T0 + 800})
    assert r.status_code == 200
    # Non-tenant events are about 40 % of the mix: a page needs roughly 250 positions, not 3000.
    assert fake.last_scanned < 400


# -- filters ---------------------------------------------------------------------------------


def test_event_types_filter_is_repeatable(c: httpx.Client, events: list[dict[str, Any]]) -> None:
    wanted = ["api_key.created", "login.failed", "vector_store.file.purged"]
    got = page_all(c, {"event_types[]": wanted})
    assert got and {e["type"] for e in got} == set(wanted)
    assert len(got) == sum(e["type"] in wanted for e in events)


def test_project_ids_filter(c: httpx.Client, events: list[dict[str, Any]]) -> None:
    pid = next(e["project"]["id"] for e in events if "project" in e)
    got = page_all(c, {"project_ids[]": [pid]})
    expected = [
        e["id"]
        for e in events
        if e.get("project", {}).get("id") == pid and not is_tenant_scoped(e["type"])
    ]
    assert sorted(e["id"] for e in got) == sorted(expected) and expected


@pytest.mark.parametrize("kind", ["session", "api_key_user", "api_key_service_account"])
def test_actor_ids_match_user_service_account_and_key_ids(
    c: httpx.Client, events: list[dict[str, Any]], kind: str
) -> None:
    sample = next(
        e
        for e in events
        if e.get("actor") and not is_tenant_scoped(e["type"]) and kind.endswith(_kind(e["actor"]))
    )
    actor = sample["actor"]
    if kind == "session":
        ids = [actor["session"]["user"]["id"]]
    elif kind == "api_key_user":
        ids = [actor["api_key"]["id"], actor["api_key"]["user"]["id"]]
    else:
        ids = [actor["api_key"]["id"], actor["api_key"]["service_account"]["id"]]
    for actor_id in ids:
        got = page_all(c, {"actor_ids[]": actor_id})
        assert sample["id"] in {e["id"] for e in got}
        assert all(actor_id in json.dumps(e["actor"]) for e in got)


def _kind(actor: dict[str, Any]) -> str:
    return "session" if actor["type"] == "session" else actor["api_key"]["type"]


def test_actor_emails_filter(c: httpx.Client, events: list[dict[str, Any]]) -> None:
    email = next(
        e["actor"]["session"]["user"]["email"]
        for e in events
        if e.get("actor") and e["actor"]["type"] == "session"
    )
    got = page_all(c, {"actor_emails[]": [email]})
    assert got and all(email in json.dumps(e["actor"]) for e in got)
    assert not page_all(c, {"actor_emails[]": ["nobody@example.org"]})


def test_resource_ids_match_payload_ids(c: httpx.Client, events: list[dict[str, Any]]) -> None:
    sample = next(e for e in events if e["type"] == "project.archived")
    pid = sample["project.archived"]["id"]
    got = page_all(c, {"resource_ids[]": [pid]})
    assert sample["id"] in {e["id"] for e in got}
    assert all(pid in json.dumps(e[e["type"]]) for e in got)


def test_tenant_scoped_events_are_listed_only_with_tenant_only(
    c: httpx.Client, events: list[dict[str, Any]]
) -> None:
    plain = page_all(c, {})
    tenant = page_all(c, {"tenant_only": "true"})
    assert not any(is_tenant_scoped(e["type"]) for e in plain)
    assert [e["id"] for e in tenant] == expected_order(events, tenant_only=True)
    assert {"role.bound_to_resource", "tenant.policy.created"} <= {e["type"] for e in tenant}
    got = page_all(c, {"tenant_only": True, "event_types[]": ["role.bound_to_resource"]})
    assert got and {e["type"] for e in got} == {"role.bound_to_resource"}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"tenant_only": "true", "event_types[]": ["api_key.created"]}, "event_types[]"),
        ({"event_types[]": ["role.bound_to_resource"]}, "event_types[]"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"effective_at[gte]": "yesterday"}, "effective_at[gte]"),
        ({"after": "audit_log-doesnotexist"}, "after"),
        ({"event_types": "api_key.created"}, "event_types"),
    ],
)
def test_invalid_requests_get_400_naming_the_param(
    c: httpx.Client, params: dict[str, Any], param: str
) -> None:
    r = c.get(PATH, params=params)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_limit_bounds_are_inclusive(c: httpx.Client) -> None:
    assert len(c.get(PATH, params={"limit": 1}).json()["data"]) == 1
    assert len(c.get(PATH, params={"limit": 100}).json()["data"]) == 100


# -- auth ------------------------------------------------------------------------------------


def test_missing_key_is_401(fake: FakeOpenAI) -> None:
    with client(fake, key=None) as cl:
        r = cl.get(PATH)
    assert r.status_code == 401
    assert "didn't provide an API key" in r.json()["error"]["message"]


def test_wrong_key_is_401_with_redacted_key_never_the_full_key(fake: FakeOpenAI) -> None:
    wrong = "sk-admin-WRONGsecretVALUE0123456789xyz"
    with client(fake, key=wrong) as cl:
        r = cl.get(PATH)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    assert err["param"] is None
    assert "Incorrect API key provided: sk-adm" in err["message"] and "9xyz" in err["message"]
    assert wrong not in r.text and "WRONGsecret" not in r.text


def test_project_key_is_403_insufficient_permissions(fake: FakeOpenAI) -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    with client(fake, key=key) as cl:
        r = cl.get(PATH)
    assert r.status_code == 403
    assert "api.audit_logs.read" in r.json()["error"]["message"]
    assert key not in r.text


# -- faults ----------------------------------------------------------------------------------


def test_429_carries_retry_after_and_rate_limit_headers() -> None:
    with FakeOpenAI(make_events(10, start=T0, end=T0 + 10), rate_429=1.0, retry_after=0.02) as f:
        with client(f) as cl:
            r = cl.get(PATH)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "0.02" and r.headers["retry-after-ms"] == "20"
        assert r.headers["x-ratelimit-reset-requests"] == "20ms"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert f.counts[429] == 1 and f.requests[0][0] == 429


def _statuses(seed: int, events: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
    with FakeOpenAI(events, seed=seed, rate_5xx=0.4, rate_429=0.1) as f, client(f) as cl:
        ids: list[str] = []
        after = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            r = cl.get(PATH, params=params)
            if r.status_code != 200:
                assert r.status_code in (429, 500, 502, 503)
                if r.status_code != 502:
                    assert r.json()["error"]["message"]
                continue
            body = r.json()
            ids += [e["id"] for e in body["data"]]
            if not body["has_more"]:
                break
            after = body["last_id"]
        return [s for s, _ in f.requests], ids


def test_faults_are_seeded_reproducible_and_never_change_data() -> None:
    evs = make_events(1500, start=T0, end=T0 + 100, types=NON_TENANT, same_second_ratio=0.5)
    statuses, ids = _statuses(5, evs)
    assert {500, 502, 503, 429} <= set(statuses)
    assert _statuses(5, evs) == (statuses, ids)
    assert ids == expected_order(evs)


def test_fail_next_scripts_exact_faults(fake: FakeOpenAI, c: httpx.Client) -> None:
    fake.fail_next(503, 2)
    assert [c.get(PATH).status_code for _ in range(3)] == [503, 503, 200]


def test_latency_does_not_serialize_concurrent_requests() -> None:
    """Requests wait out their latency side by side. (How much faster than in series:
    benchmarks/bench_fake_api.py; a test does not time.)"""
    with FakeOpenAI(make_events(50, start=T0, end=T0 + 10), latency=0.4) as f:
        statuses: list[int] = []
        cl = client(f)  # one pool, 32 connections at once

        def one() -> None:
            statuses.append(cl.get(PATH).status_code)

        threads = [threading.Thread(target=one) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cl.close()
    assert statuses == [200] * 32
    assert f.peak_concurrency > 1, "each request waited for the one before it"


# -- late arrivals and data fidelity ---------------------------------------------------------


def test_late_events_land_at_their_sorted_position() -> None:
    evs = make_events(300, start=T0, end=T0 + 300, types=NON_TENANT)
    late = make_events(5, start=T0 + 100, end=T0 + 105, types=NON_TENANT, first_seq=10_000)
    with FakeOpenAI(evs) as f, client(f) as cl:
        before = [e["id"] for e in page_all(cl, {})]
        assert f.add_events(late) == 5
        after = [e["id"] for e in page_all(cl, {})]
        window = page_all(cl, {"effective_at[gte]": T0 + 100, "effective_at[lt]": T0 + 105})
    assert after == expected_order(evs + late)
    assert [i for i in after if i not in {e["id"] for e in late}] == before
    assert {e["id"] for e in late} <= {e["id"] for e in window}


def test_duplicate_ids_are_refused() -> None:
    evs = make_events(5, start=T0, end=T0 + 5)
    with FakeOpenAI(evs) as f, pytest.raises(ValueError, match="duplicate event id"):
        f.add_events(evs[:1])


def test_hostile_events_round_trip_unchanged_over_http() -> None:
    evs = make_events(60, start=T0, end=T0 + 60, types=NON_TENANT, hostile_ratio=1.0)
    with FakeOpenAI(evs) as f, client(f) as cl:
        got = page_all(cl, {})
    assert sorted(got, key=lambda e: e["id"]) == sorted(evs, key=lambda e: e["id"])


def test_runs_as_a_separate_process_and_prints_ready(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    extra = make_events(3, start=T0 - 100, end=T0 - 90, types=NON_TENANT, first_seq=99_000)
    events_file.write_text("".join(json.dumps(e) + "\n" for e in extra))
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tests.fakes.openai_api", "--port", "0", "--events", "200",
            "--seed", "2", "--start", str(T0), "--end", str(T0 + 50), "--admin-key",
            "sk-admin-cli-key-0123456789abcdef", "--events-file", str(events_file),
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.split()[1]
        control = base_url.removesuffix("/v1") + "/_fake"
        with httpx.Client(
            base_url=base_url,
            headers={"Authorization": "Bearer sk-admin-cli-key-0123456789abcdef"},
        ) as cl:
            got = page_all(cl, {"effective_at[lt]": T0})
            plain = page_all(cl, {}) + page_all(cl, {"tenant_only": "true"})
            late = make_event("api_key.deleted", T0 - 95, seq=99_500)
            added = cl.post(f"{control}/events", content=json.dumps(late) + "\n")
            assert added.json() == {"added": 1}
            cl.post(f"{control}/faults", json={"fail_next": [429, 1]})
            assert cl.get(PATH).status_code == 429
            again = page_all(cl, {"effective_at[lt]": T0})
            stats = cl.get(f"{control}/stats").json()
        assert [e["id"] for e in got] == expected_order(extra)
        assert len(plain) == 203
        assert [e["id"] for e in again] == expected_order([*extra, late])
        assert stats["events"] == 204 and stats["counts"]["429"] == 1
    finally:
        proc.kill()
        proc.wait(timeout=10)


# -- committed samples -----------------------------------------------------------------------


def test_committed_samples_are_current_and_cover_every_type_and_actor() -> None:
    root = Path(__file__).resolve().parent.parent
    check = subprocess.run(
        [sys.executable, "scripts/make_sample.py", "--check"], cwd=root, capture_output=True
    )
    assert check.returncode == 0, check.stdout
    lines = (root / "samples" / "audit-log.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert {e["type"] for e in events} >= set(EVENT_TYPES)
    kinds = {
        "absent" if "actor" not in e else "null" if e["actor"] is None else _kind(e["actor"])
        for e in events
    }
    assert kinds == {"absent", "null", "session", "user", "service_account"}
    assert "\\u0000" in "\n".join(lines)
    assert sum(any(h in json.dumps(e) for h in ("\\n", "\\u202e")) for e in events) >= 3
    listed = json.loads((root / "samples" / "list-response.json").read_text(encoding="utf-8"))
    assert listed["object"] == "list" and len(listed["data"]) == 20
    assert listed["first_id"] == listed["data"][0]["id"]
    ts = [e["effective_at"] for e in listed["data"]]
    assert ts == sorted(ts, reverse=True)
