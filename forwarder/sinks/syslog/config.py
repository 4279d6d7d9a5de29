"""The parameters of a `syslog+udp|tcp|tls|relp://HOST:PORT` sink URL, checked when the sink is
built: a bad one is a `SinkConfigError` (exit 2) naming it, never a failure at the first
write."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from forwarder.sinks.base import Record, SinkConfigError, SinkSpec, tls_context
from forwarder.sinks.syslog.cef import CefBody
from forwarder.sinks.syslog.encoder import json_body
from forwarder.sinks.syslog.rfc5424 import (
    DEFAULT_FACILITY,
    DEFAULT_SD_ID,
    MessageBuilder,
    parse_facility,
)

APP_NAME = "openai-audit-forwarder"
# UDP: rsyslog's (and syslog-ng's classic) default receive limit; larger datagrams would be
# truncated by a receiver with default settings. Streams: 64 KiB, raise the receiver to match.
DEFAULT_MAX_SIZE = {"udp": 8192, "tcp": 65536, "tls": 65536, "relp": 65536}
# The largest UDP payload over IPv4 (65535 - 8 byte UDP header - 20 byte IP header).
UDP_MAX_SIZE = 65507

COMMON = {"facility", "hostname", "app_name", "format", "max_size", "sd_id", "cef_doc"}
TLS_PARAMS = {"ca_file", "verify", "cert_file", "key_file", "server_name"}
STREAM = {"timeout", "retries"}
PARAMS = {
    "udp": COMMON,
    "tcp": COMMON | STREAM | {"framing"},
    "tls": COMMON | STREAM | TLS_PARAMS | {"framing"},
    "relp": COMMON | STREAM | TLS_PARAMS | {"window", "tls"},
}
# What an SD-ID cannot hold (RFC 5424 SD-NAME): they would end the structured data early.
SD_ID_FORBIDDEN = set('="]')


@dataclass(frozen=True)
class SyslogConfig:
    """A syslog sink's settings, typed."""

    transport: str  # udp, tcp, tls or relp
    host: str
    port: int
    builder: MessageBuilder
    max_size: int
    framing: str
    timeout: float
    retries: int
    window: int
    tls_context: ssl.SSLContext | None
    server_name: str


def parse(spec: SinkSpec) -> SyslogConfig:
    transport = spec.scheme.partition("+")[2]
    if transport not in PARAMS:
        raise SinkConfigError(f"sink {spec.display}: unknown syslog transport {transport!r}")
    spec.reject_unknown(PARAMS[transport])
    host, port = spec.require_host_port()
    try:
        facility = parse_facility(spec.take("facility", DEFAULT_FACILITY) or "")
    except ValueError as exc:
        raise SinkConfigError(f"sink {spec.display}: {exc}") from None
    body_format = spec.choice_param("format", "json", ("json", "cef"))
    body: Callable[[Record, int], bytes] = (
        CefBody(include_doc=spec.bool_param("cef_doc", True)) if body_format == "cef" else json_body
    )
    sd_id = spec.take("sd_id") or DEFAULT_SD_ID
    if SD_ID_FORBIDDEN & set(sd_id):
        raise SinkConfigError(
            f"sink {spec.display}: sd_id={sd_id!r} must not contain '=', ']' or '\"' "
            "(an RFC 5424 SD-ID)"
        )
    builder = MessageBuilder(
        facility=facility,
        hostname=spec.take("hostname") or socket.gethostname(),
        app_name=spec.take("app_name") or APP_NAME,
        procid=str(os.getpid()),
        body=body,
        sd_id=sd_id,
    )
    max_size = spec.int_param("max_size", DEFAULT_MAX_SIZE[transport], minimum=64)
    if transport == "udp" and max_size > UDP_MAX_SIZE:
        raise SinkConfigError(
            f"sink {spec.display}: max_size={max_size} is over {UDP_MAX_SIZE}, "
            "the largest UDP datagram"
        )
    use_tls = transport == "tls" or (transport == "relp" and spec.bool_param("tls", False))
    if not use_tls and transport == "relp" and set(spec.params) & TLS_PARAMS:
        raise SinkConfigError(f"sink {spec.display}: TLS parameters need tls=true")
    return SyslogConfig(
        transport=transport,
        host=host,
        port=port,
        builder=builder,
        max_size=max_size,
        framing=spec.choice_param("framing", "octet-counting", ("octet-counting", "lf")),
        timeout=spec.float_param("timeout", 10.0, minimum=0.1),
        retries=spec.int_param("retries", 3),
        window=spec.int_param("window", 128, minimum=1),
        tls_context=tls_context(spec, client_cert=True) if use_tls else None,
        server_name=spec.take("server_name") or host,
    )
