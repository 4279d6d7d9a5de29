"""The OpenAI Admin API source: `GET /organization/audit_logs` with `after` cursor paging inside
a fixed window, filters, and retries by the policy of `forwarder.retry` within a bounded budget
(this module says which failures may pass, and reads the server's `retry-after` and
`x-ratelimit-reset-*` wait). Each request has a total deadline, a cap on its body and yields to
the stop signal (see `transport`). The key never appears in any message."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from forwarder import __version__, metrics
from forwarder.errors import AuthError, SourceError, Stopped, one_line
from forwarder.intake import minimal_problem
from forwarder.logs import get_logger, verbose_logger
from forwarder.retry import retrying
from forwarder.sources import Page, Source
from forwarder.sources.transport import (
    BodyTooLarge,
    GuardedBackend,
    GuardedTransport,
    Interrupted,
    Malformed,
    certificate_error,
    environment_proxy,
    next_cursor,
    parse_list_body,
    read_capped,
    ssl_context,
)
from forwarder.timeparse import format_when, out_of_range

RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}
# Listed by the API only with tenant_only=true (and then only they are).
TENANT_SCOPED_TYPES = {"role.bound_to_resource", "role.unbound_from_resource"}
# Pages in a row that bring no event new to the listing before paging is given up: a real
# listing never has one (each page is older than the last); a cycling server never stops.
MAX_IDLE_PAGES = 3
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_\-*.]{4,}")
AUDIT_LOG_SCOPE = "api.audit_logs.read"
_MISSING_SCOPES = re.compile(r"missing scopes?:\s*(.*)", re.IGNORECASE)
_SCOPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")
DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024
_RESET = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$"
)


class OpenAIAuditLogSource(Source):
    live = True

    def __init__(
        self,
        *,
        base_url: str,
        admin_key: str,
        filters: dict[str, Any] | None = None,
        page_size: int = 100,
        timeout: float = 30.0,
        retries: int = 8,
        verify_tls: bool = True,
        ca_file: Path | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        stop: threading.Event | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        stream: str = "default",
    ) -> None:
        self.stream = stream  # the label of this source's metrics
        self.base_url = base_url.rstrip("/")
        self._key = admin_key
        self.filters = filters or {}
        self.page_size = page_size
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stop = stop or threading.Event()
        self.timeout = timeout
        self.max_response_size = max_response_size
        self._told_concatenated = False
        self._backend = GuardedBackend(self.stop)
        self.client = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {admin_key}",
                "User-Agent": f"openai-audit-forwarder/{__version__}",
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout),
            transport=GuardedTransport(
                self._backend,
                ssl_context=ssl_context(verify_tls, str(ca_file) if ca_file else None),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                proxy=environment_proxy(httpx.URL(self.base_url)),
            ),
        )
        self.log = get_logger()
        self._retrying = retrying(
            stop=self.stop,
            what="the OpenAI API",
            passing=api_failure_is_passing,
            base=backoff_base,
            cap=backoff_cap,
            attempts=retries + 1,
            describe=lambda exc: f"OpenAI API: {self._problem(exc)}",
            counter=metrics.API_RETRIES.labels(stream),
            give_up=lambda exc, attempts: SourceError(
                f"OpenAI API: giving up after {attempts} attempts; last: {self._problem(exc)}"
            ),
            log_extra={"stream": stream},
        )

    def close(self) -> None:
        self.client.close()

    # Requests ----------------------------------------------------------------------------

    def _params(self, start: int | None, end: int | None, after: str | None, limit: int) -> list:
        params: list[tuple[str, Any]] = [("limit", limit)]
        if start is not None:
            params.append(("effective_at[gte]", start))
        if end is not None:
            params.append(("effective_at[lt]", end))
        for name in ("event_types", "project_ids", "actor_ids", "actor_emails", "resource_ids"):
            params.extend((f"{name}[]", value) for value in self.filters.get(name) or ())
        if self.filters.get("tenant_only"):
            params.append(("tenant_only", "true"))
        if after is not None:
            params.append(("after", after))
        return params

    def pages(self, start: int, end: int | None) -> Iterator[Page]:
        """Pages of [start, end), newest first. Events outside the window are dropped (they
        belong to another one); paging stops with an error when a cursor comes back or when
        `MAX_IDLE_PAGES` pages in a row bring no event new to this listing."""
        after: str | None = None
        cursors: set[str] = set()
        progress = _ListingProgress(start, end)
        idle = 0
        while True:
            body = self._list(self._params(start, end, after, self.page_size), first=after is None)
            kept = self._in_window(body["data"], start, end)
            window = _window_text(start, end)
            last = next_cursor(body) if body["has_more"] else None
            if last is not None and (last in cursors or last == after):
                raise SourceError(
                    f"OpenAI API: the page cursor {last!r} came back while listing {window}; "
                    "paging stopped, the watermark stays"
                )
            try:
                new = progress.advance(kept)
            except OutOfOrder as exc:
                raise SourceError(
                    f"OpenAI API: listed an event of {format_when(exc.newer)} after one of "
                    f"{format_when(exc.older)} in {window}, not newest first; paging stopped, "
                    "the watermark stays"
                ) from None
            if kept:
                yield kept
            if last is None:  # no more pages (check_list_page: has_more comes with a cursor)
                return
            cursors.add(last)
            idle = 0 if new else idle + 1
            if idle >= MAX_IDLE_PAGES:
                raise SourceError(
                    f"OpenAI API: {idle} pages in a row with has_more but no new event in "
                    f"{window}; paging stopped, the watermark stays"
                )
            after = last

    def _list(self, params: list, *, first: bool) -> dict[str, Any]:
        """One page; a refused first page of a tenant-scoped listing raises `TenantRefused`."""
        try:
            return self._get(params)
        except SourceError as exc:
            status = refusal_status(exc)
            if first and self.filters.get("tenant_only") and status is not None:
                raise TenantRefused(str(exc), status) from None
            raise

    def _in_window(self, data: list[Any], start: int, end: int | None) -> list[Any]:
        """The page without events whose time lies outside [start, end): another window lists
        them. Events without a usable time (none, or outside 2020 .. now + 1 day, which no
        window lists) stay, to be dead-lettered by the collector."""
        now = time.time()
        kept = [
            event
            for event in data
            if not (
                isinstance(event, dict)
                and type(event.get("effective_at")) is int
                and (
                    event["effective_at"] < start
                    or (end is not None and event["effective_at"] >= end)
                )
                and out_of_range(event["effective_at"], now) is None
            )
        ]
        if len(kept) < len(data):
            dropped = len(data) - len(kept)
            metrics.EVENTS_OUT_OF_WINDOW.labels(self.stream).inc(dropped)
            self.log.debug(
                "OpenAI API: dropped %d events outside the requested window %s",
                dropped,
                _window_text(start, end),
            )
        return kept

    def check(self) -> str:
        body = self._list(self._params(None, None, None, 1), first=True)
        data = body.get("data") or []
        newest = data[0].get("effective_at") if data and isinstance(data[0], dict) else None
        seen = f", newest event at {newest}" if newest is not None else ", no events yet"
        return f"OpenAI API {self.base_url}: admin key accepted{seen}"

    def _get(self, params: list) -> dict[str, Any]:
        """One page, retried by the policy (`forwarder.retry`) while the failure may pass."""
        return self._retrying(self._attempt, params)

    def _attempt(self, params: list) -> dict[str, Any]:
        """One request and its parsed body. A failure is raised as it happened (`Malformed`,
        `BodyTooLarge`, an httpx timeout or transport error, or a `SourceError` with the HTTP
        `status`) for `api_failure_is_passing` to judge; a rejected certificate becomes a
        final `SourceError` here, a stop `Stopped`."""
        if self.stop.is_set():
            raise Stopped("stopped before a request to the OpenAI API") from None
        started = time.monotonic()
        try:
            status, headers, content = self._exchange(params)
        except Interrupted:
            raise Stopped("stopped during a request to the OpenAI API") from None
        except Malformed:
            self._count_request(params, "malformed", started)
            raise
        except BodyTooLarge:
            self._count_request(params, "too_large", started)
            raise
        except httpx.TimeoutException:
            self._count_request(params, "timeout", started)
            raise
        except httpx.TransportError as exc:
            self._count_request(params, "error", started)
            if bad := certificate_error(exc):
                # Retrying cannot change a certificate, as for the sinks: final.
                raise SourceError(
                    f"OpenAI API {self.base_url}: TLS certificate rejected: "
                    f"{one_line(bad.verify_message or bad)}; set ca_file to the CA that "
                    "signed it"
                ) from None
            raise
        if status == 200:
            try:
                body, documents = parse_list_body(content)
            except Malformed:
                self._count_request(params, "200", started, "a malformed body")
                raise
            self._count_request(params, "200", started, f"{len(body['data'])} events")
            if documents > 1:
                self._tell_concatenated(documents)
            return body
        self._count_request(params, str(status), started)
        if status in (401, 403):
            raise AuthError(self._auth_message(status, content), status=status) from None
        if status in RETRY_STATUSES:
            if status == 429:
                metrics.API_RATE_LIMITED.labels(self.stream).inc()
            raise SourceError(
                f"HTTP {status} {self._error_text(content)}".rstrip(),
                status=status,
                retry_after=retry_delay_from_headers(headers),
            ) from None
        raise SourceError(
            f"OpenAI API refused the request: HTTP {status} {self._error_text(content)}",
            status=status,
        ) from None

    def _count_request(self, params: list, outcome: str, started: float, listed: str = "") -> None:
        """Count a request by its outcome, and (from -v on) log it: the path with its query
        (the key travels in a header, never there), the outcome, the time and what it listed."""
        metrics.API_REQUESTS.labels(self.stream, outcome).inc()
        query = "&".join(f"{name}={value}" for name, value in params)
        listed = f", {listed}" if listed else ""
        verbose_logger().info(
            "GET %s/organization/audit_logs?%s: %s in %.0f ms%s",
            httpx.URL(self.base_url).path.rstrip("/"),
            query,
            outcome,
            (time.monotonic() - started) * 1000,
            listed,
        )

    def _problem(self, exc: BaseException) -> str:
        """A passing failure in one line, for the retry warning and the final error."""
        if isinstance(exc, BodyTooLarge):
            return (
                f"response body larger than max_response_size ({self.max_response_size} "
                "bytes decoded)"
            )
        if isinstance(exc, httpx.TimeoutException):
            return f"request took longer than request_timeout ({self.timeout:g}s)"
        if isinstance(exc, httpx.TransportError):
            return f"cannot reach {self.base_url} ({one_line(exc) or type(exc).__name__})"
        return str(exc)

    def _exchange(self, params: list) -> tuple[int, httpx.Headers, bytes]:
        """One request within its deadline: status, headers and the (capped) decoded body."""
        with (
            self._backend.deadline(self.timeout),
            self.client.stream("GET", "/organization/audit_logs", params=params) as response,
        ):
            return (
                response.status_code,
                response.headers,
                read_capped(response, self.max_response_size),
            )

    def _tell_concatenated(self, documents: int) -> None:
        if not self._told_concatenated:
            self._told_concatenated = True
            self.log.info(
                "OpenAI API answered with %d JSON documents back to back; read as one page "
                "(their data joined, the last one's cursor); not logged again",
                documents,
            )

    def _error_text(self, content: bytes) -> str:
        try:
            error = orjson.loads(content).get("error") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return ""
        if not isinstance(error, dict):
            return ""
        code = error.get("code") or error.get("type") or ""
        message = self._scrub(str(error.get("message") or ""))
        return f"{code}: {message}".strip(": ")[:300]

    def _auth_message(self, status: int, content: bytes) -> str:
        detail = self._error_text(content)
        if status == 401:
            return (
                "OpenAI API rejected the key (HTTP 401"
                + (f" {detail}" if detail else "")
                + "): /organization/audit_logs needs an Admin API key (sk-admin-...), "
                "set OPENAI_ADMIN_KEY or --admin-key-file"
            )
        scopes = missing_scopes(detail)
        if scopes:
            need = f"the key lacks the scope {', '.join(scopes)}"
        else:
            need = f"the key lacks audit-log access, likely the scope {AUDIT_LOG_SCOPE}"
        return (
            "OpenAI API refused access (HTTP 403"
            + (f" {detail}" if detail else "")
            + f"): {need}; use an Admin API key (sk-admin-...) of an organization owner with "
            f"the {AUDIT_LOG_SCOPE} scope, not a project key"
        )

    def _scrub(self, text: str) -> str:
        text = text.replace(self._key, "[REDACTED]") if self._key else text
        return one_line(_KEY_LIKE.sub("sk-[REDACTED]", text))


class TenantRefused(SourceError):
    """The API refused `tenant_only=true` (400, 403 or 404): the organization has no tenant
    listing, or the key may not read it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, status=status)


