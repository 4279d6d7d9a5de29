"""What every sink shares (docs/STYLE "One sink shape"): a sink class must say how it is built
from its URL (`from_spec`); building reads `reject_unknown` first, so an unknown parameter is
named before any known one is read; a bad parameter is a `SinkConfigError` at build time; and
the TLS sinks read `ca_file=` and `verify=` through one helper, with one message for a CA file
that cannot be loaded."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

import pytest

from forwarder.sinks import SCHEMES, Record, Rejection, Sink, SinkConfigError, open_sink
from forwarder.sinks.fluentd import FluentdSink
from forwarder.sinks.syslog import SyslogSink

# Per scheme: a URL whose known parameter is bad as well (read before reject_unknown, it
# would be the one named).
BAD_KNOWN_PARAMETER = {
    "file": "file:{tmp}/out.ndjson?fsync=maybe",
    "stdout": "stdout:?format=xml",
    "fluentd": "fluentd://127.0.0.1:24224?retries=0",
    "fluentd+tls": "fluentd+tls://127.0.0.1:24224?ca_file=/nonexistent.pem",
    "syslog+udp": "syslog+udp://127.0.0.1:514?max_size=1",
    "syslog+tcp": "syslog+tcp://127.0.0.1:514?framing=nul",
    "syslog+tls": "syslog+tls://127.0.0.1:514?ca_file=/nonexistent.pem",
    "syslog+relp": "syslog+relp://127.0.0.1:514?window=0",
    "s3": "s3://bucket/prefix?max_events=0",
}


def test_the_table_covers_every_scheme() -> None:
    assert set(BAD_KNOWN_PARAMETER) == set(SCHEMES)


@pytest.mark.parametrize("scheme", sorted(BAD_KNOWN_PARAMETER))
def test_a_known_bad_parameter_is_a_config_error_at_build_time(scheme: str, tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError, match=r"^sink "):
        open_sink(BAD_KNOWN_PARAMETER[scheme].format(tmp=tmp_path))


@pytest.mark.parametrize("scheme", sorted(BAD_KNOWN_PARAMETER))
def test_an_unknown_parameter_is_named_before_any_known_one_is_read(
    scheme: str, tmp_path: Path
) -> None:
    url = BAD_KNOWN_PARAMETER[scheme].format(tmp=tmp_path) + "&bogus=1"
    with pytest.raises(SinkConfigError, match="unknown parameter 'bogus'"):
        open_sink(url)


def test_a_sink_class_must_say_how_it_is_built_from_its_url() -> None:
    class Unbuildable(Sink):
        def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
            return []

        def check(self) -> str:
            return "ok"

    with pytest.raises(TypeError, match="from_spec"):
        Unbuildable(None)  # type: ignore[arg-type,abstract]


def tls_of(sink: Sink) -> ssl.SSLContext | None:
    if isinstance(sink, FluentdSink):
        return sink._transport._ssl_context
    assert isinstance(sink, SyslogSink)
    return sink._stream.tls if sink._stream is not None else None


@pytest.mark.parametrize(
    "url", ["fluentd+tls://127.0.0.1:24224", "syslog+tls://127.0.0.1:514", "syslog+relp://h:1"]
)
def test_the_tls_sinks_share_one_context_helper(url: str) -> None:
    if "relp" in url:
        url += "?tls=true"
    joiner = "&" if "?" in url else "?"
    for extra, verify_mode in (("", ssl.CERT_REQUIRED), ("verify=false", ssl.CERT_NONE)):
        sink = open_sink(url + (joiner + extra if extra else ""))
        context = tls_of(sink)
        assert context is not None
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == verify_mode
        assert context.check_hostname == (verify_mode == ssl.CERT_REQUIRED)
    with pytest.raises(
        SinkConfigError, match=r"TLS setup: ca_file '/nonexistent.pem' cannot be loaded: "
    ):
        open_sink(url + joiner + "ca_file=/nonexistent.pem")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("key_file=/k.pem", "key_file needs cert_file"),
        ("cert_file=/nonexistent.pem", "TLS setup: cert_file '/nonexistent.pem' cannot be loaded"),
    ],
)
def test_a_syslog_client_certificate_is_checked_at_build_time(query: str, message: str) -> None:
    with pytest.raises(SinkConfigError, match=message):
        open_sink(f"syslog+tls://127.0.0.1:514?{query}")
