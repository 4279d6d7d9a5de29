"""The API source's HTTP stack on public seams only (forwarder/sources/transport.py): an
`httpx.BaseTransport` over httpcore's pool with the guarded network backend. The proxy the
environment names is used (and its connection is guarded too: a stop cuts a request hanging
there), NO_PROXY is honoured, and no private attribute of httpx or httpcore is touched. The
deadline and the interruptible read against a hostile server: tests/test_hostile_api.py."""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from forwarder.errors import ConfigError, Stopped
from forwarder.sources.openai_api import OpenAIAuditLogSource
from forwarder.sources.transport import environment_proxy
from tests.conftest import ADMIN_KEY, recent_events
from tests.fakes.openai_api import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class ForwardProxy:
    """A plain HTTP forward proxy on loopback: it passes each absolute-form request on to its
    target and records it; with `hang`, it reads the request and never answers."""

    def __init__(self, hang: bool = False) -> None:
        self.seen: list[str] = []
        self.hang = hang
        self.release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.seen.append(self.path)
                if proxy.hang:
                    proxy.release.wait(60)
                    return
                upstream = httpx.get(
                    self.path,
                    headers={"Authorization": self.headers["Authorization"]},
                    trust_env=False,
                )
                self.send_response(upstream.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(recent_events(30, hours=1, seed=81), admin_key=ADMIN_KEY) as fake:
        yield fake


def listed(api: FakeOpenAI, **kwargs: Any) -> int:
    source = OpenAIAuditLogSource(base_url=api.base_url, admin_key=ADMIN_KEY, **kwargs)
    try:
        return sum(len(page) for page in source.pages(0, None))
    finally:
        source.close()


def test_the_proxy_the_environment_names_carries_the_requests(
    api: FakeOpenAI, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = ForwardProxy()
    try:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        assert listed(api, page_size=10) == 30
        assert len(proxy.seen) == 3
        assert all(url.startswith(api.base_url + "/organization/audit_logs?") for url in proxy.seen)
        clean_proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
        assert listed(api, page_size=10) == 30
        assert len(proxy.seen) == 3  # bypassed: straight to the API
    finally:
        proxy.close()


def test_a_stop_cuts_a_request_hanging_at_the_proxy(
    api: FakeOpenAI, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = ForwardProxy(hang=True)
    stop = threading.Event()
    clean_proxy_env.setenv("http_proxy", proxy.url)
    source = OpenAIAuditLogSource(
        base_url=api.base_url, admin_key=ADMIN_KEY, timeout=60.0, stop=stop
    )
    try:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(Stopped, match="stopped during a request"):
            list(source.pages(0, None))
        assert time.monotonic() - started < 5  # not the 60 s request timeout
        assert len(proxy.seen) == 1
    finally:
        source.close()
        proxy.close()


@pytest.mark.parametrize(
    ("variables", "url", "expected"),
    [
        ({}, "https://api.openai.com/v1", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.openai.com/v1", "http://proxy:3128"),
        ({"HTTPS_PROXY": "proxy:3128"}, "https://api.openai.com/v1", "http://proxy:3128"),
        ({"HTTP_PROXY": "http://proxy:3128"}, "https://api.openai.com/v1", None),
        ({"ALL_PROXY": "http://proxy:3128"}, "https://api.openai.com/v1", "http://proxy:3128"),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".openai.com"},
            "https://api.openai.com/v1",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "openai.com:443"},
            "https://api.openai.com/v1",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "notopenai.com"},
            "https://api.openai.com/v1",
            "http://proxy:3128",
        ),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "*"}, "http://127.0.0.1:8/v1", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.0/8"}, "http://127.0.0.1:8/v1", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "[::1]"}, "http://[::1]:8/v1", None),
    ],
)
def test_the_environment_proxy_for_the_base_url(
    clean_proxy_env: pytest.MonkeyPatch, variables: dict[str, str], url: str, expected: str | None
) -> None:
    for name, value in variables.items():
        clean_proxy_env.setenv(name, value)
    proxy = environment_proxy(httpx.URL(url))
    assert (str(proxy.url).rstrip("/") if proxy else None) == expected


def test_a_socks_proxy_is_a_configuration_error_without_its_credentials(
    clean_proxy_env: pytest.MonkeyPatch,
) -> None:
    clean_proxy_env.setenv("HTTPS_PROXY", "socks5://user:secret@proxy:1080")
    with pytest.raises(ConfigError, match="socks5:// proxy") as info:
        environment_proxy(httpx.URL("https://api.openai.com/v1"))
    assert "secret" not in str(info.value)


def test_the_source_touches_no_private_attribute_of_httpx_or_httpcore() -> None:
    for name in ("openai_api.py", "transport.py"):
        text = (REPO / "forwarder" / "sources" / name).read_text()
        private = re.findall(r"\b(?:client|transport|pool|httpx|httpcore)\._\w+", text)
        assert private == [], (name, private)
        assert "_network_backend" not in text and "_mounts" not in text
