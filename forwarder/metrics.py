"""Prometheus metrics of the forwarder, in a registry of its own (served by --metrics-addr)."""

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
    "Audit-log API requests by HTTP status (or 'error')",
    ["status"],
    registry=REGISTRY,
)
API_RETRIES = Counter(
    "oaf_api_retries", "Audit-log API requests retried", ["stream"], registry=REGISTRY
)
API_RATE_LIMITED = Counter(
    "oaf_api_rate_limited", "Audit-log API responses with status 429", registry=REGISTRY
)
SINK_RETRIES = Counter(
    "oaf_sink_retries", "Batches retried per sink", ["stream", "sink"], registry=REGISTRY
)
SWEEP_DURATION = Histogram(
    "oaf_sweep_duration_seconds", "Duration of one sweep", ["stream"], registry=REGISTRY
)
LAST_SUCCESS = Gauge(
    "oaf_last_success_timestamp_seconds",
    "Unix time of the last successful sweep",
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
