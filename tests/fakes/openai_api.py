"""An in-repo fake of `GET /v1/organization/audit_logs` served over real loopback HTTP: the
documented ordering, cursors, filters, auth errors and seeded 429/5xx faults, fast at 1M events.

Semantics the fake pins down (where the API reference is silent, the choice is noted):
- Listing order is newest first by `effective_at`; ties list the later-added event first.
- `after=<id>` lists what follows that event in listing order, `before=<id>` the page that
  precedes it (still newest first). An id the server does not hold → 400, param after/before
  (choice: the real API's behaviour for a foreign cursor is undocumented). Both at once → 400.
- Tenant-scoped events (`tenant.*`, `role.bound_to_resource`, `role.unbound_from_resource`) are
  listed only with `tenant_only=true`, and then only they are; asking for a tenant-scoped type
  without `tenant_only`, or for a non-tenant type with it → 400, param `event_types[]`.
- Unknown query parameters → 400 (so that a client's typo cannot silently widen a query).
- Auth is checked first, then a fault may be injected, then the query is validated.

Hostile modes (`set_faults`), each a server that breaks one of these rules: `ignore_tenant_only`
lists every event whatever `tenant_only` says (and accepts any type with it); `oldest_first`
lists its pages oldest first, each page newest first inside (its `after` cursors lead to
newer events); `malformed_page` answers pages
that continue a listing (with `after`) with a malformed body: "no_has_more" (the key left out),
"data_null" (`"data": null`) or "more_without_cursor" (`has_more: true`, no events, no
`last_id`), `malformed_count` times (None: every time); `paging` breaks the cursors: "cycle"
answers the second page's cursor with the first page again (a cursor that comes back),
"endless" answers every cursor with the first page under a fresh cursor and `has_more`
forever; `strays` adds to every page the two newest and the two oldest events from outside
the requested window (whatever the filters).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import random
import re
import socket
import sys
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from tests.fakes.events import is_tenant_scoped, iter_events

DEFAULT_ADMIN_KEY = "sk-admin-test-0123456789abcdefghijklmnopqrstuv"
AUDIT_LOGS_PATH = "/v1/organization/audit_logs"
CONTROL_PATH = "/_fake"

_ARRAY_PARAMS = (
    "event_types[]",
    "project_ids[]",
    "actor_ids[]",
    "actor_emails[]",
    "resource_ids[]",
)
_WINDOW_PARAMS = ("effective_at[gt]", "effective_at[gte]", "effective_at[lt]", "effective_at[lte]")
_KNOWN_PARAMS = frozenset(
    (*_ARRAY_PARAMS, *_WINDOW_PARAMS, "tenant_only", "limit", "after", "before")
)

Params = dict[str, list[str]]
MALFORMED_PAGES = ("no_has_more", "data_null", "more_without_cursor")
BROKEN_PAGING = ("cycle", "endless")


class ApiError(Exception):
    """An error response: HTTP status, OpenAI error body fields, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.headers = headers or {}


def redact_key(key: str) -> str:
    """The key as the API echoes it in errors: a short prefix and the last four characters."""
    if len(key) < 16:
        return "sk-***"
    return f"{key[:6]}{'*' * 20}{key[-4:]}"


def _format_duration(seconds: float) -> str:
    """x-ratelimit-reset-* style: "20ms", "1s", "6m0s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    secs_text = f"{secs:g}s"
    return f"{int(minutes)}m{secs_text}" if minutes else secs_text


def _blob_id(blob: bytes) -> str | None:
    """The id of a listed item: None without one; for an item nested deeper than orjson
    parses (an add_raw body), the first `"id"` in its text, which is the event's own."""
    try:
        return orjson.loads(blob).get("id")
    except orjson.JSONDecodeError:
        found = re.search(rb'"id":\s*"([^"\\]*)"', blob)
        return found.group(1).decode() if found else None


class _Store:
    """Events kept ascending by (effective_at, insertion seq); the listing is its reverse.

    Events are held as orjson bytes (about 450 bytes each) with parallel compact arrays, so a
    million fit in well under a gigabyte; decoding happens only for actor/resource filters."""

    def __init__(self) -> None:
        self.ts = array("q")  # effective_at per position
        self.seqs = array("q")  # insertion seq per position
        self.blobs: list[bytes] = []
        self.types: list[str] = []
        self.projects: list[str | None] = []
        self.by_id: dict[str, int] = {}  # id -> insertion seq
        self.ts_by_seq = array("q")  # effective_at per insertion seq
        self._type_names: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.blobs)

    def _prepare(self, event: dict[str, Any]) -> tuple[int, str, str, str | None, bytes]:
        try:
            ev_id = event["id"]
            ts = event["effective_at"]
            ev_type = event["type"]
        except KeyError as exc:
            raise ValueError(f"event lacks {exc.args[0]!r}") from None
        if not isinstance(ev_id, str) or not isinstance(ts, int) or not isinstance(ev_type, str):
            raise ValueError(f"event {ev_id!r} has a malformed id, type or effective_at")
        ev_type = self._type_names.setdefault(ev_type, ev_type)
        project = event.get("project")
        pid = project.get("id") if isinstance(project, dict) else None
        # orjson over-allocates its output (about 4 KB per call); an exact copy keeps 1M small.
        return ts, ev_id, ev_type, pid, bytes(memoryview(orjson.dumps(event)))

    def add(self, events: Iterable[dict[str, Any]]) -> int:
        """Add events (any order); returns how many. Duplicate ids raise ValueError."""
        batch = [self._prepare(e) for e in events]
        seen: set[str] = set()
        for _, ev_id, *_ in batch:
            if ev_id in self.by_id or ev_id in seen:
                raise ValueError(f"duplicate event id {ev_id}")
            seen.add(ev_id)
        # Stable sort by time: ties keep batch order, so the later one in the batch lists first.
        batch.sort(key=lambda row: row[0])
        if not batch:
            return 0
        seq0 = len(self.ts_by_seq)
        tss, ids, types, pids, blobs = zip(*batch, strict=True)
        self.ts_by_seq.extend(tss)
        self.by_id.update(zip(ids, range(seq0, seq0 + len(batch)), strict=True))
        if not self.ts or tss[0] >= self.ts[-1]:
            self._extend(tss, range(seq0, seq0 + len(batch)), blobs, types, pids)
        elif len(batch) <= 2000:
            for k, ts in enumerate(tss):
                pos = bisect_right(self.ts, ts)
                self.ts.insert(pos, ts)
                self.seqs.insert(pos, seq0 + k)
                self.blobs.insert(pos, blobs[k])
                self.types.insert(pos, types[k])
                self.projects.insert(pos, pids[k])
        else:
            # A large out-of-order batch: append everything, then re-sort once.
            self._extend(tss, range(seq0, seq0 + len(batch)), blobs, types, pids)
            order = sorted(range(len(self.ts)), key=lambda i: (self.ts[i], self.seqs[i]))
            self.ts = array("q", (self.ts[i] for i in order))
            self.seqs = array("q", (self.seqs[i] for i in order))
            self.blobs = [self.blobs[i] for i in order]
            self.types = [self.types[i] for i in order]
            self.projects = [self.projects[i] for i in order]
        return len(batch)

    def _extend(
        self,
        tss: Iterable[int],
        seqs: Iterable[int],
        blobs: Iterable[bytes],
        types: Iterable[str],
        pids: Iterable[str | None],
    ) -> None:
        self.ts.extend(tss)
        self.seqs.extend(seqs)
        self.blobs.extend(blobs)
        self.types.extend(types)
        self.projects.extend(pids)

    def position(self, ev_id: str) -> int | None:
        seq = self.by_id.get(ev_id)
        if seq is None:
            return None
        ts = self.ts_by_seq[seq]
        lo = bisect_left(self.ts, ts)
        hi = bisect_right(self.ts, ts, lo)
        pos = bisect_left(self.seqs, seq, lo, hi)
        return pos


