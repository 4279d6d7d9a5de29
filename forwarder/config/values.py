"""The values settings are made of, each checked where it is parsed: durations, sizes,
lists from the environment, stream names, the API base URL, listen addresses, admin keys, and
the rules that weigh one setting against another (cleartext http://, tenant flags). A bad value
is a `ValueError` (pydantic names the setting) or a `ConfigError` naming it."""

from __future__ import annotations

import ipaddress
import math
import re
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import NoDecode

from forwarder.errors import ConfigError
from forwarder.timeparse import MAX_AHEAD, format_when, parse_duration, parse_when

# Ten years: longer is a typo, and would overflow the waits (threading.TIMEOUT_MAX) later.
MAX_DURATION = 10 * 365 * 86_400.0
MIN_INTERVAL = 1.0  # a shorter interval is a busy loop against the API's rate limit


def _duration(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    # nan and inf come in as TOML floats; nan compares false with every bound, so test it.
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is not a duration of at most 10 years (e.g. 30s, 10m, 1h)")
    return seconds


Duration = Annotated[float, BeforeValidator(_duration)]

_SIZE = re.compile(r"^\s*(\d+)\s*(?:([KMG])i?B?|B)?\s*$", re.IGNORECASE)


def _size(value: Any) -> Any:
    """Bytes, or `512KB`, `64MB`, `1GB` (binary multiples: 1 MB is 1,048,576 bytes)."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a size (e.g. 64MB, 512KB or bytes)")
        unit = (match.group(2) or "").upper()
        return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]
    return value


ByteSize = Annotated[int, BeforeValidator(_size)]


def validate_base_url(value: str) -> str:
    """The API base URL checked as far as it can be without a request (scheme, host, port);
    every rule about it lives here. Returns it without a trailing slash."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("https", "http"):
        raise ValueError("must be an http(s) URL such as https://api.openai.com/v1")
    host = parts.hostname
    if not host:
        raise ValueError(f"{value!r} has no host (e.g. https://api.openai.com/v1)")
    if not parts.netloc.startswith("[") and not re.fullmatch(r"[\w.-]+", host):
        raise ValueError(f"{value!r} has an invalid host name {host!r}")
    if port == 0:
        raise ValueError(f"{value!r} has port 0 (a port is 1-65535)")
    return value.rstrip("/")


def _split_list(value: Any) -> Any:
    """Accept a comma-separated string where a list is expected (handy in env vars)."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError("is neither a JSON list nor a comma-separated list") from None
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]


STREAM_NAME = r"^[A-Za-z0-9_.:@-]{1,64}$"


def check_start_at(value: str) -> str:
    """A time a stream with no checkpoint starts at: not in the future (beyond the API's one
    day of clock skew), where it would collect nothing, silently, until that day."""
    when = parse_when(value)
    if when > time.time() + MAX_AHEAD:
        raise ValueError(
            f"{value!r} is in the future ({format_when(when)}); a stream starts at a past time "
            "(e.g. 24h, 7d or 2026-01-01)"
        )
    return value


def check_stream_name(name: str) -> str:
    """A stream name becomes part of paths and keys through `{stream}` in sink URLs: no path
    separator (the pattern) and no `.` or `..`, which would leave the sink's directory."""
    if not name.strip("."):
        raise ValueError("must not be made of dots only ('.' and '..' would name a directory)")
    return name


StreamName = Annotated[str, Field(pattern=STREAM_NAME), AfterValidator(check_stream_name)]


def clean_key(raw: str, setting: str) -> str:
    """The key without surrounding blanks and its one trailing newline (as `echo` and
    editors leave it). A second line or any other non-printable character is refused here,
    naming neither the key nor the character: sent on, it would fail in the HTTP header with
    the key in the message."""
    key = raw.strip(" \t")
    key = key[:-2] if key.endswith("\r\n") else key[:-1] if key.endswith("\n") else key
    key = key.strip(" \t")
    if any(not (0x21 <= ord(char) <= 0x7E) for char in key):
        raise ConfigError(
            f"invalid setting {setting}: the key must be one line of printable characters "
            "(found a line break, a control character or a non-ASCII character; not shown)"
        )
    return key


LOOPBACK_HOSTS = {"localhost", "localhost.localdomain"}


def check_tenant_flags(with_tenant: bool, tenant_only: bool, where: str) -> None:
    if with_tenant and tenant_only:
        raise ConfigError(
            f"invalid setting {where}with_tenant: with_tenant and tenant_only exclude each other "
            "(--with-tenant adds a tenant stream beside this one, --tenant-only makes this one "
            "the tenant stream)"
        )


def check_cleartext(url: str, allow_insecure_http: bool, where: str) -> None:
    """Refuse `http://` (the key would go out in cleartext) except to this machine, unless
    `allow_insecure_http`: OPENAI_BASE_URL is shared with the OpenAI SDK, so a proxy set up
    for other tools must not receive the admin key by accident."""
    if not url.startswith("http://") or allow_insecure_http:
        return
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in LOOPBACK_HOSTS
    if not loopback:
        raise ConfigError(
            f"invalid setting {where}base_url: http:// would send the admin key in cleartext "
            f"to {host or url}; use https:// (or --allow-insecure-http / "
            "allow_insecure_http = true if you must)"
        )


def listen_address(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT` or `:PORT` (loopback: 127.0.0.1) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"[{host}] is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port}")
    return host or "127.0.0.1", int(port)
