"""The API the designs poll: the demo's simulator, served as the real API is, with latency.

``exporter.server.Server`` speaks HTTP/1.1 with keep-alive, plainly and over TLS, as
``https://api.connectycube.com`` does; the tests' ``wsgiref`` rig closes every connection,
which would make each request pay a new connection, over TLS a full handshake. Both
listeners answer from one ``BenchAPI``, so that its counters cover whichever is polled.
The TLS one has a certificate of a throw-away CA (``tests.pki``) that the designs trust
through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.server import Limits, Request, Response, Server
from exporter.simulator import Simulator
from tests.pki import make_pki

# One client (the design) may hold as many connections as it likes: the API's own limits
# are not what is measured.
API_LIMITS = Limits(max_client_connections=100_000, max_connections=100_000)


class BenchAPI:
    """``Simulator`` answering keys ``PREFIX0`` ..., after ``latency`` seconds, counted."""

    def __init__(self, key_prefix: str, keys: int) -> None:
        self.simulator = Simulator([f"{key_prefix}{i}" for i in range(keys)], "UTC")
        self.latency = 0.0
        self._lock = threading.Lock()  # the plain and the TLS listener have a thread each
        self._requests = self._in_flight = self._peak = 0

    def reset_stats(self) -> None:
        with self._lock:
            self._requests, self._peak = 0, self._in_flight

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak,
            }

    async def __call__(self, request: Request) -> Response:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self.simulator(request)
        finally:
            with self._lock:
                self._in_flight -= 1


@dataclass
class Listeners:
    """The API over plain HTTP and over HTTPS, and the CA file that trusts the latter."""

    api: BenchAPI
    plain: Server
    tls: Server
    ca_file: Path

    def url(self, transport: str) -> str:
        return (self.tls if transport == "https" else self.plain).url

    def stop(self) -> None:
        self.plain.stop()
        self.tls.stop()


def start_api(api: BenchAPI, workdir: Path) -> Listeners:
    """Serve ``api`` on two loopback ports, plain and TLS, with certificates in ``workdir``."""
    pki = make_pki(workdir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    plain = Server(api, "127.0.0.1:0", None, API_LIMITS)
    try:
        tls = Server(api, "127.0.0.1:0", context, API_LIMITS)
    except BaseException:
        plain.stop()
        raise
    return Listeners(api, plain, tls, pki.ca)