class _Query:
    """A validated list request."""

    __slots__ = (
        "actor_emails",
        "actor_ids",
        "after",
        "before",
        "event_types",
        "limit",
        "lo",
        "needs_decode",
        "project_ids",
        "resource_ids",
        "tenant_only",
        "up",
    )

    def __init__(self, params: Params, max_limit: int, *, any_type: bool = False) -> None:
        for name in params:
            if name not in _KNOWN_PARAMS:
                raise ApiError(400, f"Unrecognized query parameter: {name}", param=name)
        self.limit = self._int(params, "limit", 20)
        if not 1 <= self.limit <= max_limit:
            raise ApiError(
                400,
                f"Invalid 'limit': integer above or below the allowed range ({self.limit}). "
                f"Expected a value between 1 and {max_limit}.",
                param="limit",
                code="integer_out_of_range",
            )
        lo, up = -(2**63), 2**63 - 1  # inclusive bounds on effective_at
        if (v := self._int(params, "effective_at[gt]", None)) is not None:
            lo = max(lo, v + 1)
        if (v := self._int(params, "effective_at[gte]", None)) is not None:
            lo = max(lo, v)
        if (v := self._int(params, "effective_at[lt]", None)) is not None:
            up = min(up, v - 1)
        if (v := self._int(params, "effective_at[lte]", None)) is not None:
            up = min(up, v)
        self.lo, self.up = lo, up
        self.after = self._one(params, "after")
        self.before = self._one(params, "before")
        if self.after is not None and self.before is not None:
            raise ApiError(400, "Only one of 'after' and 'before' may be given.", param="before")
        tenant = self._one(params, "tenant_only") or "false"
        if tenant.lower() not in ("true", "false"):
            raise ApiError(400, f"Invalid 'tenant_only': {tenant!r}.", param="tenant_only")
        self.tenant_only = tenant.lower() == "true"
        types = params.get("event_types[]")
        self.event_types = frozenset(types) if types else None
        for t in () if any_type else self.event_types or ():
            if is_tenant_scoped(t) != self.tenant_only:
                raise ApiError(
                    400,
                    f"Event type '{t}' is tenant-scoped and requires tenant_only=true."
                    if not self.tenant_only
                    else f"With tenant_only=true every event type must be tenant-scoped; "
                    f"'{t}' is not.",
                    param="event_types[]",
                )
        self.project_ids = frozenset(params["project_ids[]"]) if "project_ids[]" in params else None
        self.actor_ids = frozenset(params["actor_ids[]"]) if "actor_ids[]" in params else None
        self.actor_emails = (
            frozenset(params["actor_emails[]"]) if "actor_emails[]" in params else None
        )
        self.resource_ids = (
            frozenset(params["resource_ids[]"]) if "resource_ids[]" in params else None
        )
        self.needs_decode = bool(self.actor_ids or self.actor_emails or self.resource_ids)

    @staticmethod
    def _one(params: Params, name: str) -> str | None:
        values = params.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise ApiError(400, f"'{name}' given more than once.", param=name)
        return values[0]

    @classmethod
    def _int(cls, params: Params, name: str, default: int | None) -> int | None:
        raw = cls._one(params, name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ApiError(
                400, f"Invalid '{name}': expected an integer, got {raw!r}.", param=name
            ) from None


def _actor_keys(event: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(ids, emails) of the event's actor: user, service account and api key ids."""
    ids: set[str] = set()
    emails: set[str] = set()
    actor = event.get("actor")
    if not isinstance(actor, dict):
        return ids, emails
    session = actor.get("session")
    if isinstance(session, dict) and isinstance(session.get("user"), dict):
        user = session["user"]
        ids.add(user.get("id"))
        emails.add(user.get("email"))
    key = actor.get("api_key")
    if isinstance(key, dict):
        ids.add(key.get("id"))
        for sub in ("user", "service_account"):
            if isinstance(key.get(sub), dict):
                ids.add(key[sub].get("id"))
                emails.add(key[sub].get("email"))
    return ids, emails


def _resource_keys(value: Any, out: set[str], depth: int = 0) -> set[str]:
    """Ids a payload names: its `id` and every `*_id` / nested `id` string (three levels)."""
    if depth > 3:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and (k == "id" or k.endswith("_id")):
                out.add(v)
            elif isinstance(v, dict | list):
                _resource_keys(v, out, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _resource_keys(v, out, depth + 1)
    return out


class FakeOpenAI:
    """A running fake of the audit-log endpoint on 127.0.0.1 (started on construction).

    Use as a context manager or call stop(). `requests` and `counts` record every response."""

    def __init__(
        self,
        events: Iterable[dict[str, Any]] = (),
        *,
        admin_key: str = DEFAULT_ADMIN_KEY,
        seed: int = 0,
        rate_429: float = 0.0,
        rate_5xx: float = 0.0,
        latency: float = 0.0,
        retry_after: float = 0.0,
        max_limit: int = 100,
        port: int = 0,
        refuse_tenant: int | None = None,
    ) -> None:
        self.admin_key = admin_key
        #: Answer tenant_only=true with this status (400, 403 or 404), like an organization
        #: without tenant-level features.
        self.refuse_tenant = refuse_tenant
        self.max_limit = max_limit
        self._store = _Store()
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rate_429 = rate_429
        self._rate_5xx = rate_5xx
        self._latency = latency
        self._retry_after = retry_after
        self._scripted: list[tuple[int, float | None]] = []
        self._requests: list[tuple[int, Params]] = []
        self._counts: Counter[int] = Counter()
        self._tenant_cache: dict[str, bool] = {}
        self._ignore_tenant_only = False
        self._oldest_first = False
        self._malformed_page: str | None = None
        self._malformed_count: int | None = None
        self._paging: str | None = None
        self._fresh_cursors = 0
        self._strays = False
        #: Stored events the last list request examined (pins down O(page) paging in tests).
        self.last_scanned = 0
        #: The most API requests that waited out their latency at the same time so far.
        self.peak_concurrency = 0
        self._delaying = 0
        self.add_events(events)
        self._server = _Server(("127.0.0.1", port), _make_handler(self))
        # A short poll interval makes stop() quick (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-openai", daemon=True
        )
        self._thread.start()
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        #: Root of the test-control endpoints (see control()).
        self.control_url = f"http://127.0.0.1:{self.port}{CONTROL_PATH}"

    # -- control -----------------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._thread.join(timeout=5)

    def add_events(self, events: Iterable[dict[str, Any]]) -> int:
        """Add events at any time; older ones land at their sorted position. Returns the count."""
        with self._lock:
            return self._store.add(events)

    def add_raw(self, body: bytes, effective_at: int, event_type: str) -> None:
        """List `body` (raw JSON, unchecked: an item without an id, nested deeper than a JSON
        writer allows, ...) among the events, at `effective_at`, as of type `event_type`."""
        with self._lock:
            st = self._store
            pos = bisect_right(st.ts, effective_at)
            st.ts.insert(pos, effective_at)
            st.seqs.insert(pos, len(st.ts_by_seq))
            st.ts_by_seq.append(effective_at)
            st.blobs.insert(pos, body)
            st.types.insert(pos, event_type)
            st.projects.insert(pos, None)

    def set_faults(
        self,
        *,
        rate_429: float | None = None,
        rate_5xx: float | None = None,
        latency: float | None = None,
        retry_after: float | None = None,
        ignore_tenant_only: bool | None = None,
        oldest_first: bool | None = None,
        malformed_page: str | None = None,
        malformed_count: int | None = None,
        paging: str | None = None,
        strays: bool | None = None,
    ) -> None:
        """Change fault injection; None leaves a setting as it is (`malformed_page=""` ends
        the malformed pages, `paging=""` the broken cursors; see the module docstring for the
        hostile modes)."""
        if malformed_page and malformed_page not in MALFORMED_PAGES:
            raise ValueError(f"malformed_page must be one of {', '.join(MALFORMED_PAGES)}")
        if paging and paging not in BROKEN_PAGING:
            raise ValueError(f"paging must be one of {', '.join(BROKEN_PAGING)}")
        with self._lock:
            if paging is not None:
                self._paging = paging or None
            if strays is not None:
                self._strays = strays
            if ignore_tenant_only is not None:
                self._ignore_tenant_only = ignore_tenant_only
            if oldest_first is not None:
                self._oldest_first = oldest_first
            if malformed_page is not None:
                self._malformed_page = malformed_page or None
                self._malformed_count = malformed_count
            if rate_429 is not None:
                self._rate_429 = rate_429
            if rate_5xx is not None:
                self._rate_5xx = rate_5xx
            if latency is not None:
                self._latency = latency
            if retry_after is not None:
                self._retry_after = retry_after

    def fail_next(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        """Answer the next `count` authorized requests with `status` (429, 500, 502 or 503)."""
        with self._lock:
            self._scripted.extend([(status, retry_after)] * count)

    @property
    def requests(self) -> list[tuple[int, Params]]:
        """(status, query params) of every request so far, in arrival order (a copy)."""
        with self._log_lock:
            return list(self._requests)

    @property
    def counts(self) -> Counter[int]:
        """Responses by status (a copy)."""
        with self._log_lock:
            return Counter(self._counts)

    def delay(self) -> None:
        """Wait out the latency of one API request (counted for `peak_concurrency`)."""
        with self._log_lock:
            self._delaying += 1
            self.peak_concurrency = max(self.peak_concurrency, self._delaying)
        try:
            time.sleep(self.latency)
        finally:
            with self._log_lock:
                self._delaying -= 1

    def reset_log(self) -> None:
        with self._log_lock:
            self._requests.clear()
            self._counts.clear()

    def __len__(self) -> int:
        return len(self._store)

    def listing(self, *, tenant_only: bool = False) -> list[str]:
        """Every id the unfiltered endpoint would list (with that tenant_only), in order."""
        with self._lock:
            st = self._store
            return [
                orjson.loads(st.blobs[i])["id"]
                for i in range(len(st) - 1, -1, -1)
                if self._tenant(st.types[i]) == tenant_only
            ]

    # -- request handling --------------------------------------------------------------------

    def _record(self, status: int, params: Params) -> None:
        with self._log_lock:
            self._requests.append((status, params))
            self._counts[status] += 1

    def _tenant(self, ev_type: str) -> bool:
        cached = self._tenant_cache.get(ev_type)
        if cached is None:
            cached = self._tenant_cache[ev_type] = is_tenant_scoped(ev_type)
        return cached

    def _check_auth(self, header: str | None) -> None:
        if not header or not header.startswith("Bearer ") or not header[7:].strip():
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API from "
                "your browser and are prompted for a username and password. You can obtain an "
                "API key from https://platform.openai.com/account/api-keys.",
            )
        key = header[7:].strip()
        if key == self.admin_key:
            return
        if key.startswith("sk-proj-") or key.startswith("sk-svcacct-"):
            raise ApiError(
                403,
                "You have insufficient permissions for this operation. Missing scopes: "
                "api.audit_logs.read. Check that you have the correct role in your organization "
                "(Owner), and if you're using a restricted API key, that it has the necessary "
                "scopes. Audit logs require an Admin API key.",
            )
        raise ApiError(
            401,
            f"Incorrect API key provided: {redact_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    def _fault(self) -> ApiError | None:
        with self._lock:
            if self._scripted:
                status, retry_after = self._scripted.pop(0)
            else:
                roll = self._rng.random()
                if roll < self._rate_429:
                    status, retry_after = 429, None
                elif roll < self._rate_429 + self._rate_5xx:
                    status, retry_after = self._rng.choice((500, 502, 503)), None
                else:
                    return None
            if retry_after is None:
                retry_after = self._retry_after
        if status == 429:
            wait = _format_duration(retry_after)
            return ApiError(
                429,
                "Rate limit reached for requests in organization org-fake on requests per min "
                f"(RPM): Limit 60, Used 60, Requested 1. Please try again in {wait}.",
                type="requests",
                code="rate_limit_exceeded",
                headers={
                    "retry-after": f"{retry_after:g}",
                    "retry-after-ms": str(round(retry_after * 1000)),
                    "x-ratelimit-limit-requests": "60",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": wait,
                    "x-ratelimit-limit-tokens": "150000",
                    "x-ratelimit-remaining-tokens": "150000",
                    "x-ratelimit-reset-tokens": "0s",
                },
            )
        if status == 503:
            return ApiError(
                503,
                "The server is overloaded or not ready yet.",
                type="server_error",
                headers={"retry-after": f"{retry_after:g}"} if retry_after else None,
            )
        if status == 502:
            return ApiError(502, "Bad gateway.", type="server_error", code="bad_gateway")
        return ApiError(
            status,
            "The server had an error while processing your request. Sorry about that!",
            type="server_error",
        )

    def _matches(self, q: _Query, i: int) -> bool:
        st = self._store
        ev_type = st.types[i]
        if self._tenant(ev_type) != q.tenant_only and not self._ignore_tenant_only:
            return False
        if q.event_types is not None and ev_type not in q.event_types:
            return False
        if q.project_ids is not None and st.projects[i] not in q.project_ids:
            return False
        if not q.needs_decode:
            return True
        event = orjson.loads(st.blobs[i])
        if q.actor_ids is not None or q.actor_emails is not None:
            ids, emails = _actor_keys(event)
            if q.actor_ids is not None and ids.isdisjoint(q.actor_ids):
                return False
            if q.actor_emails is not None and emails.isdisjoint(q.actor_emails):
                return False
        if q.resource_ids is not None:
            found = _resource_keys(event.get(ev_type), set())
            if found.isdisjoint(q.resource_ids):
                return False
        return True

    def list_page(self, params: Params) -> bytes:
        """The response body for one list request (raises ApiError for a bad one)."""
        q = _Query(params, self.max_limit, any_type=self._ignore_tenant_only)
        with self._lock:
            st = self._store
            a = bisect_left(st.ts, q.lo)  # first position inside the window
            b = bisect_right(st.ts, q.up)  # one past the last
            cursor = q.after if q.after is not None else q.before
            continues = cursor is not None
            fresh_cursor: str | None = None
            if self._paging == "endless" and q.after is not None:
                self._fresh_cursors += 1
                fresh_cursor = f"cursor-{self._fresh_cursors}"
                cursor = None  # the first page again, under a cursor never seen before
            pos: int | None = None
            if cursor is not None:
                pos = st.position(cursor)
                if pos is None:
                    name = "after" if q.after is not None else "before"
                    raise ApiError(
                        400,
                        f"Invalid '{name}': no audit log with id '{cursor}'.",
                        param=name,
                        code="invalid_cursor",
                    )
                if self._paging == "cycle" and q.after is not None:
                    listed = sum(self._matches(q, i) for i in range(max(a, pos), b))
                    if listed == 2 * q.limit:  # the second page's cursor: back to the first
                        pos = None
            page: list[int] = []
            has_more = False
            last_of_page: int | None = None
            if self._oldest_first and q.before is None:
                i = first = a if pos is None else max(a, pos + 1)
                while i <= b - 1:
                    if self._matches(q, i):
                        if len(page) == q.limit:
                            has_more = True
                            break
                        page.append(i)
                    i += 1
                scanned = i - first
                # Each page newest first inside, the pages oldest first: the order breaks
                # only from one page to the next.
                last_of_page = page[-1] if page else None
                page.reverse()
            elif q.before is None:
                i = b - 1 if pos is None else min(b - 1, pos - 1)
                first = i
                while i >= a:
                    if self._matches(q, i):
                        if len(page) == q.limit:
                            has_more = True
                            break
                        page.append(i)
                    i -= 1
                scanned = first - i
            else:
                assert pos is not None
                i = first = max(a, pos + 1)
                while i < b:
                    if self._matches(q, i):
                        if len(page) == q.limit:
                            has_more = True
                            break
                        page.append(i)
                    i += 1
                scanned = i - first
                page.reverse()
            self.last_scanned = scanned
            blobs = [st.blobs[i] for i in page]
            # Oldest first: the next (newer) page starts after the newest of this one.
            cursor_blob = st.blobs[last_of_page] if last_of_page is not None else None
            malformed = self._take_malformed(continues)
            strays = self._stray_blobs(a, b) if self._strays else []
        first_id = _blob_id(blobs[0]) if blobs else None
        last_id = _blob_id(blobs[-1]) if blobs else None
        if cursor_blob is not None:
            last_id = _blob_id(cursor_blob)
        if fresh_cursor is not None:
            last_id, has_more = fresh_cursor, True
        blobs += strays
        if malformed is not None:
            return _malformed_body(malformed, blobs, first_id, last_id, has_more)
        return b"".join(
            (
                b'{"object":"list","data":[',
                b",".join(blobs),
                b'],"first_id":',
                orjson.dumps(first_id),
                b',"last_id":',
                orjson.dumps(last_id),
                b',"has_more":',
                b"true" if has_more else b"false",
                b"}",
            )
        )

    def _stray_blobs(self, a: int, b: int) -> list[bytes]:
        """The two newest and the two oldest stored events outside positions [a, b), in
        listing order (called under the lock)."""
        st = self._store
        newest_first = itertools.chain(range(len(st) - 1, b - 1, -1), range(a - 1, -1, -1))
        oldest_first = itertools.chain(range(a), range(b, len(st)))
        newest = list(itertools.islice(newest_first, 2))
        oldest = list(itertools.islice(oldest_first, 2))[::-1]
        return [st.blobs[i] for i in newest + oldest]

    def _take_malformed(self, continues: bool) -> str | None:
        """The malformed answer due for this page, if any (called under the lock)."""
        if self._malformed_page is None or not continues:
            return None
        if self._malformed_count is not None:
            if self._malformed_count <= 0:
                return None
            self._malformed_count -= 1
        return self._malformed_page

    def control(
        self, method: str, target: str, payload: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """The test-control endpoints for a fake in another process (not part of the API):
        GET /_fake/stats → {"events", "counts", "requests"}; POST /_fake/events with a JSONL
        body adds events (late arrivals); POST /_fake/faults with a JSON object of set_faults
        arguments, or {"fail_next": [status, count]}, changes fault injection."""
        path = urlsplit(target).path
        try:
            if method == "GET" and path == CONTROL_PATH + "/stats":
                with self._log_lock:
                    counts = {str(k): v for k, v in self._counts.items()}
                    n_requests = len(self._requests)
                body = {"events": len(self), "counts": counts, "requests": n_requests}
            elif method == "POST" and path == CONTROL_PATH + "/events":
                events = [orjson.loads(line) for line in payload.splitlines() if line.strip()]
                body = {"added": self.add_events(events)}
            elif method == "POST" and path == CONTROL_PATH + "/faults":
                args = orjson.loads(payload or b"{}")
                if "fail_next" in args:
                    status, count = args.pop("fail_next")
                    self.fail_next(int(status), int(count))
                self.set_faults(**args)
                body = {"ok": True}
            else:
                raise ApiError(404, f"Invalid URL ({method} {path})")
        except (ValueError, TypeError) as exc:
            err = {"message": str(exc), "type": "fake_control", "param": None, "code": None}
            return 400, {}, orjson.dumps({"error": err})
        except ApiError as err:
            return err.status, {}, orjson.dumps(err.body)
        return 200, {}, orjson.dumps(body)

    def handle(
        self, method: str, target: str, auth: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: (status, headers, body)."""
        url = urlsplit(target)
        params: Params = parse_qs(url.query, keep_blank_values=True)
        try:
            if url.path.rstrip("/") != AUDIT_LOGS_PATH:
                raise ApiError(404, f"Invalid URL ({method} {url.path})")
            if method != "GET":
                raise ApiError(405, f"Method {method} not allowed on {url.path}")
            self._check_auth(auth)
            if (fault := self._fault()) is not None:
                raise fault
            if self.refuse_tenant and [v.lower() for v in params.get("tenant_only", [])] == [
                "true"
            ]:
                raise ApiError(
                    self.refuse_tenant,
                    "tenant_only is not available for this organization.",
                    param="tenant_only",
                )
            body = self.list_page(params)
            status, headers = (
                200,
                {
                    "x-ratelimit-limit-requests": "60",
                    "x-ratelimit-remaining-requests": "59",
                    "x-ratelimit-reset-requests": "1s",
                },
            )
        except ApiError as err:
            status, headers, body = err.status, err.headers, orjson.dumps(err.body)
            if status == 502:
                # Like the real edge: a gateway error arrives as HTML, not as JSON.
                headers = {**headers, "content-type": "text/html"}
                body = b"<html><head><title>502 Bad Gateway</title></head><body>" + (
                    b"<center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center>"
                    b"</body></html>\n"
                )
        self._record(status, params)
        return status, headers, body

    @property
    def latency(self) -> float:
        return self._latency


def _malformed_body(
    kind: str, blobs: list[bytes], first_id: str | None, last_id: str | None, has_more: bool
) -> bytes:
    """A list body broken the way `kind` says (see MALFORMED_PAGES)."""
    data = b"[" + b",".join(blobs) + b"]"
    cursors = b'"first_id":' + orjson.dumps(first_id) + b',"last_id":' + orjson.dumps(last_id)
    more = b"true" if has_more else b"false"
    if kind == "no_has_more":
        return b'{"object":"list","data":' + data + b"," + cursors + b"}"
    if kind == "data_null":
        return b'{"object":"list","data":null,' + cursors + b',"has_more":' + more + b"}"
    return b'{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":true}'


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 makes bursts of concurrent clients wait for SYN retries.
    request_queue_size = 256
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that the crash tests SIGKILL mid-response are expected: no traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Cut the keep-alive connections too, so a stopped fake is really unreachable."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections
        # Headers and body go out in separate writes: without this, Nagle plus delayed ACK
        # stalls every keep-alive response by ~40 ms.
        disable_nagle_algorithm = True
        server_version = "fake-openai"
        sys_version = ""

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            payload = self.rfile.read(length) if length else b""
            if self.path.startswith(CONTROL_PATH):
                status, headers, body = fake.control(self.command, self.path, payload)
            else:
                if fake.latency:
                    fake.delay()
                status, headers, body = fake.handle(
                    self.command, self.path, self.headers.get("authorization")
                )
            self.send_response(status)
            self.send_header("content-type", headers.pop("content-type", "application/json"))
            self.send_header("content-length", str(len(body)))
            self.send_header("openai-version", "2020-10-01")
            self.send_header("x-request-id", f"req_{random.getrandbits(64):016x}")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _read_jsonl(path: str) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.openai_api",
        description="Serve a fake OpenAI audit-log endpoint until killed; prints READY <base_url>.",
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--events", type=int, default=0, help="generate this many events")
    parser.add_argument("--events-file", help="JSONL file of audit-log objects to serve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=1767225600, help="unix seconds (2026-01-01)")
    parser.add_argument("--end", type=int, default=None, help="unix seconds (default start+1d)")
    parser.add_argument("--same-second-ratio", type=float, default=0.0)
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=0.0)
    parser.add_argument("--admin-key", default=DEFAULT_ADMIN_KEY)
    args = parser.parse_args(argv)
    end = args.end if args.end is not None else args.start + 86400
    fake = FakeOpenAI(
        admin_key=args.admin_key,
        seed=args.seed,
        rate_429=args.rate_429,
        rate_5xx=args.rate_5xx,
        latency=args.latency,
        retry_after=args.retry_after,
        port=args.port,
    )
    # Bulk loading creates millions of short-lived dicts: cyclic GC passes only cost time.
    gc.disable()
    if args.events:
        gen = iter_events(
            args.events,
            start=args.start,
            end=end,
            seed=args.seed,
            same_second_ratio=args.same_second_ratio,
        )
        # Chunks keep peak memory at the serialized size rather than a million dicts.
        while True:
            chunk = [e for _, e in zip(range(50_000), gen, strict=False)]
            if not chunk:
                break
            fake.add_events(chunk)
    if args.events_file:
        fake.add_events(_read_jsonl(args.events_file))
    gc.freeze()
    gc.enable()
    sys.stdout.write(f"READY {fake.base_url}\n")
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
