"""The forwarder's configuration: `settings` (the pydantic model and `load_settings`: flags,
environment and a TOML file), `values` (what a setting's value may be, each checked where it is
parsed) and `streams` (the streams one run collects). The names other modules use are here."""

from __future__ import annotations

from forwarder.config.settings import Settings, StreamSettings, load_settings
from forwarder.config.streams import (
    insecure_transport,
    stream_groups,
    stream_targets,
    warn_insecure,
)
from forwarder.config.values import listen_address

__all__ = [
    "Settings",
    "StreamSettings",
    "insecure_transport",
    "listen_address",
    "load_settings",
    "stream_groups",
    "stream_targets",
    "warn_insecure",
]
