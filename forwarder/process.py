"""The garbage collector's policy, the one place it is set: once a command's settings are
loaded (`settings_from`; each command imports its domain before, so its modules count too)."""

from __future__ import annotations

import gc

# The first generation's threshold (CPython's default is 700). Measured side by side with
# benchmarks/bench_gc.py (docs/benchmarks.md, "Garbage collector"): 2 to 7 % less CPU for
# `run --once --input` than 700, the same peak RSS for a 1,000,000-event backfill (104 MB
# against 103). Not higher: 50,000 was no faster and its peak was 108 MB (HTTP responses
# reach the collector in cycles that hold their body; a larger generation keeps more alive).
FIRST_GENERATION = 10_000


def settle_gc() -> None:
    """Keep what exists by now (modules, classes, pydantic schemas, the settings) out of the
    cyclic collector's passes: it lives as long as the process, and rescanning it on every
    full collection cost a third of the time of mapping a file (docs/mappings.md). Then let
    most of a batch's short-lived containers (events, documents) die before a pass looks at
    them. Frozen once per process: freezing again would make garbage that exists by then
    (tracebacks in cycles) permanent."""
    gc.set_threshold(FIRST_GENERATION, 10, 10)
    if not gc.get_freeze_count():
        gc.freeze()
