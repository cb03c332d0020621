"""The exporter's HTTP routes, as a WSGI app built by ``create_app``.

``/metrics`` serves the exposition of the current snapshot: it never calls the
ConnectyCube API, so a scrape costs the same whatever the API is doing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.webconfig import WebConfig

StartResponse = Callable[..., Any]

LANDING_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>ConnectyCube exporter</title></head>
<body>
<h1>ConnectyCube exporter</h1>
<p>Prometheus exporter for the ConnectyCube Admin Statistics API, version {version}.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="-/healthy">Health</a></li>
<li><a href="-/ready">Readiness</a></li>
</ul>
</body>
</html>
"""


# Probes must work without credentials; they reveal nothing.
OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})


def create_app(
    render: Callable[[bool, bool], bytes],
    is_ready: Callable[[], bool],
    web_config: WebConfig | None = None,
) -> Callable[..., Any]:
    """The WSGI app: ``/metrics``, ``/``, ``/-/healthy``, ``/-/ready``; 404 for the rest.

    ``render(openmetrics, gzip)`` gives the /metrics body. With basic auth users in
    ``web_config``, every path but the probes needs them.
    """
    web = web_config or WebConfig(None, {}, ())
    landing = LANDING_PAGE.format(version=escape(__version__)).encode()

    def metrics(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        try:
            _, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        except (TypeError, ValueError):  # a malformed Accept: the classic format
            _, content_type = choose_encoder("")
        openmetrics = content_type.startswith("application/openmetrics-text")
        compress = accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", ""))
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if compress:
            headers.append(("Content-Encoding", "gzip"))
        return "200 OK", headers, render(openmetrics, compress)

    def ready(_: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        if is_ready():
            return "200 OK", _TEXT, b"Ready\n"
        return "503 Service Unavailable", _TEXT, b"Not ready: the first poll has not finished\n"

    routes: dict[str, Callable[[dict[str, Any]], tuple[str, list[tuple[str, str]], bytes]]] = {
        "/metrics": metrics,
        "/": lambda _: ("200 OK", [("Content-Type", "text/html; charset=utf-8")], landing),
        "/-/healthy": lambda _: ("200 OK", _TEXT, b"Healthy\n"),
        "/-/ready": ready,
    }

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        route = routes.get(path)
        method = environ.get("REQUEST_METHOD", "GET")
        if path not in OPEN_PATHS and not web.authorized(environ.get("HTTP_AUTHORIZATION")):
            status, headers, body = "401 Unauthorized", [*_TEXT, _CHALLENGE], b"Unauthorized\n"
        elif route is None:
            status, headers, body = "404 Not Found", _TEXT, b"Not found\n"
        elif method not in ("GET", "HEAD"):
            status, headers, body = (
                "405 Method Not Allowed",
                [*_TEXT, ("Allow", "GET, HEAD")],
                b"Method not allowed\n",
            )
        else:
            status, headers, body = route(environ)
        start_response(status, [*headers, *web.headers, ("Content-Length", str(len(body)))])
        return [b"" if method == "HEAD" else body]

    return app


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` admits gzip (``gzip;q=0`` refuses it)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


_TEXT = [("Content-Type", "text/plain; charset=utf-8")]
_CHALLENGE = ("WWW-Authenticate", 'Basic realm="connectycube-exporter", charset="UTF-8"')