def refusal_status(exc: SourceError) -> int | None:
    """400, 403 or 404 when `exc` is the API refusing the request for good, else None."""
    return exc.status if exc.status in (400, 403, 404) else None


def api_failure_is_passing(exc: BaseException) -> bool:
    """The source's classifier: what another attempt may cure. An answer with a status in
    `RETRY_STATUSES`, a timeout, a transport error (a rejected certificate arrives here as a
    final `SourceError`), a malformed or oversized body. 401/403 and other statuses are final."""
    if isinstance(exc, SourceError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, Malformed | BodyTooLarge | httpx.TransportError)


class OutOfOrder(Exception):
    """A listing returned an event newer than one it listed before: not newest first."""

    def __init__(self, newer: int, older: int) -> None:
        super().__init__(f"{newer} after {older}")
        self.newer = newer
        self.older = older


class _ListingProgress:
    """Tells whether a page brings an event new to this listing, and that the listing keeps
    to newest first. A new event is older than every event before it, or in the oldest second
    so far with an id not yet seen there; only that second's ids are kept, so memory stays
    small. An event newer than the oldest so far breaks the order (`OutOfOrder`): the
    collector's progress marker assumes it, so such a listing must not be trusted at all;
    unless the last page or this one listed it already (a page repeated is no news, and a
    server that repeats pages is stopped by the idle count instead).

    Only events the collector can accept count (an id, a type and a time inside the window):
    one with an absurd time (`effective_at: 1000`) would otherwise be "the oldest so far",
    and every real event after it would look old, stopping the stream for one bad event."""

    def __init__(self, start: int, end: int | None) -> None:
        self.start = start
        self.end = end
        self.oldest: int | None = None
        self.ids_at_oldest: set[str] = set()
        self.last_page: set[str] = set()

    def advance(self, page: list[Any]) -> bool:
        new = False
        start, end = self.start, self.end
        listed: set[str] = set()
        for event in page:
            if minimal_problem(event) is not None:
                continue
            at, event_id = event["effective_at"], event["id"]
            if at < start or (end is not None and at >= end):
                continue
            if self.oldest is None or at < self.oldest:
                self.oldest, self.ids_at_oldest = at, {event_id}
                new = True
            elif at > self.oldest:
                if event_id not in self.last_page and event_id not in listed:
                    raise OutOfOrder(at, self.oldest)
            elif event_id not in self.ids_at_oldest:
                self.ids_at_oldest.add(event_id)
                new = True
            listed.add(event_id)
        self.last_page = listed
        return new


def _window_text(start: int | None, end: int | None) -> str:
    return f"[{start}, {end if end is not None else 'now'})"


def missing_scopes(message: str) -> list[str]:
    """The scopes an API error message names after "Missing scopes:", in order."""
    found = _MISSING_SCOPES.search(message)
    scopes: list[str] = []
    for token in re.split(r"[\s,]+", found.group(1)) if found else ():
        token = token.rstrip(".;")
        if not _SCOPE.fullmatch(token):
            break
        scopes.append(token)
    return scopes


def is_tenant_scoped(event_type: str) -> bool:
    return event_type.startswith("tenant.") or event_type in TENANT_SCOPED_TYPES


def retry_delay_from_headers(headers: httpx.Headers) -> float | None:
    """Seconds to wait as the server asks: `retry-after` (seconds or HTTP date),
    `retry-after-ms`, or the `x-ratelimit-reset-requests|tokens` durations ("1s", "6m0s")."""
    if value := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    if value := headers.get("retry-after"):
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    resets = [
        parse_reset(headers[name])
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if name in headers
    ]
    resets = [r for r in resets if r is not None]
    return max(resets) if resets else None


def parse_reset(text: str) -> float | None:
    match = _RESET.match(text.strip())
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000
