"""Settings: loaded from flags, the environment and a ``.env`` file, validated at start-up.

``Settings`` holds every setting (``CONNECTYCUBE_*``). ``load_apps`` turns them, and
the optional YAML config file, into the list of ConnectyCube apps to poll. Every
problem is raised as ``ConfigError`` with one line naming the setting, never the
value, so that an API key can never reach the terminal through an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from exporter.api import type_name
from exporter.settingsfile import FileProblem, describe_validation_error, read_small_text, read_yaml

ENV_PREFIX = "CONNECTYCUBE_"
DEFAULT_PORT = 19742
DEFAULT_API_URL = "https://api.connectycube.com"
TYPE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_KEY_FILE_BYTES = 4096
MAX_KEY_LENGTH = 512  # ConnectyCube's keys are a few dozen characters


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts, or raise ValueError."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line fit for the user."""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _split_dialog_types(value: Any) -> Any:
    """Accept ``1,2,3`` from the environment or a flag as well as a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _check_dialog_types(value: list[int]) -> list[int]:
    if not value:
        raise ValueError("at least one dialog type code is needed")
    if any(code < 1 for code in value):
        raise ValueError("dialog type codes are positive integers")
    return list(dict.fromkeys(value))  # drop repeats, keep the order given


def _split_type_names(value: Any) -> Any:
    """Accept ``1=public,4=broadcast`` from the environment or a flag as well as a mapping."""
    if isinstance(value, str):
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        if any(not equals for _, equals, _ in pairs):
            raise ValueError("expected CODE=NAME pairs, comma separated")
        return {code.strip(): name.strip() for code, _, name in pairs}
    return value


def _check_type_names(value: dict[int, str]) -> dict[int, str]:
    for code, name in value.items():
        if code < 1:
            raise ValueError("dialog type codes are positive integers")
        if not TYPE_NAME.fullmatch(name):
            raise ValueError("a dialog type name is 1 to 64 letters, digits, _ or -")
    return value


def _check_api_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except Exception as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("expected an http:// or https:// URL")
    if url.query or url.fragment:
        raise ValueError("the base URL takes no query or fragment")
    return value.rstrip("/")


# Each field's parsing and checks, written once for the settings and the config file.
DialogTypes = Annotated[
    list[int], NoDecode, BeforeValidator(_split_dialog_types), AfterValidator(_check_dialog_types)
]
TypeNames = Annotated[
    dict[int, str], NoDecode, BeforeValidator(_split_type_names), AfterValidator(_check_type_names)
]
ApiUrl = Annotated[str, AfterValidator(_check_api_url)]


class Settings(BaseSettings):
    """Every setting of the exporter; each is ``CONNECTYCUBE_<NAME>`` or ``--<name>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    api_key: SecretStr | None = Field(None, description="admin API key of the app")
    api_key_file: Path | None = Field(
        None, description="file holding the API key (Docker or Kubernetes secret)"
    )
    api_url: ApiUrl = Field(DEFAULT_API_URL, description="base URL of the ConnectyCube API")
    app_name: str = Field("default", min_length=1, description="value of the app label")
    dialog_types: DialogTypes = Field(
        [1, 2, 3, 4], description="dialog type codes to break down, comma separated"
    )
    dialog_type_names: TypeNames = Field(
        {},
        description="label names of dialog type codes, e.g. 1=public,4=broadcast, over the "
        "REST docs' 1=broadcast,2=group,3=private,4=public,5=meeting",
    )
    poll_interval_seconds: float = Field(
        60.0, ge=0.01, le=86400, allow_inf_nan=False, description="seconds between polls"
    )
    request_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="timeout of one API request, in seconds",
    )
    timezone: str = Field(
        "UTC", description="IANA zone of the API's per-day keys; decides which day is today"
    )
    listen_address: str = Field(
        f"0.0.0.0:{DEFAULT_PORT}", description="HOST:PORT to serve /metrics on"
    )
    config_file: Path | None = Field(None, description="YAML file listing several apps")
    web_config_file: Path | None = Field(
        None, description="exporter-toolkit web config: TLS and basic auth for /metrics"
    )
    poll_timeout_seconds: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="deadline of one poll, retries included (default: 0.9 x interval)",
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="retries of a request after a transient failure"
    )
    max_concurrent_requests: int = Field(
        64, ge=1, le=1024, description="cap on API requests in flight, all apps together"
    )
    max_response_bytes: int = Field(
        1 << 20, ge=1024, description="largest API answer read; a larger one is a failure"
    )
    max_staleness_seconds: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="stop exporting a count not fetched for this long (default: 5 x interval)",
    )
    web_max_connections: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="cap on open HTTP connections; when full, the one waiting longest for a "
        "request gives way to a new one",
    )
    web_max_client_connections: int = Field(
        64,
        ge=1,
        le=1_000_000,
        description="cap on open HTTP connections from one client address (IPv6: one /64)",
    )
    web_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="seconds a client has to send a request's headers, however it trickles them",
    )
    web_tls_handshake_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="seconds a client has to complete the TLS handshake",
    )
    web_idle_timeout_seconds: float = Field(
        120.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="seconds a keep-alive connection may wait for its next request",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    log_format: Literal["text", "json"] = Field("text", description="text or json")

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("listen_address")
    @classmethod
    def _valid_listen_address(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @model_validator(mode="after")
    def _deadline_within_interval(self) -> Settings:
        if self.poll_timeout_seconds is not None and (
            self.poll_timeout_seconds > self.poll_interval_seconds
        ):
            raise ValueError(
                f"{env_name('poll_timeout_seconds')} must not be longer than "
                f"{env_name('poll_interval_seconds')}, or polls would pile up"
            )
        if self.max_staleness_seconds is not None and (
            self.max_staleness_seconds < self.poll_interval_seconds
        ):
            raise ValueError(
                f"{env_name('max_staleness_seconds')} must be at least "
                f"{env_name('poll_interval_seconds')}, or counts would vanish between polls"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def poll_deadline(self) -> float:
        """Seconds one poll may take, retries included: always inside the interval."""
        return self.poll_timeout_seconds or 0.9 * self.poll_interval_seconds

    @property
    def max_staleness(self) -> float:
        return self.max_staleness_seconds or 5 * self.poll_interval_seconds


class _FileApp(BaseModel):
    """One entry of ``apps:`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    api_url: ApiUrl | None = None
    dialog_types: DialogTypes | None = None
    dialog_type_names: TypeNames | None = None


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apps: list[_FileApp] = Field(min_length=1)


@dataclass(frozen=True)
class AppConfig:
    """One ConnectyCube app to poll. The key is a ``SecretStr``: its repr hides it."""

    name: str
    api_key: SecretStr
    api_url: str
    dialog_types: tuple[int, ...]
    # (code, name) pairs over the defaults; a tuple, so that the config stays hashable
    dialog_type_names: tuple[tuple[int, str], ...] = ()

    def type_name(self, code: int) -> str:
        return type_name(code, self.dialog_type_names)


def _setting_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else ""
    return f"{env_name(field)} (--{field.replace('_', '-')})" if field else ""


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings; ``overrides`` (command-line flags) win over the environment."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, _setting_name)) from None


def _read_text(path: Path, setting: str) -> str:
    try:
        return read_small_text(path, MAX_KEY_FILE_BYTES)
    except FileProblem as exc:
        raise ConfigError(f"{setting} ({path}): {exc}") from None


def read_key_file(path: Path, setting: str) -> SecretStr:
    return _checked_key(_read_text(path, setting), f"{setting} ({path})")


def _pick_key(
    api_key: SecretStr | None, api_key_file: Path | None, setting: str, where: str
) -> SecretStr:
    if api_key is not None and api_key_file is not None:
        raise ConfigError(f"{where}: set only one of the API key and the API key file")
    if api_key_file is not None:
        return read_key_file(api_key_file, setting)
    if api_key is None or not api_key.get_secret_value().strip():
        raise ConfigError(f"{where}: an API key is required")
    return _checked_key(api_key.get_secret_value(), where)


def _checked_key(key: str, where: str) -> SecretStr:
    key = key.strip()
    if not key:
        raise ConfigError(f"{where}: the API key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ConfigError(f"{where}: the API key is longer than {MAX_KEY_LENGTH} characters")
    # It travels in an HTTP header: white space or control characters would break it.
    if not key.isascii() or not key.isprintable() or any(char.isspace() for char in key):
        raise ConfigError(
            f"{where}: the API key must be printable ASCII without white space (an HTTP header)"
        )
    return SecretStr(key)


def _read_config_file(path: Path) -> _ConfigFile:
    setting = f"{env_name('config_file')} ({path})"
    document = read_yaml(path, lambda problem: ConfigError(f"{setting}: {problem}"))
    try:
        parsed = _ConfigFile.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{setting}: {describe_validation_error(exc)}") from None
    names = [app.name for app in parsed.apps]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{setting}: app names must be unique, repeated: {', '.join(repeated)}")
    return parsed


def _named_types(
    types: tuple[int, ...], names: Mapping[int, str], where: str
) -> tuple[tuple[int, str], ...]:
    """The names that differ from the defaults; two types of one app may not share one."""
    app = AppConfig("", SecretStr(""), "", types, tuple(sorted(names.items())))
    labels = [app.type_name(code) for code in types]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(
            f"{where}: dialog types must have distinct names, repeated: {', '.join(repeated)}"
        )
    return app.dialog_type_names


def load_apps(settings: Settings) -> tuple[AppConfig, ...]:
    """The apps to poll: the config file's, or the single app the settings describe."""
    if settings.config_file is None:
        key = _pick_key(
            settings.api_key,
            settings.api_key_file,
            env_name("api_key_file"),
            f"{env_name('api_key')} or {env_name('api_key_file')}",
        )
        types = tuple(settings.dialog_types)
        return (
            AppConfig(
                name=settings.app_name,
                api_key=key,
                api_url=settings.api_url,
                dialog_types=types,
                dialog_type_names=_named_types(
                    types, settings.dialog_type_names, env_name("dialog_type_names")
                ),
            ),
        )
    parsed = _read_config_file(settings.config_file)
    apps = []
    for index, entry in enumerate(parsed.apps):
        where = f"{env_name('config_file')} ({settings.config_file}): apps[{index}] ({entry.name})"
        types = tuple(entry.dialog_types or settings.dialog_types)
        names = {**settings.dialog_type_names, **(entry.dialog_type_names or {})}
        apps.append(
            AppConfig(
                name=entry.name,
                api_key=_pick_key(entry.api_key, entry.api_key_file, where, where),
                api_url=entry.api_url or settings.api_url,
                dialog_types=types,
                dialog_type_names=_named_types(types, names, where),
            )
        )
    return tuple(apps)
