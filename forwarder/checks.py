"""The `check` command's work: the configuration, the credentials and every sink of every
configured stream, verified without sending an event. One result row per check, yielded as it
is known, so that a slow peer does not hide the rows before it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from forwarder.config import Settings, insecure_transport, stream_targets
from forwarder.errors import ConfigError, ForwarderError
from forwarder.logs import redact
from forwarder.runtime import build_sinks, build_source, stream_name
from forwarder.schemas import build_mappers
from forwarder.sinks.base import SinkError
from forwarder.sources.openai_api import TenantRefused

# ok: passed; WARN: passed, but the key or the events travel unprotected; warn: a tenant
# companion refused (its events are not collected, the others are); FAIL: failed.
Status = Literal["ok", "WARN", "warn", "FAIL"]


@dataclass(frozen=True)
class CheckRow:
    status: Status
    subject: str  # "config", "source NAME", "sink NAME"
    detail: str


def run_checks(settings: Settings, *, stream_given: bool) -> Iterator[CheckRow]:
    """Check each configured stream (or the one --stream names) and its tenant companion: its
    settings, its source (the API key, or the input file) and each of its sinks, a sink shared
    by streams once. A configuration error is raised, not reported as a row."""
    checked: set[str] = set()
    for target in stream_targets(settings, stream_given):
        stream = stream_name(target)
        yield CheckRow("ok", "config", f"stream {stream}, state {target.state_path}")
        insecure = insecure_transport(target)
        if insecure:
            yield CheckRow("WARN", f"source {stream}", insecure)
        sinks = build_sinks(target, stream)
        build_mappers(target, {sink.mapping for sink in sinks})
        yield _check_source(target, stream)
        for sink in sinks:
            if sink.name in checked:
                continue
            checked.add(sink.name)
            try:
                yield CheckRow("ok", f"sink {sink.name}", redact(sink.check()))
            except SinkError as exc:
                yield CheckRow("FAIL", f"sink {sink.name}", redact(str(exc)))
            finally:
                sink.close()


def _check_source(settings: Settings, stream: str) -> CheckRow:
    subject = f"source {stream}"
    try:
        source = build_source(settings, threading.Event())
        try:
            return CheckRow("ok", subject, redact(source.check()))
        finally:
            source.close()
    except ConfigError:
        raise
    except TenantRefused as exc:
        if not settings.tenant_companion:
            return CheckRow("FAIL", subject, redact(str(exc)))
        return CheckRow(
            "warn",
            subject,
            f"tenant-scoped events are not collected, {redact(str(exc))}; run asks again "
            "hourly (--without-tenant to stop)",
        )
    except ForwarderError as exc:
        return CheckRow("FAIL", subject, redact(str(exc)))
