"""The floor of a Python HTTP server: ``ThreadingHTTPServer`` answering every GET with
bytes it holds in memory, the exporter's own answer saved to a file beforehand.

    python -m benchmarks.reference --body FILE [--header NAME:VALUE ...]

Like the designs, it prints ``listening on URL, ...`` on stderr once serving.
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    args = parser.parse_args()
    body = args.body.read_bytes()
    headers = [tuple(h.split(":", 1)) for h in args.header]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a line per request would be what is measured

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        # The exporter's backlog: socketserver's 5 would drop SYNs of 20 scrapers
        # connecting at once, and each dropped one waits a second for its retry.
        request_queue_size = 1024

    server = Server(("127.0.0.1", 0), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}, ", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
