"""The live collector: each sweep lists the whole span `[watermark, now - lag)` (after the
overlap before it) in one newest-first listing, so requests follow the events, not the clock.
Batches are delivered and their ids committed as they fill; the part of the span already
delivered is committed too (`LiveSpan`), and the watermark moves to the span's end once the
listing is complete. A tenant stream whose listing the API refuses is retried at most hourly."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forwarder import PROG, metrics
from forwarder.delivery import Delivery, Tally
from forwarder.errors import ForwarderError
from forwarder.listed_twice import LiveListing
from forwarder.logs import get_logger
from forwarder.sources import Source
from forwarder.sources.openai_api import TenantRefused
from forwarder.state import LiveSpan, State, live_scope
from forwarder.timeparse import format_when

# A refused tenant listing is asked again after this long (persisted: holds across cron runs).
TENANT_RETRY_SECONDS = 3600.0
# Ids remembered in memory during one listing before they are reloaded from the state, limited
# to the part of the span not yet complete: memory follows a batch, not the span.
SEEN_LIMIT = 20_000
# How far back a stream keeps its delivered ids for its partner (`forwarder.listed_twice`)
# beyond its own overlap, while the partner has not listed that part yet: a partner further behind
# (a tenant listing refused for days) may see events of a server that ignores tenant_only twice.
PARTNER_KEEP = 86_400
# A stream that starts this much later than now - lag is told that it waits (a --lag of years).
LAG_WARNING = 3600
# Streams warned in this process that a wider --overlap repeats events.
_WARNED_OVERLAP: set[str] = set()


@dataclass
class SweepResult:
    events: int = 0  # committed, dead-lettered ones included
    windows: int = 0
    watermark: int | None = None
    # This sweep's delivered events and dead letters (the summary line and its warning).
    tally: Tally = field(default_factory=Tally)


class Collector:
    def __init__(
        self,
        *,
        stream: str,
        source: Source,
        delivery: Delivery,
        state: State,
        lag: float,
        overlap: float,
        batch_size: int,
        start_at: Callable[[], int],
        stop: threading.Event | None = None,
        tenant_companion: bool = False,
        partner: str | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.scope = live_scope(stream)
        self.source = source
        self.delivery = delivery
        self.state = state
        self.lag = int(lag)
        self.overlap = int(overlap)
        self.batch_size = batch_size
        self.start_at = start_at
        self.stop = stop or threading.Event()
        self.tenant_companion = tenant_companion
        # The stream that lists the other half of this organization's events (a stream and
        # its tenant companion): an event both listings return is delivered once.
        self.partner = partner
        # Called for every page: tells the daemon's /livez that a long sweep still moves.
        self.heartbeat = heartbeat or (lambda: None)
        self.log = get_logger()

    def sweep(self, now: float | None = None) -> SweepResult:
        started = time.monotonic()
        now = time.time() if now is None else now
        result = SweepResult()
        self.delivery.tally = result.tally
        # A refused tenant listing not yet due again is a successful sweep with nothing to do.
        if not self.tenant_companion or self._tenant_listing_due():
            self._sweep(now, result)
        result.watermark = self.state.watermark(self.stream)
        metrics.SWEEP_DURATION.labels(self.stream).observe(time.monotonic() - started)
        metrics.LAST_SUCCESS.labels(self.stream).set(time.time())
        if result.watermark is not None:
            metrics.CHECKPOINT_LAG.labels(self.stream).set(max(0.0, now - result.watermark))
        return result

    def _sweep(self, now: float, result: SweepResult) -> None:
        try:
            if self.source.live:
                self._sweep_live(int(now) - self.lag, result)
            else:
                self._sweep_file(result)
        except TenantRefused as exc:
            if not self.tenant_companion:
                raise
            self._tenant_refused(exc)
        else:
            if self.tenant_companion:
                self._tenant_accepted()
        self.delivery.flush()

    def _sweep_live(self, until: int, result: SweepResult) -> None:
        committed = self.state.watermark(self.stream)
        span = self.state.live_span(self.stream)
        if span is not None and committed in (None, span.start) and span.end > span.start:
            # A sweep stopped part way: its newer part is delivered, list only the rest.
            read_from = span.start - self.overlap if committed is not None else span.start
            result.events += self._walk(read_from, span.start, span.done_from, span.end)
            result.windows += 1
            if self.stop.is_set():
                return
            committed = span.end
        elif span is not None:
            self.state.set_live_span(self.stream, None)  # the watermark was moved by hand
        # A fresh stream starts exactly at start_at; afterwards the overlap is re-read.
        watermark = self.start_at() if committed is None else committed
        read_from = watermark - self.overlap if committed is not None else watermark
        self._warn_of_repeats(read_from if committed is not None else None)
        if watermark > until + LAG_WARNING:
            self.log.warning(
                "nothing to collect before %s: the stream starts at %s, later than now minus "
                "--lag (%s)",
                format_when(watermark + self.lag),
                format_when(watermark),
                format_when(until),
                extra={"stream": self.stream},
            )
        if watermark < until:
            result.events += self._walk(read_from, watermark, until, until)
            result.windows += 1
        elif committed is not None and not self.stop.is_set():
            # Nothing new to sweep (a run in the same second as the last commit, or a
            # longer --lag): the overlap is still re-read for late events.
            result.events += self._walk(read_from, watermark, watermark, None)
            result.windows += 1

    def _walk(self, read_from: int, start: int, end: int, span_end: int | None) -> int:
        """Deliver every new event of [read_from, end) from one newest-first listing; then
        move the watermark to `span_end` (None: leave it). While the listing runs, the part
        [done_from, span_end) known to be complete is committed after each batch."""
        seen = self.state.delivered_ids(self.scope, read_from, end)
        twice = self._listed_twice(read_from, start, end)
        seen |= twice.ids
        batch: list[dict[str, Any]] = []
        oldest: int | None = None  # the oldest time listed so far
        # The oldest time of the pages before the last one: the progress marker trusts a page
        # only once the next one came in newest-first order after it (the source checks it),
        # so a server that lists oldest first never gets its first page taken as progress.
        confirmed: int | None = None
        done_from = end
        total = 0
        log_extra = {
            "stream": self.stream,
            "window": f"{format_when(read_from)}/{format_when(end)}",
        }
        for page in self.source.pages(read_from, end) if read_from < end else ():
            self.heartbeat()
            fresh = [e for e in page if not self._repeat(e, done_from, end)]
            twice.count(fresh)
            self.delivery.take_new(fresh, seen, batch)
            # Only in-window times count: the source passes absurd ones on, for dead letters.
            times = [
                at
                for e in fresh
                if type(at := e.get("effective_at")) is int and read_from <= at < end
            ]
            confirmed = oldest
            if times:
                oldest = min(times) if oldest is None else min(oldest, *times)
            if len(batch) >= self.batch_size or self.stop.is_set():
                total += self._deliver(batch)
                batch = []
                if confirmed is not None and span_end is not None and confirmed + 1 < done_from:
                    # Everything listed is delivered: only the oldest second may go on.
                    done_from = confirmed + 1
                    self.state.set_live_span(self.stream, LiveSpan(start, span_end, done_from))
                if len(seen) > SEEN_LIMIT:
                    seen = self.state.delivered_ids(self.scope, read_from, done_from)
                    twice = self._listed_twice(read_from, start, done_from, twice.counted)
                    seen |= twice.ids
            if self.stop.is_set():
                self.log.info("stop requested: window left open", extra=log_extra)
                return total
        total += self._deliver(batch, span_end)
        twice.report(self.log)
        if span_end is not None and self.state.live_span(self.stream) is not None:
            self.state.set_live_span(self.stream, None)
        if total:
            self.log.debug("committed %d events", total, extra=log_extra)
        return total

    def _listed_twice(
        self, read_from: int, start: int, end: int, counted: set[str] | None = None
    ) -> LiveListing:
        return LiveListing(self.state, self.stream, self.partner, read_from, start, end, counted)

    def _warn_of_repeats(self, read_from: int | None) -> None:
        """A re-read reaching further back than the ids kept (--overlap widened since the
        last run) delivers the events in between again: say so, once per process."""
        kept_from = self.state.ids_kept_from(self.stream)
        if read_from is None or kept_from is None or read_from >= kept_from:
            return
        if self.stream in _WARNED_OVERLAP:
            return
        _WARNED_OVERLAP.add(self.stream)
        self.log.warning(
            "--overlap %s re-reads from %s, but delivered ids are kept only from %s (the "
            "overlap of an earlier run): events between are delivered again, once; from now "
            "on their ids are kept for the wider overlap",
            _duration_text(self.overlap),
            format_when(read_from),
            format_when(kept_from),
            extra={"stream": self.stream},
        )

    def _repeat(self, event: Any, done_from: int, end: int) -> bool:
        """An event listed again in the part already complete (a server that pages badly):
        delivered before, unless the state has never seen it."""
        at = event.get("effective_at") if isinstance(event, dict) else None
        if type(at) is not int or at < done_from or at >= end:
            return False
        return event.get("id") in self.state.delivered_ids(self.scope, at, at + 1)

    def _sweep_file(self, result: SweepResult) -> None:
        committed = self.state.watermark(self.stream)
        watermark = self.start_at() if committed is None else committed
        read_from = watermark - self.overlap if committed is not None else watermark
        self._warn_of_repeats(read_from if committed is not None else None)
        seen = self.state.delivered_ids(self.scope, read_from)
        batch: list[dict[str, Any]] = []
        newest = None
        for page in self.source.pages(read_from, None):
            self.heartbeat()
            taken = len(batch)
            self.delivery.take_new(page, seen, batch)
            if len(batch) > taken:  # a file: the watermark follows its newest event
                page_newest = max(event["effective_at"] for event in batch[taken:])
                newest = page_newest if newest is None else max(newest, page_newest)
            if len(batch) >= self.batch_size or self.stop.is_set():
                result.events += self._deliver(batch)
                batch = []
            if self.stop.is_set():
                self.log.info("stop requested: file left open", extra={"stream": self.stream})
                return
        candidates = [
            w for w in (committed, newest + 1 if newest is not None else None) if w is not None
        ]
        new_watermark = max(candidates) if candidates else None
        result.events += self._deliver(batch, new_watermark)
        result.windows += 1
        if committed is not None and result.events == 0 and not result.tally.dead_lettered:
            self._tell_nothing_new(committed)

    def _tell_nothing_new(self, watermark: int) -> None:
        """A rerun on the same input (after `rm -rf out`, say) delivers nothing: say why, and
        how to deliver it again."""
        state = str(self.state.path.resolve())
        reset = [PROG, "checkpoint", "reset", "--stream", self.stream, "--state", state]
        self.log.info(
            "nothing new in %s: its events up to %s were delivered before (the checkpoint in "
            "%s); to deliver them again: %s",
            getattr(self.source, "label", "the input"),
            format_when(watermark - 1),
            state,
            shlex.join(reset),
            extra={"stream": self.stream},
        )

    def _deliver(self, batch: list[dict[str, Any]], watermark: int | None = None) -> int:
        """Deliver and commit `batch` in slices of at most `batch_size` (a page may hold more:
        a file's pages are 500 events), the watermark with the last slice."""
        total = 0
        while len(batch) > self.batch_size:
            total += self._commit(batch[: self.batch_size])
            batch = batch[self.batch_size :]
        return total + self._commit(batch, watermark)

    def _commit(self, batch: list[dict[str, Any]], watermark: int | None = None) -> int:
        if not batch and watermark is None:
            return 0
        return self.delivery.deliver_and_commit(
            self.state,
            self.scope,
            batch,
            watermark=(self.stream, watermark) if watermark is not None else None,
            prune_before=self._prune_point(watermark) if watermark is not None else None,
        )

    def _prune_point(self, watermark: int) -> int:
        """Delivered ids older than this are forgotten: those before the overlap, unless the
        partner stream has still to list them (up to `PARTNER_KEEP` more)."""
        keep_from = watermark - self.overlap
        if self.partner is None:
            return keep_from
        try:
            partner_watermark = self.state.watermark(self.partner)
        except ForwarderError:  # the partner's own sweep reports its broken watermark
            return keep_from
        if partner_watermark is None:
            return keep_from - PARTNER_KEEP
        return max(keep_from - PARTNER_KEEP, min(keep_from, partner_watermark - self.overlap))

    # Tenant listing refused ------------------------------------------------------------

    def _tenant_listing_due(self) -> bool:
        refusal = self.state.tenant_refusal(self.stream)
        if refusal is None:
            return True
        metrics.TENANT_LISTING_REFUSED.labels(self.stream).set(1)
        if time.time() - refusal[0] >= TENANT_RETRY_SECONDS:
            return True
        self.log.debug(
            "tenant listing refused %s; asked again after an hour",
            format_when(int(refusal[0])),
            extra={"stream": self.stream},
        )
        return False

    def _tenant_refused(self, exc: TenantRefused) -> None:
        known = self.state.tenant_refusal(self.stream) is not None
        self.state.set_tenant_refusal(self.stream, str(exc))
        metrics.TENANT_LISTING_REFUSED.labels(self.stream).set(1)
        if known:
            self.log.info("tenant listing still refused: %s", exc, extra={"stream": self.stream})
            return
        self.log.warning(
            "tenant-scoped events are not collected: %s; the other events are, this listing "
            "is asked again at most hourly (--without-tenant stops asking)",
            exc,
            extra={"stream": self.stream},
        )

    def _tenant_accepted(self) -> None:
        metrics.TENANT_LISTING_REFUSED.labels(self.stream).set(0)
        if self.state.tenant_refusal(self.stream) is not None:
            self.state.set_tenant_refusal(self.stream, None)
            self.log.info("tenant listing accepted again", extra={"stream": self.stream})


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
