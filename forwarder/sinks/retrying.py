"""A sink's own small retry budget, built on the one retry policy (`forwarder.retry`): for the
state only a sink can carry between attempts (Fluentd's unacknowledged chunks, RELP's
unacknowledged messages, a syslog stream resent whole). `Delivery` owns the deadline."""

from __future__ import annotations

import threading
from collections.abc import Callable

from tenacity import Retrying

from forwarder.retry import retrying
from forwarder.sinks.base import sink_failure_is_passing


def sink_retrying(
    *,
    stop: threading.Event,
    what: str,
    attempts: int,
    backoff: float,
    cap: float,
    give_up: Callable[[BaseException, int], BaseException],
    progress: Callable[[], int] | None = None,
) -> Retrying:
    """A sink's own small budget of attempts (its `retries=`/`backoff=` parameters), for the
    state only the sink can carry between attempts (Fluentd's unacknowledged chunks, RELP's
    unacknowledged messages); `Delivery` owns the deadline and the metric around it. With
    `progress`, the attempts that count are those in a row without progress."""
    return retrying(
        stop=stop,
        what=what,
        passing=sink_failure_is_passing,
        base=backoff,
        cap=cap,
        attempts=attempts,
        progress=progress,
        give_up=give_up,
    )
