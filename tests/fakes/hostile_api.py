"""A hostile OpenAI audit-log API on loopback, for the transport tests: a real HTTP/1.1 server
(plain, or TLS with a certificate the client does not trust) that answers correctly from a
`FakeOpenAI`'s paging, except for the requests a plan makes misbehave:

- `slow_body`: the right page, one byte per `drip` seconds (slowloris);
- `slow_headers`: the status line and headers one byte per `drip` seconds;
- `hang`: reads the request and never answers (until the stub stops);
- `endless`: 200, chunked, a body that never ends, as fast as the client reads;
- `huge`: 200 with a Content-Length of 10 GiB, sent as fast as the client reads;
- `gzip_bomb`: 200, `Content-Encoding: gzip`, 1 MB that inflates to 1 GiB;
- `concatenated`: the right page as two JSON documents back to back;
- `gzip`: the right page, gzip-encoded (as the real API sends it); `corrupt_gzip`: the
  same with bytes of its deflate stream flipped;
- `scope_403`: 403 with OpenAI's missing-scope error body (echoing the key, as a hostile
  server may); `plain_403`: 403 with a message that names no scope.
"""

from __future__ import annotations

import functools
import gzip
import socket
import socketserver
import ssl
import threading
import zlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from tests.fakes.openai_api import ApiError, FakeOpenAI

MODES = (
    "slow_body",
    "slow_headers",
    "hang",
    "endless",
    "huge",
    "gzip_bomb",
    "concatenated",
    "gzip",
    "corrupt_gzip",
    "scope_403",
    "plain_403",
)
SCOPE_MESSAGE = (
    "You have insufficient permissions for this operation. Missing scopes: "
    "api.audit_logs.read. Check that you have the correct role in your organization (Owner), "
    "and if you're using a restricted API key, that it has the necessary scopes."
)


@functools.lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GiB of zeros (made once per test session)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join([packer.compress(block) for _ in range(1024)] + [packer.flush()])


class HostileAPI:
    """Started on construction; use as a context manager. `misbehave()` plans faults;
    `requests` records (mode, path) of every request that reached the stub."""

    def __init__(
        self,
        events: Iterable[dict[str, Any]] = (),
        *,
        admin_key: str,
        tls: ssl.SSLContext | None = None,
        drip: float = 1.0,
    ) -> None:
        self.admin_key = admin_key
        self.drip = drip
        self.fake = FakeOpenAI(events, admin_key=admin_key)  # its paging; its server idles
        self._tls = tls
        self._lock = threading.Lock()
        self._plan: list[str | None] = []
        self._forever: str | None = None
        self._requests: list[tuple[str, str]] = []
        self.hanging = threading.Event()  # set while a `hang` request is held
        self.closing = threading.Event()
        self.handshakes = 0
        self._server = _Server(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="hostile-api", daemon=True
        )
        self._thread.start()
        self.port: int = self._server.server_address[1]
        scheme = "https" if tls else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> HostileAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.fake.stop()

    def add_events(self, events: Iterable[dict[str, Any]]) -> int:
        return self.fake.add_events(events)

    def misbehave(self, mode: str | None, *, after: int = 0, times: int | None = None) -> None:
        """The next `after` requests are answered right, then `times` of them (None: every
        one from then on) in `mode`; None answers everything right again."""
        assert mode is None or mode in MODES, mode
        with self._lock:
            self._plan = [None] * after
            if times is None:
                self._forever = mode
            else:
                self._plan += [mode] * times
                self._forever = None

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._requests)

    def _next_mode(self, path: str) -> str:
        with self._lock:
            mode = self._plan.pop(0) if self._plan else self._forever
            self._requests.append((mode or "normal", path))
            return mode or "normal"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def _make_handler(api: HostileAPI) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if api._tls is not None:
                with api._lock:
                    api.handshakes += 1
                try:
                    sock = api._tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused the certificate
            try:
                self._serve(sock)
            except OSError:
                pass  # the client went away (cut a slow or endless answer)
            finally:
                sock.close()

        def _serve(self, sock: socket.socket) -> None:
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(65536)
                if not data:
                    return
                head += data
            request_line, *header_lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
            target = request_line.split(" ")[1]
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in header_lines if ":" in line)
            }
            mode = api._next_mode(urlsplit(target).path)
            if headers.get("authorization") != f"Bearer {api.admin_key}":
                return self._json(sock, 401, {"error": {"message": "Incorrect API key"}})
            if mode == "scope_403":
                message = f"{SCOPE_MESSAGE} (key {api.admin_key})"
                return self._json(sock, 403, _error(message, "insufficient_permissions"))
            if mode == "plain_403":
                return self._json(sock, 403, _error("Forbidden for this key.", None))
            if mode == "hang":
                api.hanging.set()
                api.closing.wait()
                return None
            if mode == "endless":
                return self._endless(sock)
            if mode == "huge":
                return self._huge(sock)
            if mode == "gzip_bomb":
                bomb = gzip_bomb()
                head_out = _head(200, len(bomb), "Content-Encoding: gzip\r\n")
                sock.sendall(head_out + bomb)
                return None
            try:
                body = api.fake.list_page(parse_qs(urlsplit(target).query))
            except ApiError as exc:
                return self._json(sock, exc.status, exc.body)
            if mode == "concatenated":
                body = _split_in_two(body)
            if mode in ("gzip", "corrupt_gzip"):
                packed = gzip.compress(body)
                if mode == "corrupt_gzip":
                    packed = packed[:12] + bytes(b ^ 0x5A for b in packed[12:40]) + packed[40:]
                sock.sendall(_head(200, len(packed), "Content-Encoding: gzip\r\n") + packed)
                return None
            if mode == "slow_body":
                sock.sendall(_head(200, len(body)))
                return self._drip(sock, body)
            if mode == "slow_headers":
                return self._drip(sock, _head(200, len(body)) + body)
            sock.sendall(_head(200, len(body)) + body)
            return None

        def _json(self, sock: socket.socket, status: int, doc: Any) -> None:
            body = orjson.dumps(doc)
            sock.sendall(_head(status, len(body)) + body)

        def _drip(self, sock: socket.socket, data: bytes) -> None:
            for i in range(len(data)):
                if api.closing.wait(api.drip):
                    return
                sock.sendall(data[i : i + 1])

        def _endless(self, sock: socket.socket) -> None:
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            piece = b'{"object":"list","data":[' + b'{"id":"audit_log-x"},' * 3000
            chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            while not api.closing.is_set():
                sock.sendall(chunk)

        def _huge(self, sock: socket.socket) -> None:
            sock.sendall(_head(200, 10 << 30))
            block = b" " * 65536
            while not api.closing.is_set():
                sock.sendall(block)

    return Handler


def _head(status: int, length: int, extra: str = "") -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 403: "Forbidden"}.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def _split_in_two(body: bytes) -> bytes:
    """A list response as two documents back to back: the first half of `data` (with
    has_more), then the rest with the original cursor fields."""
    page = orjson.loads(body)
    data = page["data"]
    half = len(data) // 2
    first = {"object": "list", "data": data[:half], "has_more": True}
    if data[:half]:
        first["last_id"] = data[half - 1]["id"]
    second = {**page, "data": data[half:]}
    return orjson.dumps(first) + b"\n" + orjson.dumps(second)
