"""The ConnectyCube Admin Statistics API over HTTP: requests, answers and their errors.

Nothing here knows about Prometheus. Every failure is raised as an ``APIError`` subclass
whose ``outcome`` names the kind of failure and whose message names the endpoint and the
reason, never the API key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import quote, quote_plus, unquote
from zoneinfo import ZoneInfo

import httpx

from exporter import __version__, api
from exporter.api import ONE_DAY, Kind
from exporter.config import AppConfig, Settings

T = TypeVar("T")

RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS: Final = 3600.0  # a hostile or broken header must not silence an app
MIN_RETRY_SECONDS: Final = 0.5  # the least time left for which a retry is still sent


class APIError(Exception):
    """A request that did not give a usable answer."""

    outcome: ClassVar[str] = "error"

    def __init__(self, endpoint: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason
        self.status = status  # of the answer, for an APIStatusError


class APITimeout(APIError):
    outcome = "timeout"


class APIConnectionError(APIError):
    outcome = "connection_error"


class APIStatusError(APIError):
    outcome = "http_error"


class APIInvalidResponse(APIError):
    outcome = "invalid_response"


class APIRateLimited(APIError):
    outcome = "rate_limited"  # not sent: Retry-After asked for a pause past the deadline


@dataclass
class Days:
    """Per-day counts of a range, each window of them proven against the API's total."""

    counts: dict[date, int] = field(default_factory=dict)  # quiet days absent
    # Days on which the endpoints still disagree, alone in their window with every page of
    # it read: the total's figure minus the per-day one (which ``counts`` holds).
    disputed: dict[date, int] = field(default_factory=dict)
    requests: int = 0  # spent on the range, retries aside


@dataclass(frozen=True)
class ClientLimits:
    """How hard the client tries, and how much it lets the API cost."""

    request_timeout: float = 10.0  # one attempt, connection to last byte
    max_retries: int = 2  # after the first attempt, for transient failures only
    backoff_base: float = 0.5  # seconds; doubles each retry, with full jitter
    backoff_max: float = 8.0
    max_concurrent_requests: int = 64  # all apps together
    max_response_bytes: int = 1 << 20  # 100 days of counts are ~2 KB


def limits_from(settings: Settings) -> ClientLimits:
    return ClientLimits(
        request_timeout=settings.request_timeout_seconds,
        max_retries=settings.max_retries,
        max_concurrent_requests=settings.max_concurrent_requests,
        max_response_bytes=settings.max_response_bytes,
    )


# httpcore walks every connection of a pool, each time with a syscall for an idle one, on
# each request's start and end, and closes every idle connection while the pool holds more
# than its keep-alive count. One pool of 64 thus either costs 64 x 64 checks a request
# (21 ms of CPU per request, measured once) or, kept alive for 16, opens a new connection
# for most requests of a busy cycle: over TLS, a full handshake each. Pools of this many
# connections, each keeping all of its own alive, have neither cost.
CONNECTIONS_PER_POOL: Final = 8


