"""The API client's connections: as many as requests in flight, each kept alive.

Against the real API every new connection is a TLS handshake, so a busy poll cycle must
not open a new one for each request. The server here counts the connections it accepts.
"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from exporter.client import ClientLimits, open_http
from tests.conftest import SECRET_KEY
from tests.processes import Exporter

IN_FLIGHT = 64  # the default cap of requests in flight
BURSTS = 5


async def bursts_of_requests() -> tuple[int, int]:
    """Connections opened, and requests answered, for BURSTS bursts of IN_FLIGHT requests
    at once to a keep-alive server that takes 50 ms to answer each."""
    opened = answered = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened, answered
        opened += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(0.05)  # so that a whole burst is in flight at once
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, open_http(ClientLimits(max_concurrent_requests=IN_FLIGHT)) as http:
        for _ in range(BURSTS):
            answers = await asyncio.gather(*(http.get(url) for _ in range(IN_FLIGHT)))
            assert all(answer.status_code == 200 for answer in answers)
    return opened, answered


def test_a_full_burst_of_requests_reuses_every_connection() -> None:
    opened, answered = asyncio.run(bursts_of_requests())
    assert answered == BURSTS * IN_FLIGHT
    assert opened == IN_FLIGHT  # the first burst's, kept alive for every later one


class _Proxy(ThreadingHTTPServer):
    """A forward proxy that records the requests it is asked to carry and refuses them."""

    daemon_threads = True

    def __init__(self) -> None:
        self.targets: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.targets.append(self.path)
                body = b'{"errors": ["proxy says no"]}'
                self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_the_environments_proxy_carries_the_api_requests() -> None:
    """HTTP_PROXY, HTTPS_PROXY and NO_PROXY apply to the API client, as httpx's own do."""
    proxy = _Proxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    api = "http://api.example.invalid"
    env = {
        "CONNECTYCUBE_API_KEY": SECRET_KEY,
        "HTTP_PROXY": f"http://127.0.0.1:{proxy.server_port}",
    }
    process = Exporter(["--api-url", api, "--poll-interval-seconds", "3600"], env=env)
    try:
        process.wait_for_log("poll failed, .* HTTP 503: proxy says no")
    finally:
        assert process.stop() == 0
        proxy.shutdown()
    assert proxy.targets
    assert all(target.startswith(f"{api}/admin/stats/") for target in proxy.targets)
