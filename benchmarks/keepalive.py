"""The same simulator of the API, served over HTTP/1.1 with keep-alive.

``tests.simulator`` is served by ``wsgiref``, which speaks HTTP/1.0 and closes the
connection after every answer, so a client never reuses a connection. The real API (like
any HTTPS API behind a load balancer) keeps connections open, and a client's connection
pool then behaves differently. This serves the unchanged ``Simulator`` WSGI app through
``http.server`` with ``protocol_version = "HTTP/1.1"``: only the transport differs.

    python -m benchmarks.keepalive --listen 127.0.0.1:0 --key-prefix bench- --latency 0.2

It prints ``simulator listening on URL`` on stderr, like ``python -m tests.simulator``,
and answers the same ``/_sim/...`` control endpoints. Stop it with SIGTERM.
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter.config import parse_listen_address
from tests.simulator import Simulator


class _KeepAliveHandler(BaseHTTPRequestHandler):
    """Calls the WSGI app for each request of a persistent connection."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle connection is dropped after a minute
    simulator: Simulator

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without this, Nagle's algorithm holds the
        # body for the client's delayed ACK (40 ms) on every reused connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._call_app()

    def do_POST(self) -> None:
        self._call_app()

    def _call_app(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(length),
            "wsgi.input": io.BytesIO(self.rfile.read(length) if length else b""),
        }
        for name, value in self.headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            started["status"], started["headers"] = status, headers

        result = self.simulator(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()  # the simulator counts a request done when its body is closed
        self.send_response(int(started["status"].split()[0]))
        for name, value in started["headers"]:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the harness's stderr reader


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keepalive", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    parser.add_argument("--key-prefix", required=True)
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    simulator = Simulator(key_prefix=args.key_prefix)
    if args.latency:
        simulator.set_faults(latency=args.latency)
    handler = type("Handler", (_KeepAliveHandler,), {"simulator": simulator})
    server = _Server(parse_listen_address(args.listen), handler)
    host, port = server.server_address[:2]
    print(f"simulator listening on http://{host}:{port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
