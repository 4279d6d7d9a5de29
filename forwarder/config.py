"""Settings from CLI flags, environment and a TOML file (in that precedence), validated once
with pydantic-settings; an invalid value becomes one line that names the setting."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from forwarder.errors import ConfigError
from forwarder.timeparse import parse_duration, parse_when

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SCHEMAS_HINT = "ecs, ocsf, raw or a registered mapper"


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


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


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "openai-audit-forwarder" / "state.db"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


STREAM_NAME = r"^[A-Za-z0-9_.:@-]{1,64}$"


class StreamSettings(BaseModel):
    """One `[[streams]]` entry: an organization (or its tenant-scoped events) collected with
    its own key, filters and checkpoint. Unset values fall back to the top-level settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=STREAM_NAME)
    admin_key_env: str | None = None
    admin_key_file: Path | None = None
    org_id: str | None = None
    base_url: str | None = None
    sinks: StrList | None = None
    start_at: str | None = None
    event_types: StrList | None = None
    project_ids: StrList | None = None
    actor_ids: StrList | None = None
    actor_emails: StrList | None = None
    resource_ids: StrList | None = None
    tenant_only: bool | None = None
    with_tenant: bool | None = None

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        return None if value is None else validate_base_url(value)


class Settings(BaseSettings):
    """Every setting of the forwarder. Durations accept `30s`, `10m`, `1h`, `7d`."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIT_FORWARDER_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
        case_sensitive=False,
    )

    admin_key: SecretStr | None = Field(
        None, validation_alias=_env("admin_key", "OPENAI_ADMIN_KEY", "AUDIT_FORWARDER_ADMIN_KEY")
    )
    admin_key_file: Path | None = None
    base_url: str = Field(
        DEFAULT_BASE_URL,
        validation_alias=_env("base_url", "OPENAI_BASE_URL", "AUDIT_FORWARDER_BASE_URL"),
    )
    org_id: str | None = Field(
        None, validation_alias=_env("org_id", "OPENAI_ORG_ID", "AUDIT_FORWARDER_ORG_ID")
    )
    stream: str = Field("default", pattern=STREAM_NAME)
    input: str | None = None
    sinks: StrList = Field(default_factory=list)
    output_schema: str = Field(
        "ecs", validation_alias=_env("schema", "output_schema", "AUDIT_FORWARDER_SCHEMA")
    )
    state: Path | None = None
    dead_letter: Path | None = None
    interval: Duration = 60.0
    lag: Duration = 60.0
    overlap: Duration = 600.0
    window: Duration = 3600.0
    start_at: str = "24h"
    batch_size: int = Field(1000, ge=1, le=100_000)
    page_size: int = Field(100, ge=1, le=100)
    request_timeout: Duration = 30.0
    request_retries: int = Field(8, ge=0, le=100)
    max_response_size: ByteSize = Field(64 << 20, ge=1024)
    sink_retry_timeout: Duration = 300.0
    verify_tls: bool = True
    ca_file: Path | None = None
    event_types: StrList = Field(default_factory=list)
    project_ids: StrList = Field(default_factory=list)
    actor_ids: StrList = Field(default_factory=list)
    actor_emails: StrList = Field(default_factory=list)
    resource_ids: StrList = Field(default_factory=list)
    tenant_only: bool = False
    with_tenant: bool = False
    log_format: Literal["text", "json"] = "text"
    verbosity: int = Field(0, ge=-2, le=3)
    metrics_addr: str | None = None
    health_max_age: Duration | None = None
    streams: list[StreamSettings] = Field(default_factory=list)

    @field_validator("start_at")
    @classmethod
    def _check_start_at(cls, value: str) -> str:
        parse_when(value)
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return validate_base_url(value)

    @field_validator("interval", "window", "request_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _CONFIG_FILE[0] is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_CONFIG_FILE[0]))
        return tuple(sources)

    @field_validator("streams")
    @classmethod
    def _unique_streams(cls, value: list[StreamSettings]) -> list[StreamSettings]:
        names = [stream.name for stream in value]
        if len(set(names)) != len(names):
            raise ValueError("stream names must be unique")
        return value

    @field_validator("metrics_addr")
    @classmethod
    def _check_metrics_addr(cls, value: str | None) -> str | None:
        if value is not None:
            port = value.rpartition(":")[2]
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464")
        return value

    # Derived values -------------------------------------------------------------------

    def for_stream(self, stream: StreamSettings) -> Settings:
        """The settings of one configured stream: its own values over the top-level ones."""
        update: dict[str, Any] = {"stream": stream.name, "streams": []}
        for name in StreamSettings.model_fields.keys() - {"name", "admin_key_env"}:
            value = getattr(stream, name)
            if value is not None:
                update[name] = value.rstrip("/") if name == "base_url" else value
        if stream.admin_key_env is not None:
            key = os.environ.get(stream.admin_key_env, "").strip()
            if not key:
                raise ConfigError(
                    f"invalid setting streams.{stream.name}.admin_key_env: "
                    f"environment variable {stream.admin_key_env} is not set"
                )
            update["admin_key"] = SecretStr(key)
            update["admin_key_file"] = None
        elif stream.admin_key_file is not None:
            update["admin_key"] = None
        return self.model_copy(update=update)

    def with_tenant_companion(self) -> list[Settings]:
        """This stream, plus (with `with_tenant`) a `NAME-tenant` stream for the tenant-scoped
        events, which the API lists only with tenant_only=true. An event-type filter is split
        between the two; a side left with no type of its own is not run."""
        if not self.with_tenant or self.tenant_only or self.input:
            return [self]
        from forwarder.sources.openai_api import is_tenant_scoped

        org_types = [t for t in self.event_types if not is_tenant_scoped(t)]
        tenant_types = [t for t in self.event_types if is_tenant_scoped(t)]
        targets = []
        if not self.event_types or org_types:
            targets.append(self.model_copy(update={"event_types": org_types}))
        if not self.event_types or tenant_types:
            targets.append(
                self.model_copy(
                    update={
                        "stream": f"{self.stream}-tenant",
                        "tenant_only": True,
                        "event_types": tenant_types,
                    }
                )
            )
        return targets

    @property
    def health_threshold(self) -> float:
        """How old the last successful sweep may be before /healthz fails."""
        if self.health_max_age is not None:
            return self.health_max_age
        return max(3 * self.interval, 300.0)

    @property
    def state_path(self) -> Path:
        return self.state or default_state_path()

    @property
    def dead_letter_dir(self) -> Path:
        return self.dead_letter or self.state_path.parent / "dead-letter"

    def resolve_admin_key(self) -> str | None:
        """The key from `admin_key_file` (Docker/Kubernetes secrets) or the environment."""
        if self.admin_key_file is not None:
            try:
                key = self.admin_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"invalid setting admin_key_file: cannot read {self.admin_key_file} "
                    f"({exc.strerror or exc})"
                ) from None
            if not key:
                raise ConfigError(f"invalid setting admin_key_file: {self.admin_key_file} is empty")
            return key
        if self.admin_key is not None and self.admin_key.get_secret_value().strip():
            return self.admin_key.get_secret_value().strip()
        return None

    def filters(self) -> dict[str, Any]:
        return {
            "event_types": self.event_types,
            "project_ids": self.project_ids,
            "actor_ids": self.actor_ids,
            "actor_emails": self.actor_emails,
            "resource_ids": self.resource_ids,
            "tenant_only": self.tenant_only,
        }


# The TOML file named by --config; settings_customise_sources is a classmethod, so the path
# reaches it here for the duration of one load.
_CONFIG_FILE: list[Path | None] = [None]


def load_settings(config_file: Path | None = None, **cli: Any) -> Settings:
    """Build the settings; `cli` holds only the flags the user actually gave."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"invalid setting config: {config_file} is not a readable file")
    _CONFIG_FILE[0] = config_file
    try:
        return Settings(**{k: v for k, v in cli.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except ValueError as exc:  # TOML syntax errors and the like
        raise ConfigError(f"invalid config file {config_file}: {_first_line(exc)}") from None
    finally:
        _CONFIG_FILE[0] = None


def describe_validation_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    if name == "output_schema":
        name = "schema"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid setting {name}: {_first_line(message)}{more}"


def _first_line(value: object) -> str:
    return str(value).strip().splitlines()[0] if str(value).strip() else repr(value)
