"""The `run` service: one loop per stream (sweep, commit, wait), several streams in threads of
one process; a stream that fails is retried next interval and never stops the others."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Sequence

from forwarder import metrics
from forwarder.collector import Collector, SweepResult
from forwarder.config import Settings, stream_groups, warn_insecure
from forwarder.errors import ConfigError, ForwarderError, StateLockedError, Stopped
from forwarder.health import Health, max_silence, serve_metrics
from forwarder.logs import get_logger, stream_context
from forwarder.replay import warn_of_dead_letters
from forwarder.runtime import (
    Runtime,
    SinkPool,
    install_stop_handlers,
    log_start,
    start_at,
    stream_name,
)
from forwarder.timeparse import format_when


def serve(settings: Settings, *, once: bool, stream_given: bool) -> None:
    """The `run` command: every configured stream (or the one --stream names) with its tenant
    companion, until SIGTERM/SIGINT (or one sweep each with `once`), with /metrics and /healthz
    when `metrics_addr` is set. Raises when a stream failed (--once) or cannot start."""
    groups = stream_groups(settings, stream_given)
    log_start("run --once" if once else "run", [target for group in groups for target in group])
    warn_insecure([target for group in groups for target in group])
    stop = threading.Event()
    install_stop_handlers(stop)
    health = Health(settings.health_threshold)
    if settings.metrics_addr:
        serve_metrics(settings.metrics_addr, health)
    if len(groups) == 1:  # a stream and its tenant companion, swept one after the other
        run_stream(groups[0][0], once, stop, health, companions=groups[0][1:])
        return
    failures = run_streams(groups, once, stop, health)
    if failures:
        names = ", ".join(name for name, _ in failures)
        first = failures[0][1]
        raise ForwarderError(f"{len(failures)} of {len(groups)} streams failed ({names}): {first}")


def run_stream(
    settings: Settings,
    once: bool,
    stop: threading.Event,
    health: Health,
    pool: SinkPool | None = None,
    companions: Sequence[Settings] = (),
    loops: int = 1,
) -> None:
    """Sweep one stream, then its `companions` (its tenant stream), until stopped (or once).
    Raises on failure with --once, and on configuration errors and a held lock always.
    `loops`: how many such loops the process runs (they share sinks; see max_silence)."""
    log = get_logger()
    targets = (settings, *companions)
    names = [stream_name(target) for target in targets]
    loop = names[0]
    for name in names:
        health.register(name)
        metrics.declare_stream(name, settings.interval)
    health.loop_started(loop, max_silence(settings, loops))
    beat = functools.partial(health.beat, loop)
    command = "run --once" if once else "run"
    ended = "stopped"
    try:
        while True:
            current = loop  # the stream being opened or swept, to which a failure belongs
            try:
                with contextlib.ExitStack() as stack:
                    shared = pool
                    if shared is None and companions:  # they share the sinks
                        shared = SinkPool()
                        stack.callback(shared.close)
                    sweeps = []
                    for target, name in zip(targets, names, strict=True):
                        current = name
                        beat()
                        rt = stack.enter_context(
                            Runtime(
                                target,
                                command,
                                "stream {stream}",
                                stop=stop,
                                pool=shared,
                                on_retry=functools.partial(health.retrying, name),
                            )
                        )
                        with stream_context(name):
                            rt.open()
                        health.watch(rt.delivery.sinks if rt.delivery else ())
                        partner = _partner(target, targets)
                        sweeps.append((rt, target, _collector(rt, target, stop, beat, partner)))
                    while True:
                        for rt, target, collector in sweeps:
                            current = rt.stream
                            beat()
                            with stream_context(rt.stream):
                                result = collector.sweep()
                                health.success(rt.stream)
                                metrics.SWEEPS.labels(rt.stream, "success").inc()
                                _report(result, rt, target)
                            if stop.is_set():
                                return
                        beat()
                        if once or stop.wait(settings.interval):
                            return
            except Stopped:
                metrics.SWEEPS.labels(current, "stopped").inc()
                log.info(
                    "stopped; the batch in flight was not committed", extra={"stream": current}
                )
                return
            except ForwarderError as exc:
                _failed(health, names, current, exc)
                if once or isinstance(exc, (ConfigError, StateLockedError)):
                    ended = f"stream {current}: {exc}"
                    raise
                log.error(
                    "sweep failed: %s; next try in %ss",
                    exc,
                    int(settings.interval),
                    extra={"stream": current},
                )
                beat()
                if stop.wait(settings.interval):
                    return
    finally:
        health.loop_ended(loop, ended)


def _report(result: SweepResult, rt: Runtime, settings: Settings) -> None:
    """The sweep's summary line: this sweep's delivered events and dead letters; and one
    warning when it dead-lettered any."""
    assert rt.delivery
    tally = result.tally
    get_logger().info(
        "sweep done: %d events delivered, %d dead-lettered, watermark %s",
        tally.delivered,
        tally.dead_lettered,
        format_when(result.watermark),
    )
    sinks = [sink.name for sink in rt.delivery.sinks]
    warn_of_dead_letters(tally, settings, sinks, rt.stream, "sweep")


def _failed(health: Health, names: list[str], current: str, exc: ForwarderError) -> None:
    """`current` failed: so it reads in /healthz and the metrics, and the streams after it in
    the loop (its tenant companion) read as not run, with the reason."""
    health.failure(current, str(exc))
    metrics.SWEEPS.labels(current, "failure").inc()
    for name in names[names.index(current) + 1 :]:
        health.not_run(name, f"not run: stream {current}, swept before it, failed")
        metrics.SWEEPS.labels(name, "not_run").inc()


def _partner(target: Settings, group: Sequence[Settings]) -> str | None:
    """The other stream of a stream and its tenant companion (its ids count as delivered)."""
    others = [other.stream for other in group if other is not target]
    return others[0] if len(group) == 2 and group[1].tenant_companion else None


def _collector(
    rt: Runtime,
    settings: Settings,
    stop: threading.Event,
    heartbeat: Callable[[], None],
    partner: str | None = None,
) -> Collector:
    assert rt.source and rt.state and rt.delivery
    return Collector(
        stream=rt.stream,
        source=rt.source,
        delivery=rt.delivery,
        state=rt.state,
        lag=settings.lag,
        overlap=settings.overlap,
        batch_size=settings.batch_size,
        start_at=functools.partial(start_at, settings, rt.source),
        stop=stop,
        tenant_companion=settings.tenant_companion,
        partner=partner,
        heartbeat=heartbeat,
    )


def run_streams(
    targets: list[list[Settings]], once: bool, stop: threading.Event, health: Health
) -> list[tuple[str, ForwarderError]]:
    """Run several streams (each with its companions) side by side; return the failures
    (stream, error)."""
    failures: list[tuple[str, ForwarderError]] = []
    lock = threading.Lock()
    pool = SinkPool()  # streams naming the same sink share one instance of it

    def worker(group: list[Settings]) -> None:
        target = group[0]
        try:
            run_stream(target, once, stop, health, pool, group[1:], loops=len(targets))
        except ForwarderError as exc:
            get_logger().error("stream failed: %s", exc, extra={"stream": target.stream})
            with lock:
                failures.append((target.stream, exc))

    threads = [
        threading.Thread(target=worker, args=(group,), name=f"stream-{group[0].stream}")
        for group in targets
    ]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.2)
    finally:
        pool.close()
    return failures
