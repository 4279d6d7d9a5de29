"""The syslog sink: RFC 5424 messages (JSON or CEF body) over UDP, TCP, TLS (octet-counting
framing) or RELP, the one transport that confirms receipt. This module is the glue: `config`
reads the URL, `encoder` (with `rfc5424` and `cef`) makes the messages, `transport` and `relp`
deliver them."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from forwarder.sinks.base import Record, Rejection, Sink, SinkError, SinkSpec, short_reason
from forwarder.sinks.syslog import config, encoder
from forwarder.sinks.syslog.relp import RelpClient, RelpError
from forwarder.sinks.syslog.transport import Datagrams, Stream


class SyslogSink(Sink):
    """`syslog+udp|tcp|tls|relp://HOST:PORT?facility=&format=json|cef&framing=&max_size=...`."""

    def __init__(self, spec: SinkSpec, settings: config.SyslogConfig) -> None:
        super().__init__(spec)
        self.transport = settings.transport
        self.max_size = settings.max_size
        self.framing = settings.framing
        self._builder = settings.builder
        self._host, self._port = settings.host, settings.port
        self._timeout = settings.timeout
        self._label = f"sink {spec.display}"
        self._datagrams: Datagrams | None = None
        self._stream: Stream | None = None
        self._relp: RelpClient | None = None
        if settings.transport == "udp":
            self._datagrams = Datagrams(self._host, self._port, self._label)
        else:
            self._stream = Stream(
                self._host,
                self._port,
                self._label,
                timeout=settings.timeout,
                retries=settings.retries,
                tls_context=settings.tls_context,
                server_name=settings.server_name,
            )
        if settings.transport == "relp":
            assert self._stream is not None
            self._relp = RelpClient(
                self._stream.connect,
                label=self._label,
                window=settings.window,
                retries=settings.retries,
                timeout=settings.timeout,
            )

    def bind_stop(self, stop: threading.Event) -> None:
        super().bind_stop(stop)
        if self._stream is not None:
            self._stream.stop = stop
        if self._relp is not None:
            self._relp.stop = stop

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> SyslogSink:
        return cls(spec, config.parse(spec))

    def open(self) -> None:
        if self._relp is not None:
            try:
                self._relp.open()
            except (RelpError, OSError) as exc:
                raise SinkError(f"{self._label}: RELP open failed: {short_reason(exc)}") from None
        elif self._datagrams is not None:
            self._datagrams.open()
        elif self._stream is not None:
            self._stream.open()

    def close(self) -> None:
        if self._relp is not None:
            self._relp.close()
        for transport in (self._datagrams, self._stream):
            if transport is not None:
                transport.close()

    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        sent, messages, rejections = encoder.messages(
            records,
            self._builder.build,
            self.max_size,
            self.framing == "lf",  # framing= is a parameter of tcp and tls only
            self.spec.display,
        )
        if not messages:
            return rejections
        if self._relp is not None:
            self._relp.send(messages)
        elif self._datagrams is not None:
            rejections.extend(self._datagrams.send(sent, messages))
        else:
            assert self._stream is not None
            self._stream.send(encoder.frame(messages, self.framing))
        return rejections

    def check(self) -> str:
        where = f"{self.spec.scheme} {self._host}:{self._port}"
        size = f"max_size={self.max_size}"
        if self._datagrams is not None:
            self._datagrams.socket().close()
            return f"{where}: address resolved ({size}; UDP cannot confirm delivery)"
        assert self._stream is not None
        if self._relp is not None:
            probe = RelpClient(
                self._stream.connect, label=self._label, retries=0, timeout=self._timeout
            )
            try:
                probe.open()
            except RelpError as exc:
                raise SinkError(f"{self._label}: {short_reason(exc)}") from None
            except OSError as exc:
                raise SinkError(f"{self._label}: RELP open failed: {short_reason(exc)}") from None
            software = probe.server_software or "unknown software"
            probe.close()
            tls = self._stream.tls
            verified = ", TLS verified" if tls and tls.verify_mode else ""
            return f"{where}: RELP session opened ({software}{verified}; {size})"
        detail = self._stream.check()
        return f"{where}: {detail} ({self.framing} framing, {size}; TCP cannot confirm receipt)"
