"""The `run` service: one loop per stream (sweep, commit, wait), several streams in threads of
one process; a stream that fails is retried next interval and never stops the others."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Sequence

from forwarder.collector import Collector
from forwarder.config import Settings
from forwarder.delivery import Stopped
from forwarder.errors import ConfigError, ForwarderError, StateLockedError
from forwarder.health import Health
from forwarder.logs import get_logger
from forwarder.runtime import Runtime, SinkPool, start_at, stream_name
from forwarder.timeparse import format_when


def run_stream(
    settings: Settings,
    once: bool,
    stop: threading.Event,
    health: Health,
    pool: SinkPool | None = None,
    companions: Sequence[Settings] = (),
) -> None:
    """Sweep one stream, then its `companions` (its tenant stream), until stopped (or once).
    Raises on failure with --once, and on configuration errors and a held lock always."""
    log = get_logger()
    stream = stream_name(settings)
    health.register(stream)
    command = "run --once" if once else "run"
    while True:
        try:
            with contextlib.ExitStack() as stack:
                shared = pool
                if shared is None and companions:  # they share the sinks
                    shared = SinkPool()
                    stack.callback(shared.close)
                sweeps = []
                for target in (settings, *companions):
                    rt = stack.enter_context(
                        Runtime(target, command, "stream {stream}", stop=stop, pool=shared)
                    )
                    rt.open()
                    sweeps.append((rt, _collector(rt, target, stop)))
                    health.register(rt.stream)
                    health.watch(rt.delivery.sinks if rt.delivery else ())
                while True:
                    for rt, collector in sweeps:
                        result = collector.sweep()
                        health.success(rt.stream)
                        assert rt.delivery
                        log.info(
                            "sweep done: %d events delivered, watermark %s, %d dead-lettered",
                            result.events,
                            format_when(result.watermark),
                            rt.delivery.dead_letters.count,
                            extra={"stream": rt.stream},
                        )
                        if stop.is_set():
                            return
                    if once or stop.wait(settings.interval):
                        return
        except Stopped:
            log.info("stopped; the batch in flight was not committed", extra={"stream": stream})
            return
        except (ConfigError, StateLockedError):
            raise
        except ForwarderError as exc:
            health.failure(stream, str(exc))
            if once:
                raise
            log.error(
                "sweep failed: %s; next try in %ss",
                exc,
                int(settings.interval),
                extra={"stream": stream},
            )
            if stop.wait(settings.interval):
                return


def _collector(rt: Runtime, settings: Settings, stop: threading.Event) -> Collector:
    assert rt.source and rt.state and rt.delivery
    return Collector(
        stream=rt.stream,
        source=rt.source,
        delivery=rt.delivery,
        state=rt.state,
        lag=settings.lag,
        overlap=settings.overlap,
        window=settings.window,
        batch_size=settings.batch_size,
        start_at=functools.partial(start_at, settings, rt.source),
        stop=stop,
        tenant_companion=settings.tenant_companion,
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
            run_stream(target, once, stop, health, pool, group[1:])
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