class PoolShards(httpx.AsyncBaseTransport):
    """Small connection pools side by side; each request goes to the one with the fewest
    requests in flight, and stays counted there until its answer is closed."""

    def __init__(self, pools: list[httpx.AsyncHTTPTransport]) -> None:
        self._pools = pools
        self._in_flight = [0] * len(pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = self._in_flight.index(min(self._in_flight))
        self._in_flight[i] += 1
        try:
            response = await self._pools[i].handle_async_request(request)
        except BaseException:
            self._in_flight[i] -= 1
            raise
        response.stream = _Counted(response.stream, self._in_flight, i)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Counted(httpx.AsyncByteStream):
    """An answer's body that leaves its pool's in-flight count when closed, once."""

    def __init__(self, stream: Any, in_flight: list[int], pool: int) -> None:
        self._stream = stream
        self._in_flight: list[int] | None = in_flight
        self._pool = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if self._in_flight is not None:
            self._in_flight[self._pool] -= 1
            self._in_flight = None
        await self._stream.aclose()


def open_http(limits: ClientLimits) -> httpx.AsyncClient:
    """The one HTTP client of a process: as many connections as requests allowed in flight,
    every one kept alive, in ``PoolShards``."""
    shards = -(-limits.max_concurrent_requests // CONNECTIONS_PER_POOL)
    # One TLS context for all: each would otherwise load the CA bundle again.
    tls = httpx.create_ssl_context()
    size = httpx.Limits(max_connections=CONNECTIONS_PER_POOL)  # all kept alive
    return httpx.AsyncClient(
        timeout=httpx.Timeout(limits.request_timeout),
        # Mounted, not given as the transport: httpx then still routes the hosts that the
        # environment's HTTPS_PROXY, HTTP_PROXY and ALL_PROXY name through them (NO_PROXY
        # ones through a plain pool of its own, verified alike).
        verify=tls,
        mounts={
            "all://": PoolShards(
                [httpx.AsyncHTTPTransport(verify=tls, limits=size) for _ in range(shards)]
            )
        },
        # Compressed answers are not asked for; one that comes anyway is decoded by
        # StatsClient, with the size cap applied to what it decodes to.
        headers={
            "User-Agent": f"connectycube-exporter/{__version__}",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        },
        # No cookie jar: a cookie set in answer to one app's key must never travel with
        # another app's key over this shared client.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


class StatsClient:
    """Fetches counts for any app over one shared ``httpx.AsyncClient``, with requests in
    flight capped across all apps. Transient failures (connection errors, timeouts, 429,
    5xx) are retried with exponential backoff and full jitter, never past the caller's
    deadline; a 429 or 503's ``Retry-After`` holds every request to the app, across polls."""

    def __init__(self, http: httpx.AsyncClient, limits: ClientLimits | None = None) -> None:
        self._http = http
        self._limits = limits or ClientLimits()
        self._slots = asyncio.Semaphore(self._limits.max_concurrent_requests)
        self._not_before: dict[str, float] = {}  # app name -> clock() of the next request
        self.requests = 0  # sent, retries included

    async def total(
        self,
        app: AppConfig,
        kind: Kind,
        start: int | None = None,
        end: int | None = None,
        *,
        deadline: float = math.inf,
    ) -> int:
        """All-time count of ``kind``, or the count between ``start`` and ``end``."""
        path = api.endpoint_path(kind, per_day=False)
        query = api.build_query(kind, start, end)
        return await self._get(app, path, query, deadline, api.parse_total)

    async def per_day(
        self,
        app: AppConfig,
        kind: Kind,
        start: int | None = None,
        end: int | None = None,
        offset: int | None = None,
        *,
        deadline: float = math.inf,
    ) -> dict[date, int]:
        """A page of counts of ``kind`` by day between ``start`` and ``end``: quiet days are
        absent, and a cap on the page may leave out more (see ``days``)."""
        path = api.endpoint_path(kind, per_day=True)
        query = api.build_query(kind, start, end, api.PAGE_DAYS, offset)
        return await self._get(app, path, query, deadline, api.parse_per_day)

    async def days(
        self,
        app: AppConfig,
        kind: Kind,
        first: date,
        last: date,
        zone: ZoneInfo,
        *,
        deadline: float = math.inf,
        done: Callable[[date, date], None] = lambda first, last: None,
    ) -> Days:
        """The count of each day with activity from ``first`` to ``last``, each proven.

        A window's per-day answer is taken only when its days add up to the API's total for
        the very same ``start_date`` and ``end_date``: then no cap on the page cut it short,
        whatever ``limit`` and ``offset`` count and whatever the bounds (both endpoints read
        them alike). Any other window is asked again as two halves, down to single days.
        ``done(first, last)`` is called as each part of the range is complete.
        """
        proven = Days()

        async def prove(first: date, last: date) -> None:
            start, end = api.days_window(first, last, zone)
            page, total, asked = await self._window(app, kind, start, end, first == last, deadline)
            proven.requests += asked
            # The window's extra second and an inclusive end may add the day either side.
            stray = sorted(day for day in page if not first - ONE_DAY <= day <= last + ONE_DAY)
            if stray:
                path = api.endpoint_path(kind, per_day=True)
                raise APIInvalidResponse(
                    path, f"asked for {first} to {last}, the answer holds {stray[0]}"
                )
            shortfall = total - sum(page.values())
            if first == last or not shortfall:
                proven.counts.update((day, n) for day, n in page.items() if first <= day <= last)
                if shortfall:
                    # Alone in its window, every page of it read: the endpoints disagree.
                    proven.disputed[first] = shortfall
                done(first, last)
                return
            # One half after the other: an error then ends the work, with no half left over.
            middle = first + (last - first) // 2
            await prove(first, middle)
            await prove(middle + ONE_DAY, last)

        await prove(first, last)
        return proven

    async def _window(
        self,
        app: AppConfig,
        kind: Kind,
        start: int,
        end: int,
        narrow: bool,
        deadline: float,
    ) -> tuple[dict[date, int], int, int]:
        """The per-day answer for a window, the API's total for it, and the requests they
        took. When they disagree over a ``narrow`` window, one that touches at most three
        dates (a day and a second either side), the pages at ``offset`` 1 and 2 are read
        too: whether ``offset`` counts days with data or calendar days, the three pages hold
        every date there is."""
        page, total = await asyncio.gather(
            self.per_day(app, kind, start, end, deadline=deadline),
            self.total(app, kind, start, end, deadline=deadline),
        )
        asked = 2
        if narrow:
            for offset in (1, 2):
                if sum(page.values()) == total:
                    break
                more = await self.per_day(app, kind, start, end, offset=offset, deadline=deadline)
                asked += 1
                page = {**more, **page}
        return page, total, asked

    async def total_at_end_of(
        self, app: AppConfig, kind: Kind, day: date, zone: ZoneInfo, *, deadline: float = math.inf
    ) -> int:
        """The all-time total as it stood at the end of ``day``, whatever the bounds: events
        at exactly the next midnight, which an inclusive ``end_date`` counts too, are read
        from a proven per-day answer over the same end and taken off again."""
        start, end = api.all_time_window(day, zone)
        total = await self.total(app, kind, start, end, deadline=deadline)
        edge, _, _ = await self._window(app, kind, end - 1, end, True, deadline)
        return total - edge.get(day + ONE_DAY, 0)

    def forget(self, app_name: str) -> None:
        """Drop what is known of an app that is no longer polled."""
        self._not_before.pop(app_name, None)

    async def _get(
        self, app: AppConfig, path: str, query: str, deadline: float, parse: Callable[[Any], T]
    ) -> T:
        """The answer, parsed; transient failures retried while the deadline leaves time."""
        retries = 0
        previous: APIError | None = None
        while True:
            try:
                return parse(await self._send(app, path, query, deadline))
            except api.InvalidAnswer as exc:
                raise APIInvalidResponse(path, _scrub(str(exc), app)) from None
            except APIError as error:
                cut_off = isinstance(error, APIRateLimited) or (
                    isinstance(error, APITimeout) and time.monotonic() >= deadline - 0.01
                )
                if previous is not None and cut_off:
                    # A retry the deadline cut off says nothing new: the cause is what
                    # failed the attempt before it.
                    raise previous from None
                previous = error
                transient = isinstance(error, APITimeout | APIConnectionError)
                ceiling = min(self._limits.backoff_max, self._limits.backoff_base * 2**retries)
                delay = random.uniform(0, ceiling)
                # A retry with less time left than an answer takes would only fail again.
                worth = min(self._limits.request_timeout, MIN_RETRY_SECONDS)
                if (
                    not (transient or error.status in RETRYABLE_STATUSES)
                    or retries >= self._limits.max_retries
                    or time.monotonic() + delay + worth >= deadline
                ):
                    raise
                retries += 1
                await asyncio.sleep(delay)

    async def _send(self, app: AppConfig, path: str, query: str, deadline: float) -> Any:
        """One request, after the pause the API asked for and once a request slot is free."""
        wait = self._not_before.get(app.name, 0.0) - time.monotonic()
        if wait > 0:
            if time.monotonic() + wait >= deadline:
                raise APIRateLimited(path, f"not sent: the API asked to wait {wait:.0f}s more")
            await asyncio.sleep(wait)
        url = f"{app.api_url}{path}" + (f"?{query}" if query else "")
        headers = {api.API_KEY_HEADER: app.api_key.get_secret_value()}
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise APITimeout(path, "no request slot free before the poll deadline") from None
        self.requests += 1
        budget = max(min(self._limits.request_timeout, deadline - time.monotonic()), 0)
        # The exchange runs to its end even when the poll is cancelled (a reload dropped the
        # app): httpcore's pool can lose a connection for good to a request cancelled
        # mid-way (encode/httpcore#1093). Its slot comes back when it ends, within budget.
        exchange = asyncio.ensure_future(self._exchange(app, url, headers, path, budget))
        exchange.add_done_callback(_ignore_outcome)
        response, body = await asyncio.shield(exchange)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            payload = None
            if response.is_success:
                raise APIInvalidResponse(path, "answer is not JSON") from None
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if not response.is_success or errors is not None:
            # Some APIs say "no" inside a 200: that is a refusal too, not a strange count.
            delay = parse_retry_after(response.headers.get("Retry-After", ""))
            if response.status_code in (429, 503) and delay is not None:
                until = time.monotonic() + delay
                self._not_before[app.name] = max(self._not_before.get(app.name, 0.0), until)
            message = _scrub(_error_message(errors), app)[:200]  # mask, then shorten
            reason = f"HTTP {response.status_code}" + (f": {message}" if message else "")
            raise APIStatusError(path, reason, response.status_code)
        return payload

    async def _exchange(
        self, app: AppConfig, url: str, headers: dict[str, str], path: str, budget: float
    ) -> tuple[httpx.Response, bytes]:
        """A request and its whole answer, under a request slot it gives back at the end."""
        try:
            # httpx's timeouts bound each read; this bounds the whole answer, so that a
            # body trickling in a byte at a time cannot hold the poll.
            async with asyncio.timeout(budget):
                async with self._http.stream("GET", url, headers=headers) as response:
                    return response, await self._read_capped(response, path)
        except (TimeoutError, httpx.TimeoutException):
            raise APITimeout(path, f"timed out after {budget:.3g}s") from None
        except httpx.TransportError as exc:
            detail = str(exc).strip()
            reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            raise APIConnectionError(path, _scrub(reason, app)) from None
        except zlib.error:
            raise APIInvalidResponse(path, "compressed answer does not decode") from None
        finally:
            self._slots.release()

    async def _read_capped(self, response: httpx.Response, path: str) -> bytes:
        """The body, refused once it decodes to more than any real answer.

        Decoded here: a few kilobytes of gzip can decode to gigabytes, and httpx would
        decode a whole network read before anything could count it."""
        cap = self._limits.max_response_bytes
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            # Stacked encodings ("gzip, gzip") only serve to multiply a bomb's ratio.
            raise APIInvalidResponse(path, "answer has a stacked or unsupported Content-Encoding")
        # gzip or zlib (deflate), told apart by their headers.
        decoder = None if encoding in ("", "identity") else zlib.decompressobj(32 + zlib.MAX_WBITS)
        body = bytearray()
        async for raw in response.aiter_raw():
            # At most one byte past the cap is ever decoded, whatever the ratio.
            body += raw if decoder is None else decoder.decompress(raw, cap - len(body) + 1)
            if len(body) > cap:
                raise APIInvalidResponse(path, f"answer is larger than {cap} bytes")
        if decoder is not None and not decoder.eof:
            raise APIInvalidResponse(path, "compressed answer ends early")
        return bytes(body)


def _ignore_outcome(exchange: asyncio.Future[Any]) -> None:
    """Marks an exchange's error as seen: the poll that awaited it may be gone."""
    if not exchange.cancelled():
        exchange.exception()


def parse_retry_after(value: str, cap: float = MAX_RETRY_AFTER_SECONDS) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; a zone-less one is read as such
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


def _scrub(text: str, app: AppConfig) -> str:
    """Masks the key, should a library or a server ever echo it back, in any case and in
    the encodings a server might use (percent, base64, hex)."""
    key = app.api_key.get_secret_value()
    raw = key.encode()
    encoded = [encode(raw).decode() for encode in (base64.b64encode, base64.urlsafe_b64encode)]
    spellings = {key, quote(key, safe=""), quote_plus(key, safe=""), raw.hex(), *encoded}
    spellings.update(text.rstrip("=") for text in encoded)
    pattern = "|".join(re.escape(spelling) for spelling in sorted(spellings, key=len, reverse=True))
    return re.sub(pattern, "***", unquote(text) if "%" in text else text, flags=re.IGNORECASE)


def _error_message(errors: Any) -> str:
    """The API's own words: ``{"errors": {"base": [...]}}`` or ``{"errors": [...]}``."""
    values = errors.values() if isinstance(errors, dict) else [errors]
    items = [item for value in values for item in (value if isinstance(value, list) else [value])]
    return "; ".join(str(item) for item in items if isinstance(item, str | int | float))
