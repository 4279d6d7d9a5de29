"""Prometheus metrics of the forwarder, in a registry of its own (served by --metrics-addr).
Every metric about a stream carries the label `stream` (PROCESS_WIDE in
tests/test_metrics_and_health.py holds the few that do not, with the reason); the S3 sink's
spool metrics are per sink instead (see below)."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_COLLECTED = Counter(
    "oaf_events_collected",
    "Events read from the source (new, not yet seen)",
    ["stream"],
    registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    "oaf_events_delivered", "Events acknowledged by a sink", ["stream", "sink"], registry=REGISTRY
)
EVENTS_DEAD_LETTERED = Counter(
    "oaf_events_dead_lettered",
    "Events written to the dead-letter directory",
    ["stream", "kind"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "oaf_api_requests",
    "Audit-log API requests by HTTP status (or error, timeout, malformed, too_large)",
    ["stream", "status"],
    registry=REGISTRY,
)
API_RETRIES = Counter(
    "oaf_api_retries", "Audit-log API requests retried", ["stream"], registry=REGISTRY
)
API_RATE_LIMITED = Counter(
    "oaf_api_rate_limited",
    "Audit-log API responses with status 429",
    ["stream"],
    registry=REGISTRY,
)
SINK_RETRIES = Counter(
    "oaf_sink_retries", "Batches retried per sink", ["stream", "sink"], registry=REGISTRY
)
SWEEPS = Counter(
    "oaf_sweeps",
    "Sweeps by outcome: success, failure, stopped (by the stop signal), not_run (the stream "
    "swept before it in the same loop failed)",
    ["stream", "outcome"],
    registry=REGISTRY,
)
SWEEP_OUTCOMES = ("success", "failure", "stopped", "not_run")
SWEEP_INTERVAL = Gauge(
    "oaf_sweep_interval_seconds",
    "Time between sweeps (--interval), for alerts that count missed sweeps",
    ["stream"],
    registry=REGISTRY,
)
SWEEP_DURATION = Histogram(
    "oaf_sweep_duration_seconds", "Duration of one sweep", ["stream"], registry=REGISTRY
)
LAST_SUCCESS = Gauge(
    "oaf_last_success_timestamp_seconds",
    "Unix time of the last successful sweep; 0 until the first one",
    ["stream"],
    registry=REGISTRY,
)
CHECKPOINT_LAG = Gauge(
    "oaf_checkpoint_lag_seconds",
    "Now minus the committed watermark",
    ["stream"],
    registry=REGISTRY,
)
EVENTS_OUT_OF_WINDOW = Counter(
    "oaf_events_out_of_window",
    "Events the API listed outside the requested window, dropped (another window has them)",
    ["stream"],
    registry=REGISTRY,
)
TENANT_LISTING_REFUSED = Gauge(
    "oaf_tenant_listing_refused",
    "1 while the API refuses tenant_only=true for this tenant stream (retried at most hourly)",
    ["stream"],
    registry=REGISTRY,
)
EVENTS_LISTED_TWICE = Counter(
    "oaf_events_listed_twice",
    "Events a stream's listing returned that its tenant companion (or the stream of a tenant "
    "companion) delivered already: the API ignored tenant_only; each is delivered once",
    ["stream"],
    registry=REGISTRY,
)

BACKFILL_WINDOWS = Gauge(
    "oaf_backfill_windows",
    "Windows of the running backfill by state: done, pending (0 in a process that runs none)",
    ["stream", "state"],
    registry=REGISTRY,
)
BACKFILL_WINDOW_STATES = ("done", "pending")
BACKFILL_EVENTS = Counter(
    "oaf_backfill_events",
    "Events a backfill delivered (dead letters not counted)",
    ["stream"],
    registry=REGISTRY,
)

# The S3 sink's Security Lake spool (format=parquet). Labelled by sink, not by stream: streams
# whose sink URLs are the same share one sink, and with it one spool (runtime.SinkPool).
_SHARED = "; per sink: streams that name the same sink URL share its spool"
SPOOL_BYTES = Gauge(
    "oaf_spool_bytes",
    "Bytes in the local spool of an S3 Parquet sink, by segment state: open (being filled) or "
    "sealed (due, waiting for upload)" + _SHARED,
    ["sink", "state"],
    registry=REGISTRY,
)
SPOOL_SEGMENTS = Gauge(
    "oaf_spool_segments",
    "Segments in the local spool of an S3 Parquet sink, by state: open or sealed" + _SHARED,
    ["sink", "state"],
    registry=REGISTRY,
)
SPOOL_STATES = ("open", "sealed")
SPOOL_OLDEST_AGE = Gauge(
    "oaf_spool_oldest_segment_age_seconds",
    "Age of the oldest segment in the spool (0 when empty); uploaded once flush_interval old, "
    "so a value far above oaf_spool_flush_interval_seconds means uploads are stuck" + _SHARED,
    ["sink"],
    registry=REGISTRY,
)
SPOOL_FLUSH_INTERVAL = Gauge(
    "oaf_spool_flush_interval_seconds",
    "The sink's flush_interval: a segment this old is sealed and uploaded" + _SHARED,
    ["sink"],
    registry=REGISTRY,
)
SPOOL_UPLOADED_OBJECTS = Counter(
    "oaf_spool_uploaded_objects",
    "Parquet objects stored from the spool (a segment whose upload failed stores its objects "
    "again when retried)" + _SHARED,
    ["sink"],
    registry=REGISTRY,
)
SPOOL_UPLOADED_BYTES = Counter(
    "oaf_spool_uploaded_bytes",
    "Bytes of the Parquet objects stored from the spool" + _SHARED,
    ["sink"],
    registry=REGISTRY,
)
SPOOL_UPLOAD_FAILURES = Counter(
    "oaf_spool_upload_failures",
    "Uploads from the spool that failed (each fails its write or flush: the segment stays, and "
    "the delivery retries it unless the failure is permanent, such as a wrong secret)" + _SHARED,
    ["sink"],
    registry=REGISTRY,
)


class SpoolMetrics:
    """The spool metrics of one sink (one per sink name: see `spool_metrics`): its children
    looked up once, so that exporting the spool's state after a write or a flush costs a few
    assignments. The oldest segment's age is computed at each scrape from its creation time,
    so it grows between sweeps."""

    def __init__(self, sink: str, flush_interval: float) -> None:
        SPOOL_FLUSH_INTERVAL.labels(sink).set(flush_interval)
        self.bytes = {state: SPOOL_BYTES.labels(sink, state) for state in SPOOL_STATES}
        self.segments = {state: SPOOL_SEGMENTS.labels(sink, state) for state in SPOOL_STATES}
        self.objects = SPOOL_UPLOADED_OBJECTS.labels(sink)
        self.uploaded_bytes = SPOOL_UPLOADED_BYTES.labels(sink)
        self.failures = SPOOL_UPLOAD_FAILURES.labels(sink)
        self.oldest_created: float | None = None
        SPOOL_OLDEST_AGE.labels(sink).set_function(self._oldest_age)

    def _oldest_age(self) -> float:
        oldest = self.oldest_created
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def export(
        self,
        open_segments: int,
        open_bytes: int,
        sealed_segments: int,
        sealed_bytes: int,
        oldest_created: float | None,
    ) -> None:
        """The spool as it is now (spool.Tally's fields)."""
        self.segments["open"].set(open_segments)
        self.bytes["open"].set(open_bytes)
        self.segments["sealed"].set(sealed_segments)
        self.bytes["sealed"].set(sealed_bytes)
        self.oldest_created = oldest_created


_SPOOLS: dict[str, SpoolMetrics] = {}
_SPOOLS_LOCK = threading.Lock()


def spool_metrics(sink: str, flush_interval: float) -> SpoolMetrics:
    """The spool metrics of the sink named `sink`, shared by every instance of it: each stream
    that names a sink builds one and the process uses the first (runtime.SinkPool), so the
    series, and the age they report, must not belong to one instance."""
    with _SPOOLS_LOCK:
        if sink not in _SPOOLS:
            _SPOOLS[sink] = SpoolMetrics(sink, flush_interval)
        return _SPOOLS[sink]


def declare_stream(stream: str, interval: float) -> None:
    """Export a configured stream before its first sweep: its interval, its sweep counters at
    0 and its last success at 0, so that a staleness alert fires for a stream that never
    worked (a series that does not exist yet would match no alert). Values already there
    are kept: a loop that restarts after a failure does not reset them."""
    SWEEP_INTERVAL.labels(stream).set(interval)
    LAST_SUCCESS.labels(stream)
    EVENTS_LISTED_TWICE.labels(stream)
    for outcome in SWEEP_OUTCOMES:
        SWEEPS.labels(stream, outcome)
    declare_backfill(stream)


def declare_backfill(stream: str) -> None:
    """Export a stream's backfill series at 0 (kept if there)."""
    BACKFILL_EVENTS.labels(stream)
    for state in BACKFILL_WINDOW_STATES:
        BACKFILL_WINDOWS.labels(stream, state)
