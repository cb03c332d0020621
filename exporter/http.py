"""The exporter's HTTP routes: ``create_app`` builds a coroutine function from a
``Request`` to a ``Response`` (both in ``exporter.server``, which carries it over HTTP/1.1)
that does routing, basic auth, content negotiation and gzip, testable without a socket.

``/metrics`` serves the exposition of the current snapshot and never calls the API. It
runs on the server's loop; the one slow thing, a bcrypt check of credentials not seen
before (a quarter of a second at cost 10), runs on worker threads, holding up no one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from html import escape

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
NOT_CHECKED = {
    429: b"Too many failed logins from this address\n",
    503: b"Too many logins at once\n",
}


class PasswordChecks:
    """Basic auth off the event loop: cached answers at once, bcrypt on worker threads,
    failed logins counted in a token bucket per client address. For one event loop only.
    """

    def __init__(self, web: WebConfig) -> None:
        self._web = web
        # Its threads start only once a password needs checking.
        self._pool = ThreadPoolExecutor(BCRYPT_WORKERS, thread_name_prefix="bcrypt")
        self._failed: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self.waiting = 0

    async def status(self, header: str | None, client: str) -> int:
        """200 if ``header`` lets the request in, 401 if not, or a status of NOT_CHECKED."""
        quick = self._web.authorized_without_bcrypt(header)
        if quick is not None:
            return 200 if quick else 401
        tokens = self._tokens(client)
        if tokens < 1:
            return 429
        if self.waiting >= MAX_WAITING_CHECKS:
            return 503
        # The token is taken before bcrypt runs, so that a burst of concurrent wrong
        # passwords cannot all be checked before the first of them is charged.
        self._set_tokens(client, tokens - 1)
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(self._pool, self._web.authorized, header)
        finally:
            self.waiting -= 1
        if ok:
            self._set_tokens(client, self._tokens(client) + 1)  # a right password costs none
            return 200
        return 401

    def _set_tokens(self, client: str, tokens: float) -> None:
        self._failed[client] = (min(tokens, FAILED_LOGIN_BURST), time.monotonic())
        self._failed.move_to_end(client)
        if len(self._failed) > MAX_TRACKED_CLIENTS:
            self._failed.popitem(last=False)

    def _tokens(self, client: str) -> float:
        """How many more failed logins of ``client`` may be checked now."""
        now = time.monotonic()
        tokens, when = self._failed.get(client, (FAILED_LOGIN_BURST, now))
        return min(FAILED_LOGIN_BURST, tokens + (now - when) * FAILED_LOGINS_PER_SECOND)


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
    checks = PasswordChecks(web) if web.users else None

    def answer(status: int, headers: Sequence[tuple[str, str]], body: bytes) -> Response:
        return Response(status, (*headers, *web.headers), body)

    def metrics(request: Request) -> Response:
        openmetrics = wants_openmetrics(request.headers.get("accept", ""))
        compress = accepts_gzip(request.headers.get("accept-encoding", ""))
        content_type = OPENMETRICS if openmetrics else CLASSIC_TEXT
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
        if checks is not None and path not in OPEN_PATHS:
            status = await checks.status(request.headers.get("authorization"), request.client)
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


# Scrapers send the same few headers again and again: each is parsed once (a flood of
# distinct ones only cycles the cache).
@lru_cache(maxsize=64)
def accepts_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` admits gzip (``gzip;q=0`` refuses it)."""
    for coding, _, q in _preferences(accept_encoding):
        if coding in ("gzip", "x-gzip"):
            return q > 0
    return False


@lru_cache(maxsize=64)
def wants_openmetrics(accept: str) -> bool:
    """Whether ``Accept`` prefers OpenMetrics 1.0.0 to the classic text format (RFC 9110
    12.5.1): each format takes the ``q`` of the most specific range naming it (``*/*``,
    ``text/*``, ``text/plain``, a ``version`` that is served), the higher wins, then the
    one named first; the classic format when neither is acceptable."""
    best: dict[bool, tuple[int, float, int]] = {}  # by format: specificity, q, -position
    for position, (media, params, q) in enumerate(_preferences(accept)):
        for openmetrics, (kind, versions) in _FORMATS.items():
            if media in ("*/*", kind.partition("/")[0] + "/*"):
                specificity = 0 if media == "*/*" else 1
            elif media != kind:
                continue
            elif "version" not in params:
                specificity = 2
            elif params["version"] in versions:
                specificity = 3
            else:
                continue
            rank = (specificity, q, -position)
            best[openmetrics] = max(best.get(openmetrics, rank), rank)
    openmetrics, classic = best.get(True), best.get(False)
    if openmetrics is None or openmetrics[1] == 0:
        return False
    return classic is None or classic[1] == 0 or openmetrics[1:] > classic[1:]


def _preferences(header: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Each element of an ``Accept`` or ``Accept-Encoding`` header: its value and parameter
    names in lower case, and its ``q``; an element whose ``q`` is not a valid qvalue
    (RFC 9110 12.4.2: 0 to 1, three decimals at most) is no preference: it is left out."""
    for element in header.split(","):
        value, *pairs = element.split(";")
        params = {}
        for pair in pairs:
            name, _, param = pair.partition("=")
            params[name.strip().lower()] = param.strip().strip('"')
        q = params.pop("q", "1")
        if value.strip() and _QVALUE.fullmatch(q):
            yield value.strip().lower(), params, float(q)


CLASSIC_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# Each format by its media type and the versions of it that this body is.
_FORMATS = {
    False: ("text/plain", ("0.0.4", "1.0.0")),
    True: ("application/openmetrics-text", ("1.0.0",)),
}
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)
_CHALLENGE = ("WWW-Authenticate", 'Basic realm="connectycube-exporter", charset="UTF-8"')
