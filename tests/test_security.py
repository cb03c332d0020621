"""Locking down /metrics (TLS, client certificates, basic auth) and keeping the key secret."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.client import APIError, StatsClient
from exporter.config import ConfigError, load_apps, load_settings
from tests.conftest import SECRET_KEY, streaming_transport
from tests.pki import PKI
from tests.processes import Exporter, run_exporter_once, start_exporter
from tests.simulator import Simulator

PASSWORD = "scrape-me-please"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def web_config(tmp_path: Path, pki: PKI, client_auth: str = "NoClientCert") -> Path:
    ca = f"  client_ca_file: {pki.ca}\n" if client_auth != "NoClientCert" else ""
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"  client_auth_type: {client_auth}\n{ca}"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n"
    )
    return path


def client_context(pki: PKI) -> ssl.SSLContext:
    """A client that trusts the test CA and shows the test client certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


@pytest.fixture
def locked(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path, pki: PKI
) -> Iterator[Exporter]:
    config = web_config(tmp_path, pki, "RequireAndVerifyClientCert")
    process = start_exporter(
        simulator[1],
        "--web-config-file",
        str(config),
        key=SECRET_KEY,
        verify=client_context(pki),
        auth=("prometheus", PASSWORD),
    )
    try:
        process.wait_for_value("connectycube_up", 1, app="default")
        yield process
    finally:
        process.stop()  # also when the start-up wait failed: no stray process


@pytest.mark.slow
def test_https_with_client_certificate_and_password(locked: Exporter, pki: PKI) -> None:
    assert locked.url.startswith("https://")
    assert locked.value("connectycube_messages_sent", app="default") == 9
    base = {"verify": client_context(pki)}
    wrong = httpx.get(f"{locked.url}/metrics", auth=("prometheus", "wrong"), timeout=5, **base)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert httpx.get(f"{locked.url}/metrics", timeout=5, **base).status_code == 401
    assert httpx.get(f"{locked.url}/", timeout=5, **base).status_code == 401
    unknown = httpx.get(f"{locked.url}/metrics", auth=("root", PASSWORD), timeout=5, **base)
    assert unknown.status_code == 401
    # Probes stay open to the orchestrator, without a password.
    assert httpx.get(f"{locked.url}/-/healthy", timeout=5, **base).status_code == 200
    assert httpx.get(f"{locked.url}/-/ready", timeout=5, **base).status_code == 200


