"""``connectycube-exporter healthcheck`` against real exporters: plain, TLS, mutual TLS, down."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import SECRET_KEY
from tests.pki import PKI
from tests.processes import Exporter, run_exporter_once, start_exporter
from tests.simulator import Simulator

pytestmark = pytest.mark.slow


def healthcheck(
    exporter_url: str, host: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The healthcheck as a container runs it: the daemon's settings from the environment."""
    address = urlsplit(exporter_url)
    listen = f"{host or address.hostname}:{address.port}"
    return run_exporter_once(["healthcheck"], env={"CONNECTYCUBE_LISTEN_ADDRESS": listen, **env})


def tls_web_config(pki: PKI, extra: str = "") -> Path:
    path = pki.dir / f"web-{abs(hash(extra))}.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def plain(simulator: tuple[Simulator, str]) -> Iterator[Exporter]:
    process = start_exporter(simulator[1], key=SECRET_KEY)
    yield process
    process.stop()


def test_plain_exporter_is_healthy_also_on_a_wildcard_address(plain: Exporter) -> None:
    assert healthcheck(plain.url).returncode == 0
    # A container listens on 0.0.0.0: the check reaches it on loopback.
    result = healthcheck(plain.url, host="0.0.0.0")
    assert result.returncode == 0, result.stderr


def test_an_exporter_that_is_down_is_unhealthy(plain: Exporter) -> None:
    url = plain.url
    plain.stop()
    result = healthcheck(url)
    assert result.returncode == 1
    assert f"{url}/-/healthy" in result.stderr
    assert "refused" in result.stderr.lower()


def test_tls_exporter_is_checked_over_https(
    simulator: tuple[Simulator, str], pki: PKI, tmp_path: Path
) -> None:
    web_config = tls_web_config(pki)
    process = start_exporter(
        simulator[1], "--web-config-file", str(web_config), key=SECRET_KEY, verify=str(pki.ca)
    )
    try:
        assert process.url.startswith("https://")
        result = healthcheck(process.url, CONNECTYCUBE_WEB_CONFIG_FILE=str(web_config))
        assert result.returncode == 0, result.stderr
        # Without the web config the check speaks plain HTTP, which a TLS server refuses:
        # the healthcheck follows the settings, it does not guess.
        plain_http = healthcheck(process.url)
        assert plain_http.returncode == 1
        assert "http://" in plain_http.stderr
    finally:
        process.stop()
    down = healthcheck(process.url, CONNECTYCUBE_WEB_CONFIG_FILE=str(web_config))
    assert down.returncode == 1
    assert "https://" in down.stderr


def test_mutual_tls_exporter_is_healthy_without_a_client_certificate(
    simulator: tuple[Simulator, str], pki: PKI
) -> None:
    extra = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
    web_config = tls_web_config(pki, extra)
    process = start_exporter(
        simulator[1],
        "--web-config-file",
        str(web_config),
        key=SECRET_KEY,
        verify=str(pki.ca),
        cert=(str(pki.client_cert), str(pki.client_key)),
    )
    try:
        result = healthcheck(process.url, CONNECTYCUBE_WEB_CONFIG_FILE=str(web_config))
        assert result.returncode == 0, result.stderr
    finally:
        process.stop()


def test_a_server_that_answers_otherwise_is_unhealthy(simulator: tuple[Simulator, str]) -> None:
    # The simulator is an HTTP server without /-/healthy.
    result = healthcheck(simulator[1])
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr


def test_bad_settings_exit_2_and_say_which() -> None:
    result = run_exporter_once(["healthcheck"], env={"CONNECTYCUBE_LISTEN_ADDRESS": "nowhere"})
    assert result.returncode == 2
    assert "CONNECTYCUBE_LISTEN_ADDRESS" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback
