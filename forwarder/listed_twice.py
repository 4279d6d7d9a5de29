"""Events that both listings of an organization return: a stream's and its tenant companion's
(a server that ignores `tenant_only` lists every event in both). Each is delivered once: the
second listing skips the ids the first one delivered. Which types are tenant-scoped is partly
our inference, so no event is ever dropped for its type: an id check costs a lookup, a wrong
guess about a type would cost the event. What was listed twice is counted in
`oaf_events_listed_twice_total{stream}`, with one warning per stream and process.

`LiveListing` does the bookkeeping for one listing of the live collector, `JobPartner` for a
companion's backfill job, window by window."""

from __future__ import annotations

import logging
from typing import Any

from forwarder import metrics
from forwarder.logs import get_logger
from forwarder.state import State, Window, backfill_scope, live_scope

_WARNED: set[str] = set()  # streams warned about, in this process


def report(stream: str, partner: str, found: int, log: logging.Logger | None = None) -> None:
    """Say that `found` events listed by `stream` were delivered by `partner` already: a
    warning the first time in this process, then an info line."""
    if not found:
        return
    log = log or get_logger()
    message = (
        "%d events listed here were delivered by stream %s already (the API listed them "
        "with and without tenant_only); each is delivered once"
    )
    if stream in _WARNED:
        log.info(message, found, partner, extra={"stream": stream})
        return
    _WARNED.add(stream)
    log.warning(
        message + "; counted in oaf_events_listed_twice_total, not warned again",
        found,
        partner,
        extra={"stream": stream},
    )


class LiveListing:
    """The events of one live listing that the partner stream delivered already (its ids of
    [read_from, end)), counted in the span's new part [start, end) only: the re-read overlap
    before it was counted by the sweep that first listed it."""

    def __init__(
        self,
        state: State,
        stream: str,
        partner: str | None,
        read_from: int,
        start: int,
        end: int,
        counted: set[str] | None = None,
    ) -> None:
        self.stream = stream
        self.partner = partner
        self.ids = state.delivered_ids(live_scope(partner), read_from, end) if partner else set()
        self.start = start
        self.counted: set[str] = set() if counted is None else counted

    def count(self, page: list[Any]) -> None:
        if not self.ids:
            return
        ids, start, counted = self.ids, self.start, self.counted
        for event in page:
            event_id = event.get("id") if isinstance(event, dict) else None
            if not isinstance(event_id, str) or event_id not in ids:
                continue
            at = event.get("effective_at")
            if type(at) is int and at >= start:
                counted.add(event_id)

    def report(self, log: logging.Logger) -> None:
        if self.counted and self.partner:
            metrics.EVENTS_LISTED_TWICE.labels(self.stream).inc(len(self.counted))
            report(self.stream, self.partner, len(self.counted), log)


class JobPartner:
    """For a tenant companion's backfill job: the ids its stream's job delivered, kept for it
    (by time) until this job has covered their window. Loaded one window at a time, so memory
    follows a window, not the backfill; each event listed again is counted once."""

    def __init__(self, state: State, stream: str, partner_stream: str, partner_job: str) -> None:
        self.state = state
        self.stream = stream
        self.partner = partner_stream
        self.job = partner_job
        self.scope = backfill_scope(partner_job)
        self.found = 0
        self._pending: dict[Window, set[str]] = {}  # ids of the window not yet listed here
        self._counted: dict[Window, dict[str, int]] = {}  # listed here: id -> effective_at
        self._carried: dict[Window, set[str]] = {}  # counted in the window a split came from

    def ids(self, window: Window) -> set[str]:
        """The partner's ids in `window` (to skip), from now on counted when listed here."""
        ids = self.state.delivered_ids(self.scope, window.start, window.end)
        self._pending[window] = ids - self._carried.pop(window, set())
        self._counted[window] = {}
        return ids

    def count(self, window: Window, page: list[Any]) -> None:
        pending = self._pending.get(window)
        if not pending:
            return
        counted = self._counted[window]
        found = 0
        for event in page:
            event_id = event.get("id") if isinstance(event, dict) else None
            if isinstance(event_id, str) and event_id in pending:
                pending.discard(event_id)
                at = event.get("effective_at")
                counted[event_id] = at if type(at) is int else window.start
                found += 1
        if found:
            self.found += found
            metrics.EVENTS_LISTED_TWICE.labels(self.stream).inc(found)

    def split(self, window: Window, oldest: int, rest: list[Window]) -> None:
        """`window` was split at its second `oldest`: what was counted in the remainder
        (that second, listed in part) is not counted again when the remainder is listed."""
        counted = self._counted.pop(window, {})
        self._pending.pop(window, None)
        carried = {event_id for event_id, at in counted.items() if at <= oldest}
        for part in rest:
            self._carried[part] = carried

    def done(self, window: Window) -> None:
        self._pending.pop(window, None)
        self._counted.pop(window, None)

    def report(self, log: logging.Logger) -> None:
        report(self.stream, self.partner, self.found, log)
