"""Loading and validating settings: one case per fixture, one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_apps, load_settings
from tests.conftest import SECRET_KEY

pytestmark = pytest.mark.usefixtures("clean_env")


def apps_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **flags: str):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(flags)
    return settings, load_apps(settings)


def config_error(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **flags: str) -> str:
    with pytest.raises(ConfigError) as caught:
        apps_from(monkeypatch, env, **flags)
    message = str(caught.value)
    assert "\n" not in message
    assert SECRET_KEY not in message
    return message


def test_defaults_with_only_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    settings, apps = apps_from(monkeypatch, {"CONNECTYCUBE_API_KEY": SECRET_KEY})
    assert settings.poll_interval_seconds == 60
    assert settings.timezone == "UTC"
    assert settings.listen_address == "0.0.0.0:19742"
    [app] = apps
    assert app.name == "default"
    assert app.api_url == "https://api.connectycube.com"
    assert app.dialog_types == (1, 2, 3, 4)
    assert app.api_key.get_secret_value() == SECRET_KEY


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings, [app] = apps_from(
        monkeypatch,
        {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_POLL_INTERVAL_SECONDS": "30"},
        poll_interval_seconds="15",
        app_name="prod",
    )
    assert settings.poll_interval_seconds == 15
    assert app.name == "prod"


def test_dot_env_file_is_read(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        f"CONNECTYCUBE_API_KEY={SECRET_KEY}\nCONNECTYCUBE_TIMEZONE=Europe/Kyiv\nOTHER=1\n"
    )
    settings, [app] = apps_from(monkeypatch, {})
    assert settings.timezone == "Europe/Kyiv"
    assert app.api_key.get_secret_value() == SECRET_KEY


def test_dialog_types_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    _, [app] = apps_from(
        monkeypatch, {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_DIALOG_TYPES": "2, 5,2,17"}
    )
    assert app.dialog_types == (2, 5, 17)


def test_key_file_is_read_and_trimmed(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / "key").write_text(SECRET_KEY + "\n")
    _, [app] = apps_from(monkeypatch, {"CONNECTYCUBE_API_KEY_FILE": str(clean_env / "key")})
    assert app.api_key.get_secret_value() == SECRET_KEY


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "CONNECTYCUBE_API_KEY or CONNECTYCUBE_API_KEY_FILE: an API key is required"),
        (
            {"CONNECTYCUBE_API_KEY_FILE": "missing-file"},
            "CONNECTYCUBE_API_KEY_FILE (missing-file): cannot read the file "
            "(No such file or directory)",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_POLL_INTERVAL_SECONDS": "soon"},
            "CONNECTYCUBE_POLL_INTERVAL_SECONDS (--poll-interval-seconds): Input should be a "
            "valid number",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_POLL_INTERVAL_SECONDS": "0"},
            "CONNECTYCUBE_POLL_INTERVAL_SECONDS (--poll-interval-seconds): Input should be "
            "greater than or equal to 0.01",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_TIMEZONE": "Mars/Olympus"},
            "CONNECTYCUBE_TIMEZONE (--timezone): unknown IANA time zone 'Mars/Olympus'",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_LISTEN_ADDRESS": "localhost"},
            "CONNECTYCUBE_LISTEN_ADDRESS (--listen-address): expected HOST:PORT",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_API_URL": "ftp://example.com"},
            "CONNECTYCUBE_API_URL (--api-url): expected an http:// or https:// URL",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_DIALOG_TYPES": "2,x"},
            "CONNECTYCUBE_DIALOG_TYPES (--dialog-types): Input should be a valid integer",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_LOG_LEVEL": "loud"},
            "CONNECTYCUBE_LOG_LEVEL (--log-level): Input should be",
        ),
        (
            {"CONNECTYCUBE_API_KEY": f"{SECRET_KEY} {SECRET_KEY}"},
            "the API key must be printable ASCII without white space",
        ),
        (
            {"CONNECTYCUBE_API_KEY": "ключ-доступа"},
            "the API key must be printable ASCII without white space",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_POLL_INTERVAL_SECONDS": "inf"},
            "CONNECTYCUBE_POLL_INTERVAL_SECONDS (--poll-interval-seconds): Input should be a "
            "finite number",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_MAX_STALENESS_SECONDS": "5"},
            "CONNECTYCUBE_MAX_STALENESS_SECONDS must be at least",
        ),
        (
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_API_URL": "https://x.example/?a=1"},
            "CONNECTYCUBE_API_URL (--api-url): the base URL takes no query or fragment",
        ),
    ],
)
def test_bad_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    assert expected in config_error(monkeypatch, env)


def test_key_and_key_file_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    (clean_env / "key").write_text(SECRET_KEY)
    env = {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_API_KEY_FILE": str(clean_env / "key")}
    assert "set only one of" in config_error(monkeypatch, env)


def test_empty_key_file_is_refused(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / "key").write_text("\n")
    message = config_error(monkeypatch, {"CONNECTYCUBE_API_KEY_FILE": str(clean_env / "key")})
    assert message.endswith("the API key is empty")


MULTI_APP = """
apps:
  - name: prod
    api_key_file: {key_file}
    dialog_types: [2, 3]
  - name: staging
    api_key: staging-key
    api_url: http://staging.example:8080/
