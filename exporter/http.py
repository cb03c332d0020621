"""The exporter's HTTP routes: ``create_app`` builds a coroutine function from a
``Request`` to a ``Response`` (both in ``exporter.server``, which carries it over HTTP/1.1)
that does routing, basic auth, content negotiation and gzip, testable without a socket.

``/metrics`` serves the exposition of the current snapshot and never calls the API. It
runs on the server's loop; the one slow thing, a bcrypt check of credentials not seen
before (a quarter of a second at cost 10), runs on ``BasicAuth``'s worker threads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from html import escape

from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.server import Request, Response
from exporter.webconfig import BasicAuth, WebConfig

App = Callable[[Request], Awaitable[Response]]

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

NOT_CHECKED = {
    429: b"Too many failed logins from this address\n",
    503: b"Too many logins at once\n",
}


def create_app(
    render: Callable[[bool, bool], bytes],
    is_ready: Callable[[], bool],
    web_config: WebConfig | None = None,
) -> App:
    """The app: ``/metrics``, ``/``, ``/-/healthy``, ``/-/ready``; 404 for the rest.

    ``render(openmetrics, gzip)`` gives the /metrics body. With basic auth users in
    ``web_config``, every path but the probes needs them. The web config's extra headers
    go on every answer.
    """
    web = web_config or WebConfig(None, {}, ())
    landing = LANDING_PAGE.format(version=escape(__version__)).encode()
    auth = BasicAuth(web.users)

    def answer(status: int, headers: Sequence[tuple[str, str]], body: bytes) -> Response:
        return Response(status, (*headers, *web.headers), body)

    def metrics(request: Request) -> Response:
        try:
            _, content_type = choose_encoder(request.headers.get("accept", ""))
        except (TypeError, ValueError):  # a malformed Accept: the classic format
            _, content_type = choose_encoder("")
        openmetrics = content_type.startswith("application/openmetrics-text")
        compress = accepts_gzip(request.headers.get("accept-encoding", ""))
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if compress:
            headers.append(("Content-Encoding", "gzip"))
        return answer(200, headers, render(openmetrics, compress))

    def ready(_: Request) -> Response:
        if is_ready():
            return answer(200, _TEXT, b"Ready\n")
        return answer(503, _TEXT, b"Not ready: the first poll has not finished\n")

    routes: dict[str, Callable[[Request], Response]] = {
        "/metrics": metrics,
        "/": lambda _: answer(200, (("Content-Type", "text/html; charset=utf-8"),), landing),
        "/-/healthy": lambda _: answer(200, _TEXT, b"Healthy\n"),
        "/-/ready": ready,
    }

    async def app(request: Request) -> Response:
        path = request.path
        if path not in OPEN_PATHS:
            status = await auth.status(request.headers.get("authorization"), request.client)
            if status == 401:
                return answer(401, (*_TEXT, _CHALLENGE), b"Unauthorized\n")
            if status != 200:
                return answer(status, (*_TEXT, ("Retry-After", "1")), NOT_CHECKED[status])
        route = routes.get(path)
        if route is None:
            return answer(404, _TEXT, b"Not found\n")
        if request.method not in ("GET", "HEAD"):
            return answer(405, (*_TEXT, ("Allow", "GET, HEAD")), b"Method not allowed\n")
        return route(request)

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


_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)
_CHALLENGE = ("WWW-Authenticate", 'Basic realm="connectycube-exporter", charset="UTF-8"')
