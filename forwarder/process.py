"""Process-wide settings of a command, made once its settings are loaded: the garbage
collector's policy lives here and nowhere else."""

from __future__ import annotations

import gc


def settle_gc() -> None:
    """Keep what exists by now (modules, classes, pydantic schemas, the settings) out of the
    cyclic collector's passes: it lives as long as the process, and rescanning it on every
    full collection cost a third of the time of mapping a file (docs/mappings.md). Once per
    process: a daemon reopens a failed stream, and freezing again would make the garbage of
    that failure (tracebacks in cycles) permanent."""
    if gc.get_freeze_count():
        return
    gc.freeze()
