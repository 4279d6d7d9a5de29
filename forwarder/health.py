"""The metrics endpoint: Prometheus `/metrics` and a `/healthz` that fails when a stream's last
successful sweep is older than the threshold (healthy during a first grace period)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forwarder.errors import ConfigError
from forwarder.metrics import REGISTRY


class Health:
    """Last successful sweep per stream, and the last error, for /healthz."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.started = time.time()
        self._lock = threading.Lock()
        self._success: dict[str, float] = {}
        self._error: dict[str, str] = {}

    def register(self, stream: str) -> None:
        with self._lock:
            self._error.setdefault(stream, "")

    def success(self, stream: str) -> None:
        with self._lock:
            self._success[stream] = time.time()
            self._error[stream] = ""

    def failure(self, stream: str, reason: str) -> None:
        with self._lock:
            self._error[stream] = reason

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
        return healthy, {
            "status": "ok" if healthy else "unhealthy",
            "max_age_seconds": self.max_age,
            "streams": streams,
        }


def serve_metrics(address: str, health: Health) -> ThreadingHTTPServer:
    """Start serving on HOST:PORT in a daemon thread."""
    host, _, port = address.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
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

    try:
        server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
    except OSError as exc:
        raise ConfigError(
            f"invalid setting metrics_addr: cannot listen on {address} ({exc})"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
