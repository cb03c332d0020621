"""The HTTP routes, through the app alone: no socket needed."""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import time
from zoneinfo import ZoneInfo

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from exporter import http as http_module
from exporter.exposition import Exposition
from exporter.http import App, create_app
from exporter.server import Request, Response
from exporter.snapshot import AppSnapshot, Snapshot, frozen_map
from exporter.webconfig import WebConfig


class Client:
    """Calls the app directly, serving a one-app snapshot."""

    def __init__(self) -> None:
        snapshot = Snapshot(frozen_map({"prod": AppSnapshot("prod", (2,), up=True)}))
        exposition = Exposition(lambda: snapshot, ZoneInfo("UTC"), 60.0, CollectorRegistry())
        self.ready = False
        self.app = create_app(exposition.render, lambda: self.ready)

    def request(
        self, path: str, method: str = "GET", **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        names = {name.replace("_", "-").lower(): value for name, value in headers.items()}
        response = asyncio.run(self.app(Request(method, path, names)))
        return response.status, dict(response.headers), response.body


@pytest.fixture
def client() -> Client:
    return Client()


def test_metrics_in_the_classic_text_format(client: Client) -> None:
    status, headers, body = client.request("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b'connectycube_up{app="prod"} 1.0' in body


def test_metrics_in_openmetrics_when_asked(client: Client) -> None:
    status, headers, body = client.request(
        "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_metrics_gzipped_when_asked(client: Client) -> None:
    _, headers, body = client.request("/metrics", accept_encoding="gzip, deflate")
    assert headers["Content-Encoding"] == "gzip"
    assert b'connectycube_up{app="prod"} 1.0' in gzip.decompress(body)


def test_landing_page_links_to_metrics(client: Client) -> None:
    status, headers, body = client.request("/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b'href="metrics"' in body


def test_healthy_always_and_ready_after_the_first_poll(client: Client) -> None:
    assert client.request("/-/healthy")[0] == 200
    assert client.request("/-/ready")[0] == 503
    client.ready = True
    assert client.request("/-/ready")[0] == 200


@pytest.mark.parametrize("path", ["/metric", "/metrics/", "/favicon.ico", "/-/reload", "/admin"])
def test_unknown_paths_are_404(client: Client, path: str) -> None:
    assert client.request(path)[0] == 404


def test_other_methods_are_405(client: Client) -> None:
    status, headers, _ = client.request("/metrics", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


def test_head_is_answered_like_get(client: Client) -> None:
    """The server sends HEAD's headers without the body (see test_slow_clients.py)."""
    status, headers, body = client.request("/metrics", method="HEAD")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"connectycube_up" in body


def test_malformed_accept_falls_back_to_the_classic_format(client: Client) -> None:
    status, headers, body = client.request(
        "/metrics", accept="application/openmetrics-text; version=abc"
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b"connectycube_up" in body


@pytest.mark.parametrize("encoding", ["gzip;q=0", "identity", "br", "gzip;q=zero"])
def test_gzip_only_when_accepted(client: Client, encoding: str) -> None:
    _, headers, _ = client.request("/metrics", accept_encoding=encoding)
    assert "Content-Encoding" not in headers


@pytest.mark.parametrize("encoding", ["gzip", "GZIP;q=0.5", "br, gzip;q=1.0", "x-gzip"])
def test_gzip_when_accepted(client: Client, encoding: str) -> None:
    _, headers, _ = client.request("/metrics", accept_encoding=encoding)
    assert headers["Content-Encoding"] == "gzip"


# --- basic auth and the web config's headers ---------------------------------------------

PASSWORD = "scrape-me"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))
HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "deny"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def locked_app() -> App:
    exposition = Exposition(
        lambda: Snapshot(frozen_map({})), ZoneInfo("UTC"), 60.0, CollectorRegistry()
    )
    return create_app(
        exposition.render, lambda: True, WebConfig(None, {"prometheus": HASH}, HEADERS)
    )


def ask(app: App, path: str, authorization: str | None = None) -> Response:
    headers = {"authorization": authorization} if authorization else {}
    return asyncio.run(app(Request("GET", path, headers)))


def test_basic_auth_with_the_probes_open() -> None:
    app = locked_app()
    for path in ("/metrics", "/", "/missing"):
        refused = ask(app, path)
        assert refused.status == 401
        assert dict(refused.headers)["WWW-Authenticate"].startswith("Basic")
        assert ask(app, path, basic("prometheus", "wrong")).status == 401
    assert ask(app, "/metrics", basic("prometheus", PASSWORD)).status == 200
    assert ask(app, "/missing", basic("prometheus", PASSWORD)).status == 404
    assert ask(app, "/-/healthy").status == 200
    assert ask(app, "/-/ready").status == 200


def test_web_config_headers_on_every_answer() -> None:
    app = locked_app()
    for response in (
        ask(app, "/metrics", basic("prometheus", PASSWORD)),
        ask(app, "/metrics"),  # 401
        ask(app, "/nowhere", basic("prometheus", PASSWORD)),  # 404
        ask(app, "/-/healthy"),
    ):
        assert set(HEADERS) <= set(response.headers), response


def test_bcrypt_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first login costs bcrypt's time on a worker thread; other requests go on."""
    threads: list[str] = []
    real = bcrypt.checkpw

    def slow(password: bytes, hashed: bytes) -> bool:
        threads.append(threading.current_thread().name)
        time.sleep(0.5)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", slow)
    app = locked_app()

    async def scenario() -> tuple[float, Response]:
        login = asyncio.create_task(
            app(Request("GET", "/metrics", {"authorization": basic("prometheus", PASSWORD)}))
        )
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await app(Request("GET", "/-/healthy", {}))
        probe = time.monotonic() - started
        return probe, await login

    probe, login = asyncio.run(scenario())
    assert login.status == 200
    assert probe < 0.1  # answered while bcrypt ran
    assert threads
    assert all(name.startswith("bcrypt") for name in threads)
    # Checked once: the next scrape with the same credentials is answered from the cache.
    assert ask(app, "/metrics", basic("prometheus", PASSWORD)).status == 200
    assert len(threads) == 1


def test_a_burst_of_wrong_passwords_runs_bcrypt_no_more_than_the_bucket_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        checked.append(password)
        time.sleep(0.05)  # all of the burst is waiting while the first ones run
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    app = locked_app()
    burst = 3 * http_module.FAILED_LOGIN_BURST

    async def flood() -> list[int]:
        wrong = [{"authorization": basic("prometheus", f"wrong-{n}")} for n in range(burst)]
        requests = (app(Request("GET", "/metrics", headers)) for headers in wrong)
        return [answer.status for answer in await asyncio.gather(*requests)]

    statuses = asyncio.run(flood())
    assert statuses.count(401) == http_module.FAILED_LOGIN_BURST
    assert statuses.count(429) == burst - http_module.FAILED_LOGIN_BURST
    assert len(checked) == http_module.FAILED_LOGIN_BURST


def test_too_many_logins_at_once_get_503(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bcrypt.checkpw

    def slow(password: bytes, hashed: bytes) -> bool:
        time.sleep(0.3)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", slow)
    monkeypatch.setattr(http_module, "MAX_WAITING_CHECKS", 2)
    app = locked_app()

    async def flood() -> list[int]:
        wrong = {"authorization": basic("prometheus", "wrong")}
        answers = await asyncio.gather(*(app(Request("GET", "/metrics", wrong)) for _ in range(5)))
        return sorted(answer.status for answer in answers)

    assert asyncio.run(flood()) == [401, 401, 503, 503, 503]
