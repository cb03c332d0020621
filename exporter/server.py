"""A small threaded WSGI server, shared by the exporter and the simulator.

The standard library's ``wsgiref`` server handles one request at a time; a scrape
must never wait behind another, so each connection gets its own daemon thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

WSGIApp = Callable[..., Any]

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """Sends wsgiref's per-request access log to debug logging instead of stderr."""

    # A client that connects and goes silent must not hold its thread for ever.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            # The TLS handshake runs here, on this connection's own thread: done in
            # accept(), one slow or hostile client would stall every other one.
            self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # Many scrapers (or benchmark clients) may connect at once.
    request_queue_size = 128

    # One thread per connection, so connections are capped: a flood of idle clients
    # is turned away at the door instead of costing a thread each.
    max_connections = 256

    def server_activate(self) -> None:
        self._connections = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            log.debug("too many connections: closing one from %s", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake or a dropped connection is the client's business: one
        # debug line, not a traceback on stderr.
        log.debug("connection from %s failed: %s", client_address, sys.exc_info()[1])


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


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


class RunningServer:
    """A WSGI server serving on a background thread until ``stop()``."""

    def __init__(
        self, app: WSGIApp, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
        self._server = make_server(
            host, port, app, server_class=server_class, handler_class=_QuietHandler
        )
        self.scheme = "http"
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http-{port}", daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(app: WSGIApp, address: str, ssl_context: ssl.SSLContext | None = None) -> RunningServer:
    """Start serving ``app`` on ``address`` (``HOST:PORT``; port 0 picks a free port)."""
    host, port = parse_listen_address(address)
    return RunningServer(app, host, port, ssl_context)
