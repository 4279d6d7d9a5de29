"""Sink registry: turns a sink URL into a `Sink`, importing each sink module only when used."""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

from forwarder.sinks.base import (
    Record,
    Rejection,
    Sink,
    SinkConfigError,
    SinkError,
    SinkSpec,
    parse_sink_url,
)

__all__ = [
    "Record",
    "Rejection",
    "Sink",
    "SinkConfigError",
    "SinkError",
    "SinkSpec",
    "open_sink",
    "parse_sink_url",
]

# scheme -> "module:class"; each class builds itself with `Sink.from_spec(spec)`.
SCHEMES: dict[str, str] = {
    "file": "forwarder.sinks.file:FileSink",
    "stdout": "forwarder.sinks.stdout:StdoutSink",
    "fluentd": "forwarder.sinks.fluentd:FluentdSink",
    "fluentd+tls": "forwarder.sinks.fluentd:FluentdSink",
    "syslog+udp": "forwarder.sinks.syslog:SyslogSink",
    "syslog+tcp": "forwarder.sinks.syslog:SyslogSink",
    "syslog+tls": "forwarder.sinks.syslog:SyslogSink",
    "syslog+relp": "forwarder.sinks.syslog:SyslogSink",
    "s3": "forwarder.sinks.s3:S3Sink",
}


def open_sink(
    url: str,
    default_schema: str = "ecs",
    ocsf_version: str | None = None,
    spool_root: Path | None = None,
) -> Sink:
    """Build (not yet connect) the sink a URL names; `SinkConfigError` for a bad URL.
    `ocsf_version` is the global setting, for sinks without `ocsf_version=`; `spool_root`
    where sinks that hold events locally keep them (beside the state)."""
    spec = replace(parse_sink_url(url, default_schema, ocsf_version), spool_root=spool_root)
    target = SCHEMES.get(spec.scheme)
    if target is None:
        raise SinkConfigError(
            f"sink {spec.display}: unknown scheme {spec.scheme!r} "
            f"(allowed: {', '.join(sorted(SCHEMES))})"
        )
    module_name, class_name = target.split(":")
    sink_class = getattr(importlib.import_module(module_name), class_name)
    return sink_class.from_spec(spec)
