"""Prometheus metrics of the forwarder, in a registry of its own (served by --metrics-addr).
Every metric about a stream carries the label `stream` (tests/test_metrics_labels.py holds the
few that are process-wide, with the reason)."""

from __future__ import annotations

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
