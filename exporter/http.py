"""The exporter's HTTP routes, as the app ``create_app`` builds.

The app is a coroutine function from a ``Request`` to a ``Response`` (both in
``exporter.server``): routing, basic auth, content negotiation and gzip, testable without
a socket. ``exporter.server`` carries it over HTTP/1.1.

``/metrics`` serves the exposition of the current snapshot: it never calls the
ConnectyCube API, so a scrape costs the same whatever the API is doing. Rendering is
cached per snapshot and cheap, so it runs on the server's loop; the one slow thing, a
bcrypt check of credentials not seen before (a quarter of a second at cost 10), runs on
a few worker threads instead, so that it never holds up other clients.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape

from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.server import Request, Response
from exporter.webconfig import WebConfig

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

# bcrypt checks run on this many threads; beyond this many waiting, a request gets 503
# at once instead of queueing behind a flood of wrong passwords.
BCRYPT_WORKERS = 4
MAX_WAITING_CHECKS = 64
# Failed logins per client address: a burst of this many, then one a second. A wrong
# password beyond that is refused (429) without a bcrypt run, so a flood from one host
# costs almost nothing; credentials that passed before are never held back.
FAILED_LOGIN_BURST = 10
FAILED_LOGINS_PER_SECOND = 1.0
MAX_TRACKED_CLIENTS = 10_000


class FailedLogins:
    """A token bucket of failed logins per client address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def _tokens(self, client: str) -> float:
        tokens, when = self._buckets.get(client, (FAILED_LOGIN_BURST, self._clock()))
        return min(FAILED_LOGIN_BURST, tokens + (self._clock() - when) * FAILED_LOGINS_PER_SECOND)

    def allowed(self, client: str) -> bool:
        """Whether another bcrypt check may run for ``client`` now."""
        return self._tokens(client) >= 1

    def failed(self, client: str) -> None:
        self._buckets[client] = (self._tokens(client) - 1, self._clock())
        self._buckets.move_to_end(client)
        if len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)


class PasswordChecks:
    """Basic auth off the event loop: cached answers at once, bcrypt on worker threads."""

    def __init__(self, web: WebConfig, workers: int = BCRYPT_WORKERS) -> None:
        self._web = web
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._failures = FailedLogins()
        self.waiting = 0

    async def authorized(self, header: str | None, client: str = "") -> bool | Busy:
        """Whether ``header`` lets the request in, or why it was not checked now."""
        quick = self._web.authorized_without_bcrypt(header)
        if quick is not None:
            return quick
        if not self._failures.allowed(client):
            return Busy(429, "Too many failed logins from this address\n")
        with self._lock:
            if self.waiting >= MAX_WAITING_CHECKS:
                return Busy(503, "Too many logins at once\n")
            self.waiting += 1
            if self._pool is None:  # threads only once a password needs checking
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="bcrypt")
            pool = self._pool
        try:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(pool, self._web.authorized, header)
        finally:
            with self._lock:
                self.waiting -= 1
        if not ok:
            self._failures.failed(client)
        return ok


@dataclass(frozen=True)
class Busy:
    """A login not checked now: the status to answer, and why."""

    status: int
    reason: str


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
    extra = web.headers
    checks = PasswordChecks(web) if web.users else None

    def answer(status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> Response:
        return Response(status, (*headers, *extra), body)

    def metrics(request: Request) -> Response:
        try:
            _, content_type = choose_encoder(request.headers.get("accept", ""))
        except (TypeError, ValueError):  # a malformed Accept: the classic format
            _, content_type = choose_encoder("")
        openmetrics = content_type.startswith("application/openmetrics-text")
        compress = accepts_gzip(request.headers.get("accept-encoding", ""))
        headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", content_type),
            ("Vary", "Accept, Accept-Encoding"),
        )
        if compress:
            headers += (("Content-Encoding", "gzip"),)
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
        if checks is not None and path not in OPEN_PATHS:
            allowed = await checks.authorized(request.headers.get("authorization"), request.client)
            if isinstance(allowed, Busy):
                retry = (*_TEXT, ("Retry-After", "1"))
                return answer(allowed.status, retry, allowed.reason.encode())
            if not allowed:
                return answer(401, (*_TEXT, _CHALLENGE), b"Unauthorized\n")
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