@pytest.mark.slow
def test_client_without_certificate_is_refused(locked: Exporter, pki: PKI) -> None:
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(
            f"{locked.url}/-/healthy",
            verify=ssl.create_default_context(cafile=str(pki.ca)),
            timeout=5,
            auth=("prometheus", PASSWORD),
        ).raise_for_status()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{locked.url}/-/healthy", timeout=5)  # unknown CA: the client refuses
    # Plain HTTP on the TLS port gets nowhere, and the exporter lives on.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        httpx.get(locked.url.replace("https://", "http://") + "/metrics", timeout=5)
    assert locked.value("connectycube_up", app="default") == 1
    assert "Traceback" not in locked.logs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("tls_server_config:\n  cert_file: nowhere.crt\n  key_file: nowhere.key\n", "nowhere"),
        ("basic_auth_users:\n  prometheus: not-a-bcrypt-hash\n", "bcrypt"),
        ("tls_server_config: [\n", "YAML"),
        ("tls_server_confg: {}\n", "tls_server_confg"),
    ],
)
def test_malformed_web_config_is_a_clear_start_up_error(
    tmp_path: Path, content: str, expected: str
) -> None:
    (tmp_path / "web.yml").write_text(content)
    result = run_exporter_once(
        ["--web-config-file", "web.yml"], {"CONNECTYCUBE_API_KEY": SECRET_KEY}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith("connectycube-exporter: configuration error: ")
    assert "CONNECTYCUBE_WEB_CONFIG_FILE" in result.stderr
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert SECRET_KEY not in result.stderr


@pytest.mark.slow
def test_the_key_never_appears_anywhere(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    """Every log level, every error path, every page, and the settings' repr."""
    sim, url = simulator
    process = start_exporter(url, "--log-level", "DEBUG", key=SECRET_KEY)
    outputs: list[str] = []
    try:
        process.wait_for_value("connectycube_up", 1, app="default")
        faults = [
            {"status": 401},
            {"status": 403},
            {"status": 429, "retry_after": "1"},
            {"status": 500},
            {"body": "garbage"},
            {"body": "reset"},
            {"body": "wrong_shape"},
            {"latency": 2},
        ]
        for fault in faults:
            sim.set_faults(**fault)
            process.wait_for_value("connectycube_up", 0, app="default")
            sim.set_faults()
            process.wait_for_value("connectycube_up", 1, timeout=15, app="default")
        for path in ("/metrics", "/", "/-/healthy", "/-/ready", "/missing"):
            outputs.append(process.get(path).text)
    finally:
        process.stop()
    # A start-up error with the key given as a flag.
    bad = run_exporter_once(
        ["--poll-interval-seconds", "x", "--api-key", SECRET_KEY],
        {"CONNECTYCUBE_API_KEY": SECRET_KEY},
    )
    outputs += [process.logs, bad.stdout, bad.stderr]
    assert any(" DEBUG " in line for line in process.lines)
    assert any(" WARNING " in line for line in process.lines)
    for text in outputs:
        assert SECRET_KEY not in text


def test_settings_and_apps_never_show_the_key(clean_env: Path) -> None:
    settings = load_settings({"api_key": SECRET_KEY})
    apps = load_apps(settings)
    for text in (repr(settings), str(settings), repr(apps), str(apps), settings.model_dump_json()):
        assert SECRET_KEY not in text


ECHOES = [
    pytest.param(401, {"errors": {"base": ["bad key {key}"]}}, id="error-body"),
    pytest.param(401, {"errors": {"base": ["x" * 190 + "{key}"]}}, id="error-body-at-the-cut"),
    pytest.param(200, {"total": "{key}"}, id="count"),
    pytest.param(200, {"{key}": 5}, id="day-key"),
]


@pytest.mark.parametrize(("status", "template"), ECHOES)
def test_answers_echoing_the_key_never_show_it(status: int, template: dict) -> None:
    """A hostile server that echoes the key back (the simulator never does)."""

    def echo(request: httpx.Request) -> httpx.Response:
        key = request.headers["CB-Administration-API-Key"]
        body = json.loads(json.dumps(template).replace("{key}", key))
        return httpx.Response(status, json=body)

    async def ask() -> str:
        async with httpx.AsyncClient(transport=streaming_transport(echo)) as http:
            [app] = load_apps(load_settings({"api_key": SECRET_KEY}))
            client = StatsClient(http)
            messages = []
            for call in (client.total(app, "messages"), client.per_day(app, "messages")):
                try:
                    await call
                except APIError as exc:
                    messages.append(str(exc))
        return " | ".join(messages)

    message = asyncio.run(ask())
    assert message
    assert SECRET_KEY not in message
    assert SECRET_KEY[:12] not in message  # not even the part before a cut


# Property-based fuzzing of the configuration loader: any input is a value or a
# ConfigError, never another exception.


def refusal(load: Callable[[], object]) -> str:
    """The ConfigError's message, or "" when the input was accepted."""
    try:
        load()
    except ConfigError as exc:
        return str(exc)
    return ""


yaml_text = st.text(
    alphabet=st.sampled_from(list("apps:-_ name\napi_key{}[],'\"0123456789#&*!|>?%@`\t")),
    max_size=200,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(yaml_text)
def test_any_config_file_is_loaded_or_refused_clearly(clean_env: Path, text: str) -> None:
    config = clean_env / "fuzz.yml"
    config.write_text(text)
    error = refusal(lambda: load_apps(load_settings({"config_file": str(config)})))
    assert "\n" not in error


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "poll_interval_seconds",
                "dialog_types",
                "timezone",
                "listen_address",
                "api_url",
                "log_level",
                "max_retries",
                "poll_timeout_seconds",
                "max_staleness_seconds",
            ]
        ),
        st.text(max_size=30),
        max_size=4,
    )
)
def test_any_setting_value_is_accepted_or_refused_clearly(
    clean_env: Path, values: dict[str, str]
) -> None:
    error = refusal(lambda: load_apps(load_settings({"api_key": SECRET_KEY, **values})))
    assert "\n" not in error
    assert SECRET_KEY not in error
