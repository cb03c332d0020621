"""Settings: loaded from flags, the environment and a ``.env`` file, validated at start-up.

``Settings`` holds every setting (``CONNECTYCUBE_*``); ``load_apps`` turns them, and the
optional YAML config file, into the ConnectyCube apps to poll. Every problem is a one-line
``ConfigError`` naming the setting, never the value: an API key never reaches the terminal.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from exporter.api import type_name
from exporter.settingsfile import FileProblem, describe_validation_error, read_small_text, read_yaml

ENV_PREFIX = "CONNECTYCUBE_"
TYPE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_KEY_FILE_BYTES = 4096
MAX_KEY_LENGTH = 512  # ConnectyCube's keys are a few dozen characters


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line fit for the user."""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


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


def _repeated(values: Iterable[str]) -> str:
    """The values given more than once, sorted and comma separated; "" if none."""
    return ", ".join(sorted(value for value, count in Counter(values).items() if count > 1))


def _comma_separated(value: Any) -> Any:
    """``1,2,3`` from the environment or a flag, as well as a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _code_name_pairs(value: Any) -> Any:
    """``1=public,4=broadcast`` from the environment or a flag, as well as a mapping."""
    if isinstance(value, str):
        pairs = [part.partition("=") for part in _comma_separated(value)]
        if any(not equals for _, equals, _ in pairs):
            raise ValueError("expected CODE=NAME pairs, comma separated")
        return {code.strip(): name.strip() for code, _, name in pairs}
    return value


def _check_code(code: int) -> int:
    if code < 1:
        raise ValueError("dialog type codes are positive integers")
    return code


def _check_dialog_types(codes: list[int]) -> list[int]:
    if not codes:
        raise ValueError("at least one dialog type code is needed")
    return list(dict.fromkeys(map(_check_code, codes)))  # drop repeats, keep the order given


def _check_type_names(names: dict[int, str]) -> dict[int, str]:
    for code, name in names.items():
        _check_code(code)
        if not TYPE_NAME.fullmatch(name):
            raise ValueError("a dialog type name is 1 to 64 letters, digits, _ or -")
    return names


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


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None
    return name


def _check_listen_address(address: str) -> str:
    parse_listen_address(address)
    return address


def _any_case(convert: Callable[[str], str]) -> BeforeValidator:
    return BeforeValidator(lambda value: convert(value) if isinstance(value, str) else value)


DialogTypes = Annotated[
    list[int], NoDecode, BeforeValidator(_comma_separated), AfterValidator(_check_dialog_types)
]
TypeNames = Annotated[
    dict[int, str], NoDecode, BeforeValidator(_code_name_pairs), AfterValidator(_check_type_names)
]
ApiUrl = Annotated[str, AfterValidator(_check_api_url)]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], _any_case(str.upper)]
Timeout = Annotated[float, Field(gt=0, le=3600)]


class Settings(BaseSettings):
    """Every setting: ``CONNECTYCUBE_<NAME>`` or ``--<name>``, described by its docstring."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        validate_default=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )

    api_key: SecretStr | None = None
    """admin API key of the app"""
    api_key_file: Path | None = None
    """file holding the API key (Docker or Kubernetes secret)"""
    api_url: ApiUrl = "https://api.connectycube.com"
    """base URL of the ConnectyCube API"""
    app_name: Annotated[str, Field(min_length=1)] = "default"
    """value of the app label"""
    dialog_types: DialogTypes = [1, 2, 3, 4]
    """dialog type codes to break down, comma separated"""
    dialog_type_names: TypeNames = {}
    """label names of dialog type codes, e.g. 1=public,4=broadcast, over the
    REST docs' 1=broadcast,2=group,3=private,4=public,5=meeting"""
    poll_interval_seconds: Annotated[float, Field(ge=0.01, le=86400)] = 60.0
    """seconds between polls"""
    request_timeout_seconds: Timeout = 10.0
    """timeout of one API request, in seconds"""
    timezone: Annotated[str, AfterValidator(_check_zone)] = "UTC"
    """IANA zone of the API's per-day keys; decides which day is today"""
    listen_address: Annotated[str, AfterValidator(_check_listen_address)] = "0.0.0.0:19742"
    """HOST:PORT to serve /metrics on"""
    config_file: Path | None = None
    """YAML file listing several apps"""
    web_config_file: Path | None = None
    """exporter-toolkit web config: TLS and basic auth for /metrics"""
    poll_timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    """deadline of one poll, retries included (default: 0.9 x interval)"""
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    """retries of a request after a transient failure"""
    max_concurrent_requests: Annotated[int, Field(ge=1, le=1024)] = 64
    """cap on API requests in flight, all apps together"""
    max_response_bytes: Annotated[int, Field(ge=1024)] = 1 << 20
    """largest API answer read; a larger one is a failure"""
    max_staleness_seconds: Annotated[float, Field(gt=0)] | None = None
    """stop exporting a count not fetched for this long (default: 5 x interval)"""
    web_max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    """cap on open HTTP connections; when full, the one waiting longest for a
    request gives way to a new one"""
    web_max_client_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    """cap on open HTTP connections from one client address (IPv6: one /64)"""
    web_header_timeout_seconds: Timeout = 10.0
    """seconds a client has to send a request's headers, however it trickles them"""
    web_tls_handshake_timeout_seconds: Timeout = 10.0
    """seconds a client has to complete the TLS handshake"""
    web_idle_timeout_seconds: Annotated[float, Field(gt=0, le=86400)] = 120.0
    """seconds a keep-alive connection may wait for its next request"""
    log_level: LogLevel = "INFO"
    """DEBUG, INFO, WARNING or ERROR"""
    log_format: Annotated[Literal["text", "json"], _any_case(str.lower)] = "text"
    """text or json"""
    shard: Annotated[int, Field(ge=0)] = 0
    """this process's shard, from 0: it polls the apps whose name hashes to it"""
    total_shards: Annotated[int, Field(ge=1, le=1000)] = 1
    """processes that share the apps between them, each with its own shard"""

    @model_validator(mode="after")
    def _within_interval(self) -> Settings:
        interval = env_name("poll_interval_seconds")
        if self.poll_deadline > self.poll_interval_seconds:
            raise ValueError(
                f"{env_name('poll_timeout_seconds')} must not be longer than {interval}, "
                "or polls would pile up"
            )
        if self.max_staleness < self.poll_interval_seconds:
            raise ValueError(
                f"{env_name('max_staleness_seconds')} must be at least {interval}, "
                "or counts would vanish between polls"
            )
        if self.shard >= self.total_shards:
            raise ValueError(
                f"{env_name('shard')} must be below {env_name('total_shards')} "
                f"({self.total_shards}): shards count from 0"
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


def _setting_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else ""
    return f"{env_name(field)} (--{field.replace('_', '-')})" if field else ""


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings; ``overrides`` (command-line flags) win over the environment."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, _setting_name)) from None


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

    @model_validator(mode="after")
    def _unique_names(self) -> _ConfigFile:
        if repeated := _repeated(app.name for app in self.apps):
            raise ValueError(f"app names must be unique, repeated: {repeated}")
        return self


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


def _api_key(
    key: SecretStr | None, key_file: Path | None, file_setting: str, where: str
) -> SecretStr:
    """The key given, or read from ``key_file``, fit for the HTTP header it travels in."""
    if key is not None and key_file is not None:
        raise ConfigError(f"{where}: set only one of the API key and the API key file")
    if key_file is not None:
        where = f"{file_setting} ({key_file})"
        try:
            text = read_small_text(key_file, MAX_KEY_FILE_BYTES).strip()
        except FileProblem as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not text:
            raise ConfigError(f"{where}: the API key is empty")
    else:
        text = key.get_secret_value().strip() if key is not None else ""
        if not text:
            raise ConfigError(f"{where}: an API key is required")
    if len(text) > MAX_KEY_LENGTH:
        raise ConfigError(f"{where}: the API key is longer than {MAX_KEY_LENGTH} characters")
    if not all("!" <= char <= "~" for char in text):
        raise ConfigError(
            f"{where}: the API key must be printable ASCII without white space (an HTTP header)"
        )
    return SecretStr(text)


def _app(settings: Settings, entry: _FileApp, key: SecretStr, where: str) -> AppConfig:
    """The app of a config file's entry, or of the settings alone (an entry with a name only):
    what the entry leaves out, the settings say."""
    url = entry.api_url or settings.api_url
    types = tuple(entry.dialog_types or settings.dialog_types)
    names = {**settings.dialog_type_names, **(entry.dialog_type_names or {})}
    app = AppConfig(entry.name, key, url, types, tuple(sorted(names.items())))
    if repeated := _repeated(app.type_name(code) for code in app.dialog_types):
        raise ConfigError(f"{where}: dialog types must have distinct names, repeated: {repeated}")
    return app


def load_apps(settings: Settings) -> tuple[AppConfig, ...]:
    """The apps to poll: the config file's, or the single app the settings describe."""
    if settings.config_file is None:
        where = f"{env_name('api_key')} or {env_name('api_key_file')}"
        key = _api_key(settings.api_key, settings.api_key_file, env_name("api_key_file"), where)
        single = _FileApp(name=settings.app_name)
        return (_app(settings, single, key, env_name("dialog_type_names")),)
    setting = f"{env_name('config_file')} ({settings.config_file})"
    try:
        parsed = read_yaml(settings.config_file, _ConfigFile)
    except FileProblem as exc:
        raise ConfigError(f"{setting}: {exc}") from None
    apps = []
    for index, entry in enumerate(parsed.apps):
        where = f"{setting}: apps[{index}] ({entry.name})"
        key = _api_key(entry.api_key, entry.api_key_file, where, where)
        apps.append(_app(settings, entry, key, where))
    return tuple(apps)


def shard_of(app_name: str, total_shards: int) -> int:
    """The one shard that polls an app: a stable hash (CRC-32) of its name, the same in
    every process, on every machine and in every release."""
    return zlib.crc32(app_name.encode()) % total_shards
