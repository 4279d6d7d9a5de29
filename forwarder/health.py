"""The metrics endpoint: Prometheus `/metrics`; `/healthz`, the upstream health of every stream
(fails when a stream's last successful sweep is older than the threshold, and says why: a
sink being retried, the last error, a companion stream not run); and `/livez`, which fails only
when a stream's loop is stuck (silent past a bound made of its interval and retry budgets) or
has ended, so that an orchestrator restarts a stuck process but not one waiting out an outage."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forwarder.config import listen_address
from forwarder.errors import ConfigError
from forwarder.logs import redact
from forwarder.metrics import REGISTRY

if TYPE_CHECKING:
    from forwarder.config import Settings

# A client gets this long to send its request and read the answer; then its connection is
# closed. At most MAX_CONNECTIONS are served at once (each takes a thread): the ones beyond
# are closed at once, so idle or slow clients cannot pile up threads.
CONNECTION_TIMEOUT = 5.0
MAX_CONNECTIONS = 32
# The largest wait between two attempts of an API request (OpenAIAuditLogSource.backoff_cap).
API_BACKOFF_CAP = 60.0
# One sink attempt can outlast the delivery's retry deadline (a Fluentd ack wait, a sink's own
# attempts inside one write), and a batch takes time to render: headroom per batch.
SINK_ATTEMPT_SLACK = 600.0


def max_silence(settings: Settings, loops: int = 1) -> float:
    """How long a stream loop may go without a heartbeat before /livez calls it stuck. The loop
    beats before and after each wait and sweep and for every page, so the longest silence is
    the longest of: an interval; one API page retried to the end of its budget
    (request_retries + 1 attempts of request_timeout, each followed by a backoff of at most
    API_BACKOFF_CAP); one batch whose sink is retried for sink_retry_timeout, once for each
    loop of the process, as loops that share a sink take turns on its batch lock. The bound
    is their sum: about 30 minutes with the defaults and one loop."""
    page = (settings.request_retries + 1) * (settings.request_timeout + API_BACKOFF_CAP)
    batch = settings.sink_retry_timeout + SINK_ATTEMPT_SLACK
    return settings.interval + page + max(1, loops) * batch


@dataclass
class _Stream:
    success: float | None = None
    error: str = ""  # the last sweep's failure, until a sweep succeeds
    status: str = "starting"
    reason: str = ""


@dataclass
class _Loop:
    max_silence: float
    beat: float
    ended: str = ""


class Health:
    """Per stream: the last successful sweep, the last error and what is happening now (for
    /healthz); per stream loop: its last heartbeat (for /livez). `clock` is for tests."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.time) -> None:
        self.max_age = max_age
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._loops: dict[str, _Loop] = {}
        self._sinks: dict[str, Any] = {}  # sinks that hold events back (their status())

    def watch(self, sinks: Any) -> None:
        """Show what these sinks hold back (the S3 Parquet spool): its size and age."""
        with self._lock:
            self._sinks.update((sink.name, sink) for sink in sinks if sink.status() is not None)

    # Upstream health ------------------------------------------------------------------

    def register(self, stream: str) -> None:
        with self._lock:
            self._streams.setdefault(stream, _Stream())

    def success(self, stream: str) -> None:
        with self._lock:
            state = self._streams.setdefault(stream, _Stream())
            state.success = self.clock()
            state.error = state.reason = ""
            state.status = "ok"

    def failure(self, stream: str, reason: str) -> None:
        with self._lock:
            state = self._streams.setdefault(stream, _Stream())
            state.error = state.reason = redact(reason)
            state.status = "failing"

    def retrying(self, stream: str, reason: str) -> None:
        """A sink of `stream` failed and is being retried: the sweep goes on."""
        with self._lock:
            state = self._streams.setdefault(stream, _Stream())
            state.reason = redact(reason)
            state.status = "retrying"

    def not_run(self, stream: str, reason: str) -> None:
        """`stream` was not swept this time (the stream before it in its loop failed)."""
        with self._lock:
            state = self._streams.setdefault(stream, _Stream())
            state.reason = redact(reason)
            state.status = "not run"

    def report(self) -> tuple[bool, dict[str, Any]]:
        now = self.clock()
        streams: dict[str, Any] = {}
        healthy = True
        with self._lock:
            for name in sorted(self._streams):
                state = self._streams[name]
                last = state.success
                # Before its first success a stream is judged from the process start.
                ok = now - (last if last is not None else self.started) <= self.max_age
                healthy &= ok
                status = state.status
                if not ok and status in ("ok", "starting"):
                    status = "stale"  # a sweep runs longer than the threshold, no error yet
                streams[name] = {
                    "healthy": ok,
                    "status": status,
                    "reason": state.reason or None,
                    "last_success_age_seconds": round(now - last, 1) if last else None,
                    "last_error": state.error or None,
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

    # Liveness -------------------------------------------------------------------------

    def loop_started(self, loop: str, max_silence: float) -> None:
        with self._lock:
            self._loops[loop] = _Loop(max_silence, self.clock())

    def beat(self, loop: str) -> None:
        with self._lock:
            if state := self._loops.get(loop):
                state.beat = self.clock()

    def loop_ended(self, loop: str, reason: str) -> None:
        with self._lock:
            if state := self._loops.get(loop):
                state.ended = redact(reason) or "ended"

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        now = self.clock()
        loops: dict[str, Any] = {}
        alive = True
        with self._lock:
            for name in sorted(self._loops):
                state = self._loops[name]
                silent = now - state.beat
                ok = not state.ended and silent <= state.max_silence
                alive &= ok
                loops[name] = {
                    "alive": ok,
                    "silent_seconds": round(silent, 1),
                    "max_silence_seconds": state.max_silence,
                    "ended": state.ended or None,
                }
        return alive, {"status": "ok" if alive else "stuck", "loops": loops}


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
            elif self.path.split("?")[0] == "/livez":
                alive, doc = health.liveness()
                self._send(200 if alive else 503, orjson.dumps(doc), "application/json")
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
