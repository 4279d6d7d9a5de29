"""A hostile audit-log API (issue 11, items 4 and 5), served over real loopback HTTP by a small
stub: cursors that cycle, `has_more` forever, events outside the requested window. Each test
checks the outcome and that no event is lost once the API behaves again."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from forwarder.deadletter import read_dead_letters
from tests.conftest import ADMIN_KEY, ORG_TYPES, cli_env, raw_file_sink, read_ndjson, run_cli
from tests.fakes.events import make_events


class HostileApi:
    """Lists `events` honestly (newest first, `after` cursors, [gte, lt) windows) unless
    `mode` says otherwise: "cycle" sends the second page's cursor back to the first page,
    "endless" answers every cursor with the first page again under a fresh cursor, "strays"
    adds events from outside the requested window to every page."""

    def __init__(self, events: list[dict[str, Any]], page_size: int = 20) -> None:
        self.events = sorted(events, key=lambda e: (e["effective_at"], e["id"]), reverse=True)
        self.page_size = page_size
        self.mode = "honest"
        self.requests = 0
        self._fresh = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                body = orjson.dumps(stub.answer(query))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, query: dict[str, list[str]]) -> dict[str, Any]:
        self.requests += 1
        lo = int(query.get("effective_at[gte]", ["0"])[0])
        hi = int(query.get("effective_at[lt]", [str(2**62)])[0])
        inside = [e for e in self.events if lo <= e["effective_at"] < hi]
        after = query.get("after", [None])[0]
        pages = [inside[i : i + self.page_size] for i in range(0, len(inside), self.page_size)]
        pages = pages or [[]]
        cursors = [page[-1]["id"] if page else None for page in pages]
        index = cursors.index(after) + 1 if after in cursors else 0
        if self.mode == "endless" and after is not None:
            self._fresh += 1
            return self._page(pages[0], f"cursor-{self._fresh}", True)
        if self.mode == "cycle" and index == 2:
            index = 0  # the second page's cursor leads back to the first page
        if index >= len(pages):
            return self._page([], None, False)
        page = list(pages[index])
        if self.mode == "strays":
            outside = [e for e in self.events if not lo <= e["effective_at"] < hi]
            page += outside[:2] + outside[-2:]
        return self._page(page, cursors[index], index + 1 < len(pages))

    @staticmethod
    def _page(data: list[dict[str, Any]], last: str | None, more: bool) -> dict[str, Any]:
        first = data[0]["id"] if data else None
        return {
            "object": "list",
            "data": data,
            "first_id": first,
            "last_id": last,
            "has_more": more,
        }


@pytest.fixture
def events() -> list[dict[str, Any]]:
    now = int(time.time())
    events = make_events(150, start=now - 3000, end=now - 120, seed=71, types=ORG_TYPES)
    # One event without a type: it goes to the dead letters, never lost.
    return [*events, {"object": "organization.audit_log", "id": "audit_log-untyped",
                      "effective_at": now - 1000}]  # fmt: skip


@pytest.fixture
def api(events: list[dict[str, Any]]) -> Iterator[HostileApi]:
    stub = HostileApi(events)
    yield stub
    stub.close()


def run_once(tmp_path: Path, api: HostileApi, *extra: str) -> Any:
    _, to_file = raw_file_sink(tmp_path)
    env = cli_env(OPENAI_ADMIN_KEY=ADMIN_KEY, OPENAI_BASE_URL=api.base_url)
    args = ["run", "--once", "--without-tenant", "--start-at", "1h", *extra, *to_file]
    return run_cli(*args, cwd=tmp_path, env=env)


def watermark(tmp_path: Path) -> int | None:
    shown = run_cli("checkpoint", "show", "--json", "--state", str(tmp_path / "s.db"), cwd=tmp_path)
    streams = orjson.loads(shown.stdout)["streams"] if shown.code == 0 else []
    return next((s["watermark_unix"] for s in streams if s["stream"] == "default"), None)


def received_plus_dead_lettered(tmp_path: Path) -> Counter[str]:
    got = Counter(doc["id"] for doc in read_ndjson(tmp_path / "out.ndjson"))
    got.update(
        letter["event"]["id"] for _, _, letter in read_dead_letters(tmp_path / "dead-letter")
    )
    return got


@pytest.mark.parametrize("mode", ["cycle", "endless"])
def test_paging_that_never_ends_fails_the_sweep_at_once_and_keeps_the_watermark(
    tmp_path: Path, api: HostileApi, events: list[dict[str, Any]], mode: str
) -> None:
    api.mode = mode
    failed = run_once(tmp_path, api)
    assert failed.code == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("openai-audit-forwarder: error: OpenAI API: ")
    assert ("came back" if mode == "cycle" else "pages in a row") in last
    assert "the watermark stays" in last
    assert api.requests <= 5
    assert watermark(tmp_path) is None

    api.mode = "honest"  # the API is fixed: the same command delivers everything, once
    again = run_once(tmp_path, api)
    assert again.code == 0, again.stderr
    assert received_plus_dead_lettered(tmp_path) == Counter(e["id"] for e in events)


def test_events_outside_the_requested_window_are_dropped_and_never_delivered_twice(
    tmp_path: Path, api: HostileApi, events: list[dict[str, Any]]
) -> None:
    start = events[-1]["effective_at"] + 1  # the oldest events lie before the first window
    inside = [e for e in events if e["effective_at"] >= start]
    api.mode = "strays"
    first = run_once(tmp_path, api, "--start-at", str(start), "-vv")  # a debug line
    assert first.code == 0, first.stderr
    assert "dropped 4 events outside the requested window" in first.stderr
    again = run_once(tmp_path, api, "--start-at", str(start))  # re-reads the overlap
    assert again.code == 0, again.stderr
    assert received_plus_dead_lettered(tmp_path) == Counter(e["id"] for e in inside)
