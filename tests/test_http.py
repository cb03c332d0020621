"""The HTTP routes, through the WSGI app alone: no socket needed."""

from __future__ import annotations

import gzip
import socket
import time
from wsgiref.util import setup_testing_defaults
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from exporter.exposition import Exposition
from exporter.http import create_app
from exporter.snapshot import AppSnapshot, Snapshot, frozen_map


class Client:
    """Calls the WSGI app directly, serving a one-app snapshot."""

    def __init__(self) -> None:
        snapshot = Snapshot(frozen_map({"prod": AppSnapshot("prod", (2,), up=True)}))
        exposition = Exposition(lambda: snapshot, ZoneInfo("UTC"), 60.0, CollectorRegistry())
        self.ready = False
        self.app = create_app(exposition.render, lambda: self.ready)

    def request(
        self, path: str, method: str = "GET", **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": method}
        environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
        setup_testing_defaults(environ)
        answer: dict = {}

        def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
            answer["status"] = int(status.split()[0])
            answer["headers"] = dict(response_headers)

        body = b"".join(self.app(environ, start_response))
        return answer["status"], answer["headers"], body


@pytest.fixture
def client() -> Client:
    return Client()


def test_metrics_in_the_classic_text_format(client: Client) -> None:
    status, headers, body = client.request("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b'connectycube_up{app="prod"} 1.0' in body
    assert int(headers["Content-Length"]) == len(body)


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


def test_head_has_headers_and_no_body(client: Client) -> None:
    status, headers, body = client.request("/metrics", method="HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["Content-Length"]) > 0


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


def test_connections_beyond_the_cap_are_turned_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle clients cannot take every thread: over the cap, a connection is closed at once."""
    from exporter import server as server_module

    monkeypatch.setattr(server_module._ThreadingWSGIServer, "max_connections", 2)
    running = server_module.serve(Client().app, "127.0.0.1:0")
    idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(2)]
    try:
        time.sleep(0.2)  # both are accepted and hold their threads
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as third:
            try:
                third.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
                answer = third.recv(100)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
            assert answer == b""  # closed without an answer
        for connection in idle:
            connection.close()
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as fourth:
            fourth.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
            assert fourth.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        for connection in idle:
            connection.close()
        running.stop()
