"""Guards for the API source's HTTP: a total deadline per request, a stop signal that cuts a
request in flight within a fraction of a second, a cap on a response's decoded size, and the
parsing of a body that holds several JSON documents back to back. The guarded sockets reach
httpx through public seams only: httpcore's pool takes them as its `network_backend`, and
`GuardedTransport` is the `httpx.BaseTransport` over that pool (with the proxy the environment
names, which httpx would otherwise pick)."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpcore
import httpx
import orjson

from forwarder.deepjson import loads_deep
from forwarder.errors import ConfigError

# How long a blocked socket operation waits before it looks at the stop signal and the
# deadline again; SIGTERM is then honoured within this (plus a little) even mid-request.
SLICE = 0.25
STEP = 1 << 20  # largest piece of a gzip body inflated at once
T = TypeVar("T")


class Interrupted(Exception):
    """The stop signal arrived while a request was in flight."""


class BodyTooLarge(Exception):
    """The decoded response body is larger than the cap."""


class Malformed(Exception):
    """The body is not one JSON object, nor a run of JSON objects with a `data` list each."""


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sockets, with every blocking call cut at the current request's deadline and
    interrupted by the stop signal. Reads and writes wait in slices of `SLICE` (a timed-out
    socket call consumes nothing, so the slices resume safely); connect and the TLS handshake
    run in a helper thread that a stop abandons."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Every socket call of this thread inside the block ends by `seconds` from now."""
        self._local.deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self._local.deadline = None

    def budget(self, timeout: float | None, expired: type[Exception]) -> float | None:
        """What the next blocking call may take: its own timeout, cut at the deadline.
        Raises `Interrupted` once stopped, `expired` once past the deadline."""
        if self.stop.is_set():
            raise Interrupted
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise expired("the request took longer than its deadline")
        return remaining if timeout is None else min(timeout, remaining)

    def sliced(self, call: Callable[[float], T], timeout: float | None, expired: type) -> T:
        """`call(seconds)` again and again in slices until it returns, its own `timeout` or
        the deadline passes, or the stop signal arrives."""
        own_end = None if timeout is None else time.monotonic() + timeout
        while True:
            limit = self.budget(None if own_end is None else own_end - time.monotonic(), expired)
            if limit is not None and limit <= 0:
                raise expired("timed out")
            try:
                return call(SLICE if limit is None else min(SLICE, limit))
            except expired:
                continue

    def interruptible(self, call: Callable[[], T]) -> T:
        """Run a call that cannot be sliced (connect, TLS handshake) in a helper thread, and
        give up on it when the stop signal arrives; its own timeout bounds it otherwise."""
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["value"] = call()
            except BaseException as exc:  # handed to the caller
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name="openai-api-connect", daemon=True).start()
        while not done.wait(SLICE):
            if self.stop.is_set():
                raise Interrupted  # the process is stopping; the helper ends on its timeout
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        limit = self.budget(timeout, httpcore.ConnectTimeout)
        stream = self.interruptible(
            lambda: self._inner.connect_tcp(host, port, limit, local_address, socket_options)
        )
        return GuardedStream(stream, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        limit = self.budget(timeout, httpcore.ConnectTimeout)
        stream = self.interruptible(
            lambda: self._inner.connect_unix_socket(path, limit, socket_options)
        )
        return GuardedStream(stream, self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, backend: GuardedBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._backend.sliced(
            lambda limit: self._inner.read(max_bytes, limit), timeout, httpcore.ReadTimeout
        )

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # A write that times out may have sent part of the buffer: not sliced, only cut.
        self._inner.write(buffer, self._backend.budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        limit = self._backend.budget(timeout, httpcore.ConnectTimeout)
        inner = self._backend.interruptible(
            lambda: self._inner.start_tls(ssl_context, server_hostname, limit)
        )
        return GuardedStream(inner, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedTransport(httpx.BaseTransport):
    """httpx's transport over httpcore's connection pool (or its HTTP proxy pool) with the
    guarded sockets of `backend`: httpx takes no network backend, httpcore does
    (`network_backend=`), so this joins the two with their public APIs only. The request and
    response mapping and the exception names follow httpx's own `HTTPTransport`."""

    def __init__(
        self,
        backend: GuardedBackend,
        *,
        ssl_context: ssl.SSLContext,
        limits: httpx.Limits,
        proxy: httpx.Proxy | None = None,
    ) -> None:
        common: dict[str, Any] = {
            "ssl_context": ssl_context,
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "network_backend": backend,
        }
        self._pool: httpcore.ConnectionPool
        if proxy is None:
            self._pool = httpcore.ConnectionPool(**common)
        elif proxy.url.scheme in ("http", "https"):
            self._pool = httpcore.HTTPProxy(
                proxy_url=httpcore.URL(
                    scheme=proxy.url.raw_scheme,
                    host=proxy.url.raw_host,
                    port=proxy.url.port,
                    target=proxy.url.raw_path,
                ),
                proxy_auth=proxy.raw_auth,
                proxy_headers=proxy.headers.raw,
                proxy_ssl_context=proxy.ssl_context,
                **common,
            )
        else:
            raise ValueError(f"proxy scheme {proxy.url.scheme!r} is not http or https")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseBody(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _ResponseBody(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


# httpcore's exceptions and the httpx ones they become; the most specific match wins.
_ERRORS: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped: type[httpx.HTTPError] | None = None
        for core, ours in _ERRORS.items():
            if isinstance(exc, core) and (mapped is None or issubclass(ours, mapped)):
                mapped = ours
        if mapped is None:
            raise  # ours (Interrupted, BodyTooLarge) or a bug: as it is
        raise mapped(str(exc)) from exc


def ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """The TLS context of the API client: `ca_file`'s CAs, or httpx's defaults (certifi, or
    SSL_CERT_FILE / SSL_CERT_DIR from the environment); no verification with `verify` false."""
    if verify and ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return httpx.create_ssl_context(verify=verify)


def environment_proxy(url: httpx.URL) -> httpx.Proxy | None:
    """The proxy the environment names for `url`, as httpx and curl read it: HTTPS_PROXY or
    HTTP_PROXY by the URL's scheme, else ALL_PROXY (any case; a value without a scheme is
    http://), unless NO_PROXY lists the host (`*`, the host, or a domain it is under)."""
    proxies = urllib.request.getproxies()
    if _bypassed(url.host, proxies.get("no", "")):
        return None
    value = proxies.get(url.scheme) or proxies.get("all")
    if not value:
        return None
    proxy = httpx.Proxy(value if "://" in value else f"http://{value}")
    if proxy.url.scheme not in ("http", "https"):
        raise ConfigError(
            f"invalid setting proxy: the environment names a {proxy.url.scheme}:// proxy for "
            f"{url.scheme}:// requests; only http:// and https:// proxies are supported"
        )
    return proxy


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether NO_PROXY lists `host`: `*`; the host itself or a domain above it (a leading
    `.` or `*.` allowed, a port ignored); an IP address, or a network that holds it."""
    host = host.lower().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.lower().split(","):
        entry = entry.strip()
        if entry == "*":
            return True
        if "/" in entry and address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if entry.startswith("["):  # [v6]:port
            entry = entry[1:].partition("]")[0]
        elif entry.count(":") == 1:
            entry = entry.partition(":")[0]
        entry = entry.lstrip("*.")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def read_capped(response: httpx.Response, cap: int) -> bytes:
    """The decoded body, or `BodyTooLarge` as soon as it passes `cap` bytes. Gzip is inflated
    here with a limit on each step, so a gzip bomb costs at most `cap` of memory; another
    encoding is left to httpx, which inflates one network read (64 KiB) at a time."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    length = response.headers.get("content-length", "")
    if encoding == "identity" and length.isdigit() and int(length) > cap:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        if encoding in ("gzip", "x-gzip"):
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
            for raw in response.iter_raw():
                while raw and not inflater.eof:
                    chunk = inflater.decompress(raw, min(STEP, cap - size + 1))
                    size += len(chunk)
                    if size > cap:
                        raise BodyTooLarge
                    chunks.append(chunk)
                    raw = inflater.unconsumed_tail
            return b"".join(chunks)
        for chunk in response.iter_raw() if encoding == "identity" else response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise BodyTooLarge
            chunks.append(chunk)
    except (zlib.error, httpx.DecodingError):
        raise Malformed(f"a response whose {encoding} encoding is corrupt") from None
    return b"".join(chunks)


def parse_list_body(content: bytes) -> tuple[dict[str, Any], int]:
    """The list response in `content` and how many JSON documents it held. Several documents
    back to back (seen from the endpoint) become one: their `data` joined in order, the other
    fields (cursor, has_more) from the last."""
    try:
        body = _loads(content)
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        documents = _split_documents(content)
        if len(documents) < 2:
            raise Malformed("malformed JSON in a 200 response") from None
    else:
        if not isinstance(body, dict):
            raise Malformed("a 200 response that is not a JSON object")
        return check_list_page(body), 1
    if not all(isinstance(d, dict) and isinstance(d.get("data"), list) for d in documents):
        raise Malformed("a 200 response of several JSON documents that are not all lists")
    merged = dict(documents[-1])
    merged["data"] = [event for document in documents for event in document["data"]]
    return check_list_page(merged), len(documents)


def check_list_page(body: dict[str, Any]) -> dict[str, Any]:
    """`body` if it is a list page that says where the listing goes on: a `data` list, a
    boolean `has_more`, and with `has_more` a cursor. Else `Malformed`, retried like
    malformed JSON: a page without `has_more` ending the listing would move the watermark
    over every event not yet listed."""
    if not isinstance(body.get("data"), list):
        raise Malformed("a 200 response without a 'data' list")
    if not isinstance(body.get("has_more"), bool):
        raise Malformed("a 200 response without a boolean 'has_more'")
    if body["has_more"] and next_cursor(body) is None:
        raise Malformed("a 200 response with has_more but no cursor (no last_id, no event id)")
    return body


def next_cursor(body: dict[str, Any]) -> str | None:
    """The `after` cursor of the next page: `last_id`, or the last event's id without one."""
    last = body.get("last_id")
    if last is None and body["data"] and isinstance(body["data"][-1], dict):
        last = body["data"][-1].get("id")
    return last if isinstance(last, str) and last else None


def _loads(content: bytes) -> Any:
    """A response body; one nested deeper than orjson's 1024 levels (a hostile event) is
    parsed the slow way, so that the event is dead-lettered instead of stopping the stream."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        if "depth limit" not in str(exc):
            raise
    return loads_deep(content)


def _split_documents(content: bytes) -> list[Any]:
    """The JSON documents of `content` in order, whitespace between them allowed; [] when
    anything else is in the way."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return []
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    pos = 0
    end = len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos == end:
            return documents
        try:
            document, pos = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            return []
        documents.append(document)


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind an httpx connect error, if it is one."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
