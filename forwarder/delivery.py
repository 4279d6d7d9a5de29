"""Fan-out of one batch: map each event once per schema, hand the records to every sink, retry
a failing sink with backoff (sinks that already acknowledged are not sent the batch again),
and dead-letter what cannot be mapped or what a sink refuses for good."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from forwarder import metrics
from forwarder.deadletter import DeadLetter, DeadLetters
from forwarder.errors import DeliveryError, Stopped
from forwarder.intake import intake_problem
from forwarder.logs import get_logger, redact, verbose_logger
from forwarder.retry import retrying
from forwarder.sinks.base import Record, Sink, SinkError, sink_failure_is_passing
from forwarder.state import Commit, State
from mappings.registry import MapFunction, MappingError

__all__ = ["Delivery", "Stopped", "Tally", "close_sinks"]  # Stopped: for the CLI and service

BACKOFF_BASE = 0.5  # seconds before the first retry of a sink
# The document of a record that only NDJSON sinks read: `Record.line` holds it.
_SERIALIZED: dict[str, Any] = {}


@dataclass
class _Reason:
    count: int
    example: str  # the first letter's reason after its kind
    varied: bool = False  # the letters of this group gave other details too


@dataclass
class Tally:
    """What a stretch of work (one sweep, one backfill) delivered and dead-lettered: events
    committed that no sink refused and no schema failed to map, and the dead letters written
    (a letter already in the directory, an event met again in the overlap, is not counted
    twice), grouped by kind of reason (`invalid event`, `mapping ecs`, `rejected`) and sink."""

    delivered: int = 0
    dead_lettered: int = 0
    reasons: dict[tuple[str, str | None], _Reason] = field(default_factory=dict)

    def add_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.dead_lettered += len(letters)
        for letter in letters:
            kind, _, detail = redact(letter.reason).partition(": ")
            group = self.reasons.get((kind, letter.sink))
            if group is None:
                self.reasons[(kind, letter.sink)] = _Reason(1, detail)
            else:
                group.count += 1
                group.varied |= detail != group.example

    def reasons_text(self, limit: int = 5) -> str:
        """The groups, the largest first: `2x rejected by sink S, e.g.: …; 1x mapping ecs: …`."""
        groups = sorted(self.reasons.items(), key=lambda item: -item[1].count)
        parts = []
        for (kind, sink), group in groups[:limit]:
            where = f" by sink {sink}" if sink else ""
            example = ", e.g." if group.varied else ""
            parts.append(f"{group.count}x {kind}{where}{example}: {group.example}")
        if len(groups) > limit:
            parts.append(f"{len(groups) - limit} other kinds")
        return "; ".join(parts)


class Delivery:
    def __init__(
        self,
        sinks: Sequence[Sink],
        mappers: dict[str, MapFunction],
        dead_letters: DeadLetters,
        *,
        stream: str,
        retry_timeout: float = 300.0,
        stop: threading.Event | None = None,
        backoff_cap: float = 30.0,
    ) -> None:
        self.sinks = list(sinks)
        self.mappers = mappers
        self.dead_letters = dead_letters
        self.stream = stream
        self.retry_timeout = retry_timeout
        self.stop = stop or threading.Event()
        for sink in self.sinks:
            sink.bind_stop(self.stop)  # every wait of a sink wakes on it
        self.backoff_cap = backoff_cap
        self.log = get_logger()
        # Held by the caller around deliver() and its commit; shared by streams that share
        # sinks (see runtime.SinkPool), so each commit records positions of committed batches.
        self.batch_lock: threading.Lock = threading.Lock()
        # Told "sink NAME: reason" before each retry of a sink (the daemon's /healthz).
        self.on_retry: Callable[[str], None] | None = None
        # What was delivered and dead-lettered since the caller last set a new one (a sweep).
        self.tally = Tally()

    def open(self, committed: Callable[[str], str | None]) -> dict[str, str | None]:
        """Open every sink, hand it its committed position (read only once the sink is open, so
        that a file sink holds its lock first), and return the positions to commit now for
        sinks that had none (so that a crash before the first commit cuts nothing wrong)."""
        adopted: dict[str, str | None] = {}
        for sink in self.sinks:
            self._retry(sink, sink.open)
            position = committed(sink.name)
            # Retried: a file sink does not cut its tail while a rotation runs.
            self._retry(sink, lambda s=sink, p=position: s.restore(p))
            if position is None:
                adopted[sink.name] = sink.position()
        return adopted

    def flush(self) -> None:
        """After a sweep (its batches committed): sinks send what they hold and is due (the
        S3 Parquet spool); a failing sink is retried as a write is."""
        with self.batch_lock:
            for sink in self.sinks:
                self._retry(sink, sink.flush)

    def positions(self) -> dict[str, str | None]:
        return {sink.name: sink.position() for sink in self.sinks}

    def close(self) -> None:
        close_sinks(self.sinks)

    def take_new(self, page: list[Any], seen: set[str], into: list[dict[str, Any]]) -> None:
        """Append to `into` the events of `page` not seen before (remembering them in `seen`);
        an event without a usable id, type or time (or with a time out of range, or nested
        too deep) goes to dead letters."""
        now = time.time()
        for event in page:
            problem = intake_problem(event, now)
            if problem:
                # Written now, before the batch commits; when the batch fails and the event is
                # listed again, it is the same letter, neither written nor counted twice.
                reason = f"invalid event: {problem}"
                self._dead_letter([DeadLetter(now, self.stream, reason, event, kind="invalid")])
                continue
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            into.append(event)

    def deliver_and_commit(
        self, state: State, scope: str, batch: list[dict[str, Any]], **changes: Any
    ) -> int:
        """Deliver `batch` to every sink, then commit it with the sinks' positions and any
        other `changes` in one transaction. Returns the number of events committed."""
        with self.batch_lock:
            try:
                lettered = self.deliver(batch, moved=state.set_sink_positions)
                state.commit(
                    Commit(
                        scope=scope,
                        delivered=[(event["id"], event["effective_at"]) for event in batch],
                        sink_positions=self.positions(),
                        **changes,
                    )
                )
            except BaseException:
                self._roll_back(state)
                raise
            self.committed()
        metrics.EVENTS_COLLECTED.labels(self.stream).inc(len(batch))
        self.tally.delivered += len(batch) - lettered
        return len(batch)

    def committed(self) -> None:
        """The batch written last is committed: sinks release what they kept for it."""
        for sink in self.sinks:
            sink.committed()

    def _roll_back(self, state: State) -> None:
        """The batch was not committed (a sink down, the dead letters or the state not
        writable): sinks that can cut what they wrote since the last commit do so now. Sinks
        shared by streams stay open across a failed sweep, so waiting for the next start
        would write the batch twice."""
        for sink in self.sinks:
            try:
                sink.restore(state.sink_position(sink.name))
            except Exception as exc:  # the failure being reported matters more
                get_logger().warning(
                    "sink %s: cannot cut the uncommitted batch: %s", sink.name, exc
                )

    def deliver(
        self,
        events: list[dict[str, Any]],
        moved: Callable[[dict[str, str | None]], None] | None = None,
    ) -> int:
        """Return once every sink acknowledged `events`, with the number of them that were
        dead-lettered (a schema could not map them, or a sink refused them for good); raise
        `DeliveryError` when a sink stays down past the retry budget, `Stopped` when told to
        stop before that. `moved` commits the position of a sink whose destination moved (a
        file rotated) before the batch is written there."""
        if not events:
            return 0
        letters: list[DeadLetter] = []
        lines = {sink.schema for sink in self.sinks if sink.ndjson_lines}
        docs = {sink.schema for sink in self.sinks if not sink.ndjson_lines}
        rendered = {
            schema: self._render(schema, mapper, events, letters, schema in lines, schema in docs)
            for schema, mapper in self.mappers.items()
        }
        for sink in self.sinks:
            records = rendered[sink.mapping]
            if not records:
                continue
            started = time.monotonic()
            rejections = self._retry(sink, lambda s=sink, r=records: _write(s, r, moved))
            verbose_logger().info(
                "batch of %d written in %.0f ms, %d refused",
                len(records),
                (time.monotonic() - started) * 1000,
                len(rejections or ()),
                extra={"sink": sink.name},
            )
            metrics.EVENTS_DELIVERED.labels(self.stream, sink.name).inc(
                len(records) - len(rejections or ())
            )
            if rejections:
                by_id = {event["id"]: event for event in events}
            for rejection in rejections or ():
                letters.append(
                    DeadLetter(
                        time.time(),
                        self.stream,
                        f"rejected: {rejection.reason}",
                        by_id.get(rejection.record.id, rejection.record.id),
                        sink.schema,
                        sink.name,
                        "rejected",
                    )
                )
        # Dead letters are durable before the caller commits the checkpoint.
        self._dead_letter(letters)
        return len({_event_id(letter.event) for letter in letters})

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        """Hand `letters` to the dead letters; count those new to the directory (a repeat of a
        letter it holds is not a new dead letter), in the metric and this sweep's tally."""
        new = self.dead_letters.add_many(letters)
        for letter in new:
            metrics.EVENTS_DEAD_LETTERED.labels(self.stream, letter.kind or "other").inc()
        self.tally.add_letters(new)

    def _render(
        self,
        schema: str,
        mapper: MapFunction,
        events: list[dict[str, Any]],
        letters: list[DeadLetter],
        lines: bool,
        docs: bool,
    ) -> list[Record]:
        """The records of `events` in `schema`: with `lines`, each carries its NDJSON line;
        without `docs` (only NDJSON sinks), the document itself is dropped once serialized."""
        records: list[Record] = []
        append = records.append
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        for event in events:
            try:
                doc = mapper(event)
            except MappingError as exc:
                letters.append(
                    DeadLetter(
                        time.time(),
                        self.stream,
                        f"mapping {schema}: {exc.reason}",
                        event,
                        schema,
                        kind="mapping",
                    )
                )
                continue
            if lines:
                # Serialized now, and freed, while the document is in cache: for the whole batch
                # later, it costs half as much again. A document orjson refuses is left to the
                # sink.
                try:
                    line = dumps(doc, option=newline)
                except orjson.JSONEncodeError:
                    line = b""
                if line and not docs:
                    doc = _SERIALIZED
            else:
                line = b""
            append(Record(event["id"], event["type"], event["effective_at"], doc, line))
        return records

    def _retry(self, sink: Sink, action: Callable[[], Any]) -> Any:
        """`action()` on `sink`, retried by the policy (`forwarder.retry`) for up to
        `retry_timeout` seconds while the sink's failure may pass; `DeliveryError` then, or at
        once for a permanent one; `Stopped` when the stop signal comes first."""
        retrier = retrying(
            stop=self.stop,
            what=f"sink {sink.name}",
            passing=sink_failure_is_passing,
            base=BACKOFF_BASE,
            cap=self.backoff_cap,
            within=self.retry_timeout,
            describe=lambda exc: _about(sink, exc),
            counter=metrics.SINK_RETRIES.labels(self.stream, sink.name),
            give_up=lambda exc, attempts: DeliveryError(
                f"{_about(sink, exc)} (gave up after {attempts} attempts)"
            ),
            log_extra={"sink": sink.name, "stream": self.stream},
            on_retry=self.on_retry,
        )
        try:
            return retrier(action)
        except SinkError as exc:  # permanent: retrying cannot help
            raise DeliveryError(_about(sink, exc)) from None


def _about(sink: Sink, exc: BaseException) -> str:
    """`sink NAME: failure`, the name once (a sink's own message may start with it)."""
    text = str(exc)
    prefix = f"sink {sink.name}: "
    return text if text.startswith(prefix) else prefix + text


def _event_id(event: Any) -> Any:
    """The id of a dead letter's event (a rejected record's letter may carry only the id)."""
    return event.get("id") if isinstance(event, dict) else event


def _write(
    sink: Sink,
    records: list[Record],
    moved: Callable[[dict[str, str | None]], None] | None,
) -> Sequence[Any]:
    """One attempt at a sink: follow its destination (committing a move), then write."""
    if sink.follow() and moved is not None:
        moved({sink.name: sink.position()})
    return sink.write(records)


def close_sinks(sinks: Iterable[Sink]) -> None:
    for sink in sinks:
        try:
            sink.close()
        except Exception as exc:  # closing must not hide the real outcome
            get_logger().warning("closing sink %s: %s", sink.name, exc)