"""


def test_config_file_lists_several_apps(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / "prod.key").write_text(SECRET_KEY)
    config = clean_env / "apps.yml"
    config.write_text(MULTI_APP.format(key_file=clean_env / "prod.key"))
    _, (prod, staging) = apps_from(
        monkeypatch,
        {"CONNECTYCUBE_CONFIG_FILE": str(config), "CONNECTYCUBE_DIALOG_TYPES": "1,4"},
    )
    assert (prod.name, prod.api_key.get_secret_value(), prod.dialog_types) == (
        "prod",
        SECRET_KEY,
        (2, 3),
    )
    assert prod.api_url == "https://api.connectycube.com"
    # Settings outside the file are the defaults of every app that leaves them out.
    assert staging.dialog_types == (1, 4)
    assert staging.api_url == "http://staging.example:8080"
    assert staging.api_key.get_secret_value() == "staging-key"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("apps: [name: prod\n", "invalid YAML at line"),
        ("apps: []\n", "apps: List should have at least 1 item"),
        ("[]\n", "Input should be a valid dictionary"),
        ("apps:\n  - 5\n", "apps[0]: Input should be a valid dictionary"),
        ("apps:\n  - name: a\n", "apps[0] (a): an API key is required"),
        (
            "apps:\n  - name: a\n    api_key: k\n    dialog_type: [1]\n",
            "apps[0].dialog_type: unknown key",
        ),
        (
            "apps:\n  - name: a\n    api_key: k\n    dialog_types: [0]\n",
            "apps[0].dialog_types: dialog type codes are positive integers",
        ),
        (
            "apps:\n  - {name: a, api_key: k}\n  - {name: a, api_key: j}\n",
            "app names must be unique, repeated: a",
        ),
    ],
)
def test_bad_config_file_names_the_place(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path, content: str, expected: str
) -> None:
    config = clean_env / "apps.yml"
    config.write_text(content)
    message = config_error(monkeypatch, {"CONNECTYCUBE_CONFIG_FILE": str(config)})
    assert message.startswith(f"CONNECTYCUBE_CONFIG_FILE ({config})")
    assert expected in message
    assert "instance of" not in message  # never a class name of ours


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, {"CONNECTYCUBE_CONFIG_FILE": "nowhere.yml"})
    assert message == (
        "CONNECTYCUBE_CONFIG_FILE (nowhere.yml): cannot read the file (No such file or directory)"
    )


def test_reprs_hide_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    settings, apps = apps_from(monkeypatch, {"CONNECTYCUBE_API_KEY": SECRET_KEY})
    for text in (repr(settings), str(settings), repr(apps), str(settings.model_dump())):
        assert SECRET_KEY not in text
