"""The streams one run or backfill collects: each configured `[[streams]]` entry (or the
top-level settings) with its tenant companion, and the warning for a stream whose key and
events travel unprotected."""

from __future__ import annotations

from forwarder.config.settings import Settings
from forwarder.errors import ConfigError
from forwarder.logs import get_logger, redact


def stream_groups(settings: Settings, stream_given: bool) -> list[list[Settings]]:
    """Each configured stream (all, or the one --stream names) with its tenant companion, if
    any: a configured stream of the companion's name (a tenant stream of its own) takes its
    place."""
    configured = [settings.for_stream(stream) for stream in settings.streams] or [settings]
    names = {c.stream for c in configured}
    if settings.streams and stream_given:
        configured = [c for c in configured if c.stream == settings.stream]
        if not configured:
            raise ConfigError(f"invalid setting stream: no stream {settings.stream!r} configured")
    return [
        [t for t in c.with_tenant_companion() if not (t.tenant_companion and t.stream in names)]
        for c in configured
    ]


def stream_targets(settings: Settings, stream_given: bool) -> list[Settings]:
    """The settings of each configured stream (all, or the one --stream names), each followed
    by its tenant companion (with_tenant, the default)."""
    return [target for group in stream_groups(settings, stream_given) for target in group]


def insecure_transport(settings: Settings) -> str | None:
    """Why the key and the events travel unprotected to the API, if they do."""
    if settings.input:
        return None
    if not settings.verify_tls and settings.base_url.startswith("https://"):
        return f"verify_tls=false: the API's certificate is not checked ({settings.base_url})"
    if settings.base_url.startswith("http://") and settings.allow_insecure_http:
        return f"http:// base URL: the admin key is sent in cleartext ({redact(settings.base_url)})"
    return None


def warn_insecure(targets: list[Settings]) -> None:
    """One warning per stream whose key and events travel unprotected (`insecure_transport`)."""
    for settings in targets:
        reason = insecure_transport(settings)
        if reason:
            get_logger().warning("%s", reason, extra={"stream": settings.stream})
