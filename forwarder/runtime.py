"""Assembles a command's parts from the settings: source, mappers, sinks, dead letters, state
and the stream lock; and owns the stop signal (SIGTERM/SIGINT) they all watch."""

from __future__ import annotations

import hashlib
import logging
import re
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from forwarder import PROG, __version__
from forwarder.config import Settings
from forwarder.deadletter import DeadLetters
from forwarder.delivery import Delivery, close_sinks
from forwarder.errors import ConfigError
from forwarder.logs import get_logger, register_secret, verbose_logger
from forwarder.schemas import build_mappers
from forwarder.sinks import Sink, SinkConfigError, open_sink
from forwarder.sinks.base import safe_url
from forwarder.sinks.file import request_reopen
from forwarder.sources import Source
from forwarder.sources.jsonl import JsonlSource
from forwarder.sources.openai_api import OpenAIAuditLogSource
from forwarder.state import State, StreamLock
from forwarder.timeparse import parse_when


def build_source(settings: Settings, stop: threading.Event) -> Source:
    if settings.input:
        return JsonlSource(settings.input, settings.filters())
    key = settings.resolve_admin_key()
    if key is None:
        raise ConfigError(
            "invalid setting admin_key: no Admin API key; set OPENAI_ADMIN_KEY, "
            "--admin-key-file, or use --input FILE"
        )
    register_secret(key)
    return OpenAIAuditLogSource(
        base_url=settings.base_url,
        admin_key=key,
        filters=settings.filters(),
        page_size=settings.page_size,
        timeout=settings.request_timeout,
        retries=settings.request_retries,
        verify_tls=settings.verify_tls,
        ca_file=settings.ca_file,
        stop=stop,
        max_response_size=settings.max_response_size,
        stream=stream_name(settings),
    )


def build_sinks(settings: Settings, stream: str | None = None) -> list[Sink]:
    """The configured sinks (not yet connected); `{stream}` in a URL becomes the stream name,
    so that streams of one process can write to files or prefixes of their own."""
    urls = settings.sinks or ["stdout:"]
    stream = stream or stream_name(settings)
    if "/" in stream or "\\" in stream or not stream.strip("."):
        # Settings refuse such names already; this keeps `{stream}` inside the sink's
        # directory or prefix whatever path a name took to get here.
        raise ConfigError(f"invalid setting stream: {stream!r} cannot name a file or key")
    sinks: list[Sink] = []
    try:
        for url in urls:
            url = url.replace("{stream}", stream)
            sinks.append(
                open_sink(url, settings.output_schema, settings.ocsf_version, settings.spool_dir)
            )
    except SinkConfigError as exc:
        raise ConfigError(f"invalid setting sink: {exc}") from None
    names = [sink.name for sink in sinks]
    if len(set(names)) != len(names):
        raise ConfigError("invalid setting sink: the same sink is named twice")
    return sinks


def log_start(command: str, targets: list[Settings]) -> None:
    """Log (from -v on) the line a command starts with: the version, the streams, where their
    events come from and go to (the sinks' names, without credentials, each with its schema)
    and the state. Nothing is opened; a stream whose sinks are misconfigured fails later, on
    its own."""
    if not verbose_logger().isEnabledFor(logging.INFO):
        return
    streams = [stream_name(target) for target in targets]
    sources: list[str] = []
    sinks: list[str] = []
    for target, stream in zip(targets, streams, strict=True):
        source = f"input {target.input}" if target.input else f"API {target.base_url}"
        if source not in sources:
            sources.append(source)
        try:
            built = [f"{sink.name} ({sink.mapping})" for sink in build_sinks(target, stream)]
        except ConfigError:
            built = [safe_url(url) for url in target.sinks]
        sinks.extend(text for text in built if text not in sinks)
    schemas = sorted({target.output_schema for target in targets})
    states = sorted({str(target.state_path.resolve()) for target in targets})
    verbose_logger().info(
        "%s %s %s: streams %s; source %s; sinks %s; schema %s; state %s",
        PROG,
        __version__,
        command,
        ", ".join(streams),
        ", ".join(sources),
        ", ".join(sinks),
        ", ".join(schemas),
        ", ".join(states),
    )


