"""The metrics endpoint: Prometheus `/metrics` and a `/healthz` that fails when a stream's last
successful sweep is older than the threshold (healthy during a first grace period)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forwarder.config import listen_address
from forwarder.errors import ConfigError
from forwarder.logs import redact
from forwarder.metrics import REGISTRY

# A client gets this long to send its request and read the answer; then its connection is
# closed. At most MAX_CONNECTIONS are served at once (each takes a thread): the ones beyond
# are closed at once, so idle or slow clients cannot pile up threads.
CONNECTION_TIMEOUT = 5.0
MAX_CONNECTIONS = 32


class Health:
    """Last successful sweep per stream, and the last error, for /healthz."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.started = time.time()
        self._lock = threading.Lock()
        self._success: dict[str, float] = {}
        self._error: dict[str, str] = {}
        self._sinks: dict[str, Any] = {}  # sinks that hold events back (their status())

    def watch(self, sinks: Any) -> None:
        """Show what these sinks hold back (the S3 Parquet spool): its size and age."""
        with self._lock:
            self._sinks.update((sink.name, sink) for sink in sinks if sink.status() is not None)

    def register(self, stream: str) -> None:
        with self._lock:
            self._error.setdefault(stream, "")

    def success(self, stream: str) -> None:
        with self._lock:
            self._success[stream] = time.time()
            self._error[stream] = ""

    def failure(self, stream: str, reason: str) -> None:
        with self._lock:
            self._error[stream] = redact(reason)

    def report(self) -> tuple[bool, dict[str, Any]]:
        now = time.time()
        streams: dict[str, Any] = {}
        healthy = True
        with self._lock:
            for stream in sorted(self._error):
                last = self._success.get(stream)
                # Before its first success a stream is judged from the process start.
                age = now - (last if last is not None else self.started)
                ok = age <= self.max_age
                healthy &= ok
                streams[stream] = {
                    "healthy": ok,
                    "last_success_age_seconds": round(now - last, 1) if last else None,
                    "last_error": self._error[stream] or None,
                }
            sinks = list(self._sinks.items())
        held: dict[str, Any] = {}
        for name, sink in sinks:
            status = sink.status()
            # Held back past its flush interval plus the sweep threshold: uploads are stuck.
            age = status.get("oldest_age_seconds") or 0.0
            status["healthy"] = age <= status.get("flush_interval_seconds", 0.0) + self.max_age
            healthy &= status["healthy"]
            held[name] = status
        report = {
            "status": "ok" if healthy else "unhealthy",
            "max_age_seconds": self.max_age,
            "streams": streams,
        }
        if held:
            report["spools"] = held
        return healthy, report


class _BoundedServer(ThreadingHTTPServer):
    """One thread per connection, but never more than MAX_CONNECTIONS of them."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve_metrics(address: str, health: Health) -> ThreadingHTTPServer:
    """Start serving on HOST:PORT, [IPV6]:PORT or :PORT (127.0.0.1) in a daemon thread."""
    host, port = listen_address(address)

    class Handler(BaseHTTPRequestHandler):
        timeout = CONNECTION_TIMEOUT  # applied to the socket: an idle client is dropped

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path.split("?")[0] == "/healthz":
                healthy, doc = health.report()
                self._send(200 if healthy else 503, orjson.dumps(doc), "application/json")
            else:
                self._send(404, b'{"error":"not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(_BoundedServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = Server((host, port), Handler)
    except OSError as exc:
        raise ConfigError(
            f"invalid setting metrics_addr: cannot listen on {address} ({exc})"
        ) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
