"""Settings from CLI flags, environment and a TOML file (in that precedence), validated once
with pydantic-settings; an invalid value becomes one line that names the setting. The values
they are made of are checked in `values`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from forwarder.config.values import (
    MIN_INTERVAL,
    ByteSize,
    Duration,
    StreamName,
    StrList,
    check_cleartext,
    check_start_at,
    check_tenant_flags,
    clean_key,
    listen_address,
    validate_base_url,
)
from forwarder.errors import ConfigError
from forwarder.logs import register_secret
from mappings.ocsf_versions import check_version

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SCHEMAS_HINT = "ecs, ocsf, raw or a registered mapper"


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "openai-audit-forwarder" / "state.db"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class StreamSettings(BaseModel):
    """One `[[streams]]` entry: an organization (or its tenant-scoped events) collected with
    its own key, filters and checkpoint. Unset values fall back to the top-level settings."""

    model_config = ConfigDict(extra="forbid")

    name: StreamName
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

    @field_validator("start_at")
    @classmethod
    def _check_start_at(cls, value: str | None) -> str | None:
        return None if value is None else check_start_at(value)


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
    stream: StreamName = "default"
    input: str | None = None
    sinks: StrList = Field(default_factory=list)
    output_schema: str = Field(
        "ecs", validation_alias=_env("schema", "output_schema", "AUDIT_FORWARDER_SCHEMA")
    )
    state: Path | None = None
    dead_letter: Path | None = None
    original: bool = False  # event.original (ECS) / raw_data (OCSF) in every document
    # OCSF version of `ocsf` documents (None: 1.8.0; Security Lake sinks: the newest it takes)
    ocsf_version: str | None = None
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
    allow_insecure_http: bool = False
    ca_file: Path | None = None
    event_types: StrList = Field(default_factory=list)
    project_ids: StrList = Field(default_factory=list)
    actor_ids: StrList = Field(default_factory=list)
    actor_emails: StrList = Field(default_factory=list)
    resource_ids: StrList = Field(default_factory=list)
    tenant_only: bool = False
    with_tenant: bool = True
    log_format: Literal["text", "json"] = "text"
    verbosity: int = Field(0, ge=-2, le=3)
    metrics_addr: str | None = None
    health_max_age: Duration | None = None
    streams: list[StreamSettings] = Field(default_factory=list)
    _tenant_companion: bool = PrivateAttr(False)

    @field_validator("start_at")
    @classmethod
    def _check_start_at(cls, value: str) -> str:
        return check_start_at(value)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return validate_base_url(value)

    @field_validator("ocsf_version")
    @classmethod
    def _check_ocsf_version(cls, value: str | None) -> str | None:
        return None if value is None else check_version(value)

    # These two weigh one setting against another; a ConfigError passes through pydantic
    # as it is, so the message names the setting (a ValueError here would name none).
    @model_validator(mode="after")
    def _refuse_cleartext_base_url(self) -> Settings:
        check_cleartext(self.base_url, self.allow_insecure_http, "")
        return self

    @model_validator(mode="after")
    def _tenant_flags_exclusive(self) -> Settings:
        # with_tenant is on by default: only a with_tenant the user gave conflicts.
        if "with_tenant" in self.model_fields_set:
            check_tenant_flags(self.with_tenant, self.tenant_only, "")
        return self

    @field_validator("interval", "window", "request_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value

    @field_validator("interval")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if value < MIN_INTERVAL:
            raise ValueError(f"must be at least {MIN_INTERVAL:g}s")
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
        if settings_cls.model_config.get("toml_file") is not None:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @classmethod
    def reading(cls, config_file: Path) -> type[Settings]:
        """These settings with the TOML file `config_file` below flags and environment: a class
        of its own per load, so that no load ever sees another's file."""
        config = SettingsConfigDict(toml_file=config_file)
        return type("FileSettings", (cls,), {"model_config": config, "__module__": __name__})

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
            listen_address(value)
        return value

    # Derived values -------------------------------------------------------------------

    def for_stream(self, stream: StreamSettings) -> Settings:
        """The settings of one configured stream: its own values over the top-level ones."""
        update: dict[str, Any] = {"stream": stream.name, "streams": []}
        for name in StreamSettings.model_fields.keys() - {"name", "admin_key_env"}:
            value = getattr(stream, name)
            if value is not None:
                update[name] = value.rstrip("/") if name == "base_url" else value
        where = f"streams.{stream.name}."
        check_cleartext(update.get("base_url", self.base_url), self.allow_insecure_http, where)
        # Both in one entry conflict; a top-level with_tenant is the default a tenant_only
        # entry overrides.
        check_tenant_flags(bool(stream.with_tenant), bool(stream.tenant_only), where)
        if stream.admin_key_env is not None:
            key = os.environ.get(stream.admin_key_env, "")
            register_secret(key)
            key = clean_key(key, f"streams.{stream.name}.admin_key_env")
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
            companion = self.model_copy(
                update={
                    "stream": f"{self.stream}-tenant",
                    "tenant_only": True,
                    "event_types": tenant_types,
                }
            )
            companion._tenant_companion = True
            targets.append(companion)
        return targets

    @property
    def tenant_companion(self) -> bool:
        """Whether this is the `NAME-tenant` stream that `with_tenant` adds: a refused
        tenant listing is then a warning, retried hourly, not a failure."""
        return self._tenant_companion

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

    @property
    def spool_dir(self) -> Path:
        """Where sinks keep events before sending them (the S3 Parquet spool): beside the
        state, where `checkpoint show` finds it."""
        return self.state_path.parent / "spool"

    def resolve_admin_key(self) -> str | None:
        """The key from `admin_key_file` (Docker/Kubernetes secrets) or the environment."""
        if self.admin_key_file is not None:
            try:
                raw = self.admin_key_file.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise ConfigError(
                    f"invalid setting admin_key_file: cannot read {self.admin_key_file} "
                    f"({exc.strerror or exc})"
                ) from None
            register_secret(raw)
            key = clean_key(raw, "admin_key_file")
            if not key:
                raise ConfigError(f"invalid setting admin_key_file: {self.admin_key_file} is empty")
            return key
        if self.admin_key is not None:
            raw = self.admin_key.get_secret_value()
            register_secret(raw)
            return clean_key(raw, "admin_key") or None
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


def load_settings(config_file: Path | None = None, **cli: Any) -> Settings:
    """Build the settings; `cli` holds only the flags the user actually gave."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"invalid setting config: {config_file} is not a readable file")
    settings_cls = Settings if config_file is None else Settings.reading(config_file)
    try:
        return settings_cls(**{k: v for k, v in cli.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except ValueError as exc:  # TOML syntax errors and the like
        raise ConfigError(f"invalid config file {config_file}: {_first_line(exc)}") from None


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
