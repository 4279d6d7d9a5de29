"""The parameters of a `fluentd://HOST:PORT` or `fluentd+tls://` sink URL, checked when the sink
is built: a bad one is a `SinkConfigError` (exit 2) naming it, never a failure at the first
write. Secrets come from the environment or a file, never from the URL."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from forwarder.sinks.base import SinkConfigError, SinkSpec, tls_context
from forwarder.sinks.fluentd.transport import ForwardTransport

KNOWN_PARAMS = {
    "tag",
    "ca_file",
    "verify",
    "shared_key_env",
    "shared_key_file",
    "username_env",
    "password_env",
    "self_hostname",
    "compress",
    "ack_timeout",
    "timeout",
    "retries",
    "backoff",
    "chunk_bytes",
}


@dataclass(frozen=True)
class FluentdConfig:
    """A Fluentd sink's settings, typed; `transport` holds those of the connection."""

    transport: ForwardTransport
    compress: bool
    retries: int
    backoff: float
    chunk_bytes: int


def parse(spec: SinkSpec) -> FluentdConfig:
    spec.reject_unknown(KNOWN_PARAMS)
    host, port = spec.require_host_port()
    tag = spec.take("tag", "openai.audit") or ""
    if not tag:
        raise SinkConfigError(f"sink {spec.display}: tag must not be empty")
    ssl_context = None
    if spec.scheme == "fluentd+tls":
        ssl_context = tls_context(spec)
    elif "ca_file" in spec.params or "verify" in spec.params:
        raise SinkConfigError(
            f"sink {spec.display}: ca_file and verify apply to fluentd+tls:// only"
        )
    shared_key = _env_secret(spec, "shared_key_env")
    if spec.take("shared_key_file") is not None:
        if shared_key is not None:
            raise SinkConfigError(
                f"sink {spec.display}: give shared_key_env or shared_key_file, not both"
            )
        shared_key = _file_secret(spec, "shared_key_file")
    username = _env_secret(spec, "username_env")
    password = _env_secret(spec, "password_env")
    if (username is None) != (password is None):
        raise SinkConfigError(f"sink {spec.display}: username_env and password_env go together")
    if username is not None and shared_key is None:
        raise SinkConfigError(
            f"sink {spec.display}: user authentication needs shared_key_env as well"
        )
    transport = ForwardTransport(
        host=host,
        port=port,
        tag=tag,
        ssl_context=ssl_context,
        shared_key=shared_key,
        username=username or "",
        password=password or "",
        self_hostname=spec.take("self_hostname") or socket.gethostname(),
        connect_timeout=spec.float_param("timeout", 10.0, minimum=0.001),
        ack_timeout=spec.float_param("ack_timeout", 30.0, minimum=0.001),
    )
    return FluentdConfig(
        transport=transport,
        compress=spec.choice_param("compress", "none", ("none", "gzip")) == "gzip",
        retries=spec.int_param("retries", 3, minimum=1),
        backoff=spec.float_param("backoff", 0.5),
        chunk_bytes=spec.int_param("chunk_bytes", 4 << 20, minimum=1024),
    )


def _env_secret(spec: SinkSpec, param: str) -> str | None:
    variable = spec.take(param)
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None or value == "":
        raise SinkConfigError(
            f"sink {spec.display}: {param}: environment variable {variable} is not set"
        )
    return value


def _file_secret(spec: SinkSpec, param: str) -> str:
    """A secret from a file (Docker/Kubernetes secrets, systemd credentials)."""
    path = spec.take(param)
    assert path is not None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SinkConfigError(
            f"sink {spec.display}: {param}: cannot read {path} ({exc.strerror or exc})"
        ) from None
    if not value:
        raise SinkConfigError(f"sink {spec.display}: {param}: {path} is empty")
    return value
