"""RFC 5424 message building for the syslog sinks: PRI (facility and per-event severity),
timestamp, header fields, the `[openai@32473 id=".." type=".."]` SD element and the MSG body."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from forwarder.sinks.base import Record

FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}

# authpriv: these are security/authorization events carrying e-mail and IP addresses; stock
# rsyslog/syslog-ng configurations route authpriv to a root-only file (auth.log / secure) and
# keep it out of the world- or adm-readable general log.
DEFAULT_FACILITY = "authpriv"

WARNING, NOTICE, INFORMATIONAL = 4, 5, 6
SEVERITY_NAMES = {WARNING: "warning", NOTICE: "notice", INFORMATIONAL: "informational"}

# Severity by event type: exact types first, then the type's last dotted word (its verb).
SEVERITY_BY_TYPE: dict[str, int] = {
    "tenant.session_revocation.started": NOTICE,
    "tenant.scim.deletion.requested": NOTICE,
}
SEVERITY_BY_VERB: dict[str, int] = {
    "failed": WARNING,
    "deleted": NOTICE,
    "removed": NOTICE,
    "revoked": NOTICE,
    "deactivated": NOTICE,
    "disabled": NOTICE,
    "archived": NOTICE,
    "detached": NOTICE,
    "unbound_from_resource": NOTICE,
}

DEFAULT_SD_ID = "openai@32473"
NILVALUE = "-"


def severity_for(event_type: str) -> int:
    """The syslog severity of an event type (informational unless the tables say otherwise)."""
    exact = SEVERITY_BY_TYPE.get(event_type)
    if exact is not None:
        return exact
    return SEVERITY_BY_VERB.get(event_type.rpartition(".")[2], INFORMATIONAL)


def parse_facility(value: str) -> int:
    """A facility name (local0, authpriv, ...) or number 0..23; ValueError otherwise."""
    lowered = value.strip().lower()
    if lowered in FACILITIES:
        return FACILITIES[lowered]
    if lowered.isdigit() and 0 <= int(lowered) <= 23:
        return int(lowered)
    raise ValueError(f"facility {value!r} is not a name ({', '.join(FACILITIES)}) or 0..23")


def printable_ascii(value: str, limit: int) -> str:
    """Keep only PRINTUSASCII (33..126) and cut to `limit`; NILVALUE if nothing is left."""
    if value.isascii() and value.isprintable() and " " not in value:
        kept = value
    else:
        kept = "".join(ch for ch in value if 33 <= ord(ch) <= 126)
    return kept[:limit] or NILVALUE


_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_TEXT = {"\n": "\\n", "\r": "\\r"}


def escape_param(value: str) -> str:
    """Escape an SD-PARAM value: `"`, `\\` and `]` get a backslash (RFC 5424 section 6.3.3);
    CR and LF are written as `\\r` and `\\n`, other control characters (NUL, ...) as a space,
    as in CEF: receivers that split on CR or LF (Splunk's LINE_BREAKER) or stop at NUL must
    not see them raw."""
    if '"' in value or "\\" in value or "]" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    if not value.isprintable() and _CONTROLS.search(value):
        value = _CONTROLS.sub(lambda m: _CONTROL_TEXT.get(m.group(), " "), value)
    return value


def rfc3339(seconds: int) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp with a Z (the API has one-second resolution)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class MessageBuilder:
    """Builds `<PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID [SD] MSG` as bytes.

    Everything that depends only on the sink settings, the event type or the second is
    computed once and cached, so that per event only the id and the body are new.
    """

    def __init__(
        self,
        *,
        facility: int,
        hostname: str,
        app_name: str,
        procid: str,
        body: Callable[[Record, int], bytes],
        sd_id: str = DEFAULT_SD_ID,
    ) -> None:
        self._facility = facility
        self._body = body
        self._middle = (
            " "
            + printable_ascii(hostname, 255)
            + " "
            + printable_ascii(app_name, 48)
            + " "
            + printable_ascii(procid, 128)
            + " "
        ).encode("ascii")
        self._sd_id = printable_ascii(sd_id, 32)
        self._types: dict[str, tuple[bytes, bytes, bytes, int]] = {}
        self._stamps: dict[int, bytes] = {}

    def _type_parts(self, event_type: str) -> tuple[bytes, bytes, bytes, int]:
        severity = severity_for(event_type)
        parts = (
            b"<%d>1 " % (self._facility * 8 + severity),
            f'{printable_ascii(event_type, 32)} [{self._sd_id} id="'.encode(),
            f'" type="{escape_param(event_type)}"] '.encode(),
            severity,
        )
        if len(self._types) > 4096:
            self._types.clear()
        self._types[event_type] = parts
        return parts

    def _stamp(self, seconds: int) -> bytes:
        stamp = rfc3339(seconds).encode("ascii")
        if len(self._stamps) > 65536:
            self._stamps.clear()
        self._stamps[seconds] = stamp
        return stamp

    def build(self, record: Record) -> bytes:
        """The message bytes; raises ValueError/TypeError/OverflowError for unrenderable input."""
        pri, msgid_sd, sd_type, severity = self._types.get(record.type) or self._type_parts(
            record.type
        )
        stamp = self._stamps.get(record.effective_at) or self._stamp(record.effective_at)
        return b"".join(
            (
                pri,
                stamp,
                self._middle,
                msgid_sd,
                escape_param(record.id).encode(),
                sd_type,
                self._body(record, severity),
            )
        )
