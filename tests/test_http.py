"""The HTTP routes, through the app alone; then the HTTP edges over a real exporter's socket:
framing, versions, content negotiation, the head limit, empty lines before a request."""

from __future__ import annotations

import asyncio
import base64
import gzip
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
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
from tests.processes import Exporter


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


# --- the HTTP edges, over a real exporter's socket ---------------------------------------


@pytest.fixture(scope="module")
def demo() -> Iterator[Exporter]:
    process = Exporter(["--demo"])
    try:
        yield process
    finally:
        process.stop()


def exchange(demo: Exporter, *pieces: bytes, quiet: float = 2.0) -> tuple[list[int], bool]:
    """Send ``pieces`` (a moment apart: separate reads), then read until the server closes or
    says nothing for ``quiet`` seconds: the status of each answer, and whether it closed."""
    host, port = demo.url.removeprefix("http://").rsplit(":", 1)
    data = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)
        closed = False
        while select.select([sock], [], [], quiet)[0]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed = True
                break
            data += chunk
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)], closed


HEALTHY = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLED = b"GET /-/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    ],
    ids=["length-first", "chunked-first"],
)
def test_a_request_framed_twice_is_answered_then_closed(demo: Exporter, framing: bytes) -> None:
    """RFC 9112 6.1: the server MUST close. A proxy that framed it by Content-Length took
    the request hidden in the chunked body for body: it must never be answered."""
    request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\n" + SMUGGLED
    assert exchange(demo, request) == ([200], True)


@pytest.mark.parametrize("version", [b"2.0", b"3.0", b"0.9"])
def test_an_http_major_version_other_than_1_gets_505(demo: Exporter, version: bytes) -> None:
    request = b"GET /metrics HTTP/" + version + b"\r\nHost: x\r\n\r\n"
    assert exchange(demo, request) == ([505], True)


OPENMETRICS = "application/openmetrics-text"
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/openmetrics-text;q=0, text/plain", "text/plain"),  # q=0: not acceptable
        ("text/plain;q=0, application/openmetrics-text", OPENMETRICS),
        ("text/plain;q=0, */*;q=0.1", OPENMETRICS),
        ("application/openmetrics-text;q=0, */*", "text/plain"),
        ("text/plain;q=0.5, application/openmetrics-text;q=0.9", OPENMETRICS),
        ("application/openmetrics-text;q=0.5, text/plain;q=0.9", "text/plain"),
        ("Application/OpenMetrics-Text", OPENMETRICS),  # media types are case-insensitive
        ("APPLICATION/OPENMETRICS-TEXT; VERSION=1.0.0", OPENMETRICS),
        ("application/openmetrics-text;Q=0.5", OPENMETRICS),
        ("application/openmetrics-text;q=1.5", "text/plain"),  # invalid q: no preference
        ("application/openmetrics-text;q=0.0001", "text/plain"),  # four decimals
        ("application/openmetrics-text;q=high", "text/plain"),
        ("application/openmetrics-text;q=0.5, text/plain;q=2", OPENMETRICS),
        (PROMETHEUS_3, OPENMETRICS),
        ("*/*", "text/plain"),
        ("", "text/plain"),
    ],
)
def test_content_negotiation(demo: Exporter, accept: str, expected: str) -> None:
    response = demo.get("/metrics", Accept=accept)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(expected + ";")
    assert response.text.endswith("# EOF\n") == (expected == OPENMETRICS)


def head_of(size: int, line_end: bytes = b"\r\n") -> bytes:
    """A request head of exactly ``size`` bytes, padded by one header."""
    start = b"GET /-/healthy HTTP/1.1" + line_end + b"Host: x" + line_end + b"X-Pad: "
    pad = size - len(start) - 2 * len(line_end)
    return start + b"a" * pad + line_end + line_end


def test_the_head_limit_counts_the_bytes_sent(demo: Exporter) -> None:
    limit = 16 * 1024
    assert len(head_of(limit)) == limit
    assert exchange(demo, head_of(limit), quiet=0.5) == ([200], False)
    assert exchange(demo, head_of(limit + 1)) == ([431], True)


def test_a_head_of_12_kb_in_short_lines_is_under_the_limit(demo: Exporter) -> None:
    """Bare LF ends lines too: 3,000 headers of 4 bytes each."""
    head = b"GET /-/healthy HTTP/1.1\nHost: x\n" + b"x:1\n" * 3000 + b"\n"
    assert 12_000 < len(head) < 12_100
    assert exchange(demo, head, quiet=0.5) == ([200], False)


@pytest.mark.parametrize(
    "pieces",
    [
        (b"\r\n" + HEALTHY,),
        (b"\r\n\r\n\n" + HEALTHY,),
        (b"\r", b"\n", HEALTHY),  # read apart
        (HEALTHY, b"\r\n" + HEALTHY),  # on keep-alive
        (HEALTHY + b"\r\n" + HEALTHY,),  # pipelined
    ],
    ids=["crlf", "several", "split", "keep-alive", "pipelined"],
)
def test_empty_lines_before_a_request_line_are_ignored(
    demo: Exporter, pieces: tuple[bytes, ...]
) -> None:
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request."""
    expected = [200] * sum(piece.count(b"GET ") for piece in pieces)
    assert exchange(demo, *pieces, quiet=0.5) == (expected, False)