def stream_name(settings: Settings) -> str:
    """With --input and no explicit stream, each input file gets a checkpoint of its own,
    apart from the API's: `jsonl:NAME-HASH` (the hash of its absolute path)."""
    if not settings.input or "stream" in settings.model_fields_set:
        return settings.stream
    if settings.input == "-":
        return "jsonl:stdin"
    path = Path(settings.input).resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)[:40]
    return f"jsonl:{base}-{digest}"


def start_at(settings: Settings, source: Source) -> int:
    """Where a fresh stream starts: --start-at (default 24h ago) for the API; the whole file
    for --input unless --start-at was given."""
    if not source.live and "start_at" not in settings.model_fields_set:
        return 0
    return parse_when(settings.start_at)


class SinkPool:
    """The sinks of one process, shared by its streams: one connection or file handle per sink
    URL, opened and restored once. Streams that share a sink also share one batch lock, held
    around each batch's writes and its commit, so that the positions a stream commits never
    cover another stream's uncommitted batch."""

    def __init__(self) -> None:
        self.sinks: dict[str, Sink] = {}
        self.batch_lock = threading.Lock()
        self._guard = threading.Lock()

    def share(self, delivery: Delivery, state: State) -> None:
        """Give `delivery` the pool's instance of each of its sinks, opening the new ones."""
        with self._guard:
            fresh = [sink for sink in delivery.sinks if sink.name not in self.sinks]
            if fresh:
                opener = Delivery(
                    fresh,
                    {},
                    delivery.dead_letters,
                    stream=delivery.stream,
                    retry_timeout=delivery.retry_timeout,
                    stop=delivery.stop,
                )
                opener.on_retry = delivery.on_retry
                adopted = opener.open(state.sink_position)
                if adopted:
                    state.set_sink_positions(adopted)
                self.sinks.update((sink.name, sink) for sink in fresh)
            delivery.sinks = [self.sinks[sink.name] for sink in delivery.sinks]
            delivery.batch_lock = self.batch_lock

    def close(self) -> None:
        close_sinks(self.sinks.values())
        self.sinks.clear()


@dataclass
class Runtime(AbstractContextManager["Runtime"]):
    """The opened parts of one command; closes everything on exit."""

    settings: Settings
    command: str
    lock_name: str
    stop: threading.Event = field(default_factory=threading.Event)
    source: Source | None = None
    state: State | None = None
    delivery: Delivery | None = None
    lock: StreamLock | None = None
    stream: str = "default"
    pool: SinkPool | None = None
    on_retry: Callable[[str], None] | None = None  # see Delivery.on_retry
    _own_pool: SinkPool | None = None

    def open(self) -> Runtime:
        settings = self.settings
        self.stream = stream_name(settings)
        sinks = build_sinks(settings, self.stream)
        mappers = build_mappers(settings, {sink.mapping for sink in sinks})
        self.source = build_source(settings, self.stop)
        self.lock = StreamLock(settings.state_path, self.lock_name.format(stream=self.stream))
        self.lock.acquire(self.command)
        self.state = State(settings.state_path)
        self.delivery = Delivery(
            sinks,
            mappers,
            DeadLetters(settings.dead_letter_dir, self.stream),
            stream=self.stream,
            retry_timeout=settings.sink_retry_timeout,
            stop=self.stop,
        )
        self.delivery.on_retry = self.on_retry
        if self.pool is None:
            self.pool = self._own_pool = SinkPool()
        self.pool.share(self.delivery, self.state)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._own_pool is not None:
            self._own_pool.close()
        if self.source is not None:
            self.source.close()
        if self.state is not None:
            self.state.close()
        if self.lock is not None:
            self.lock.release()


def install_stop_handlers(stop: threading.Event) -> None:
    """First SIGTERM/SIGINT: finish or drop the batch in flight, then exit. Second: now.
    SIGHUP (logrotate's postrotate) reopens every file sink before its next batch."""

    def reopen(signum: int, frame: Any) -> None:
        request_reopen()
        get_logger().info("received SIGHUP: file sinks reopen their files before the next batch")

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        get_logger().info(
            "received %s, stopping after the batch in flight", signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, reopen)
