"""A simulator of ConnectyCube's Admin Statistics API, for the exporter's ``--demo`` mode.

A plain WSGI application; serve it with :func:`start_simulator`. Each listed API key sees a
deterministic pseudo-random history, computed arithmetically from daily counts so that
thousands of keys stay cheap, and the four endpoints answer it the way the API
documentation reads (:class:`Reading`): start_date inclusive, end_date exclusive, per-day
``limit``/``offset`` over the days with data, integer counts, 401 for an unknown key and
422 for bad parameters.

The test suite's rig (``tests/simulator.py``) subclasses :class:`Simulator` to add explicit
events, other readings per key, faults and a control API, through the methods documented
as extension points.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from array import array
from calendar import monthrange
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse, WSGIEnvironment
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exporter.api import API_KEY_HEADER, MESSAGES, PAGE_DAYS, Kind, endpoint_path
from exporter.config import parse_listen_address
from exporter.server import RunningServer

__all__ = [
    "API_KEY_HEADER",
    "DIALOGS_PER_DAY_PATH",
    "DIALOGS_TOTAL_PATH",
    "ENDPOINTS",
    "MESSAGES_PER_DAY_PATH",
    "MESSAGES_TOTAL_PATH",
    "Reading",
    "Simulator",
    "start_simulator",
]

DIALOG_TYPES: tuple[int, ...] = (1, 2, 3, 4, 5)

MESSAGES_TOTAL_PATH = endpoint_path(MESSAGES, per_day=False)
MESSAGES_PER_DAY_PATH = endpoint_path(MESSAGES, per_day=True)
DIALOGS_TOTAL_PATH = endpoint_path(1, per_day=False)
DIALOGS_PER_DAY_PATH = endpoint_path(1, per_day=True)
DEFAULT_LIMIT = PAGE_DAYS

API_KEY_ENVIRON = "HTTP_" + API_KEY_HEADER.upper().replace("-", "_")
JSON = "application/json"
# Calendar day 0 of a start_date before year 1 (which date_of() cannot name) is 0001-01-03.
_EARLIEST_TS = (date(1, 1, 3).toordinal() - date(1970, 1, 1).toordinal()) * 86400.0


@dataclass(frozen=True)
class Endpoint:
    dialogs: bool  # counts dialogs and understands ``types[]``
    per_day: bool  # answers pages of {date: count} instead of {"total": n}


ENDPOINTS: dict[str, Endpoint] = {
    MESSAGES_TOTAL_PATH: Endpoint(dialogs=False, per_day=False),
    MESSAGES_PER_DAY_PATH: Endpoint(dialogs=False, per_day=True),
    DIALOGS_TOTAL_PATH: Endpoint(dialogs=True, per_day=False),
    DIALOGS_PER_DAY_PATH: Endpoint(dialogs=True, per_day=True),
}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# --------------------------------------------------------------------------- time and data

# Log-uniform range of a key's typical daily volume: messages dominate, meetings are rare.
_BASE_VOLUME: dict[Kind, tuple[float, float]] = {
    MESSAGES: (300.0, 3000.0),
    1: (0.5, 5.0),
    2: (5.0, 50.0),
    3: (20.0, 200.0),
    4: (1.0, 10.0),
    5: (0.2, 3.0),
}
HISTORY_KINDS: tuple[Kind, ...] = tuple(_BASE_VOLUME)
_WEEKDAY_FACTOR = (1.0, 1.05, 1.05, 1.0, 0.9, 0.55, 0.45)  # Monday first; weekends are quieter
_QUIET_DAY_SHARE = 0.1  # of dialog types only: a live app always has messages
_DAILY_NOISE = 0.5  # triangular noise: daily volume varies by up to +-50%


def zone_info(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc


class Calendar:
    """Local days of one time zone, as the API's per-day keys see them."""

    def __init__(self, timezone: str) -> None:
        self.zone = zone_info(timezone)
        self._day_starts: dict[int, float] = {}

    def date_of(self, ts: float) -> date:
        """Local date of a unix timestamp."""
        # Day boundaries fall on whole seconds, so flooring avoids fromtimestamp() rounding
        # a timestamp a hair before midnight up into the next day.
        return datetime.fromtimestamp(math.floor(ts), self.zone).date()

    def day_bounds(self, ordinal: int) -> tuple[float, float]:
        """[start, end) unix timestamps of a local day; 23 or 25 hours long around DST."""
        return self.day_start(ordinal), self.day_start(ordinal + 1)

    def day_start(self, ordinal: int) -> float:
        start = self._day_starts.get(ordinal)
        if start is None:
            # fold=0 picks the first midnight when it repeats, and the moment of the jump
            # when DST skips midnight: the first instant of that local date either way.
            start = datetime.combine(date.fromordinal(ordinal), datetime.min.time(), self.zone)
            start = self._day_starts[ordinal] = start.timestamp()
        return start


def _spread_time(start: float, length: float, n: int, i: int, phase: float) -> float:
    """Timestamp of event ``i`` of ``n`` spread evenly over a day.

    ``phase`` 0 puts event 0 at the day's first instant, 0.5 half a gap into the day.
    """
    return start + (i + phase) * length / n


def _spread_before(start: float, length: float, n: int, x: float, phase: float) -> int:
    """How many of ``n`` events spread evenly over [start, start + length) happen before ``x``."""
    if n <= 0 or x <= start:
        return 0
    if x >= start + length:
        return n
    k = min(n, max(0, math.ceil((x - start) * n / length - phase)))
    # The estimate can be off by one through float rounding; agree exactly with _spread_time.
    while k > 0 and _spread_time(start, length, n, k - 1, phase) >= x:
        k -= 1
    while k < n and _spread_time(start, length, n, k, phase) < x:
        k += 1
    return k


class History:
    """Deterministic pseudo-random daily volumes, each day's events spread evenly over it.

    With ``midnight`` event i of n sits i / n of the way into its day, so one is exactly at
    midnight (a hard case for window bounds); otherwise (i + 0.5) / n of the way in.
    """

    def __init__(self, seed: int, calendar: Calendar, first_day: date, midnight: bool) -> None:
        self._seed = seed
        self._calendar = calendar
        self._phase = 0.0 if midnight else 0.5
        self._first_ordinal = first_day.toordinal()
        self._start_ts = calendar.day_bounds(self._first_ordinal)[0]
        # (key, kind) -> cumulative day counts; built lazily, a month at a time.
        self._prefixes: dict[tuple[str, Kind], array[int]] = {}
        self._lock = threading.Lock()

    def before(self, key: str, kind: Kind, x: float) -> int:
        """Number of history events of ``kind`` with timestamp < ``x``."""
        if x <= self._start_ts:
            return 0
        ordinal = self._calendar.date_of(x).toordinal()
        prefix = self._prefix(key, kind, ordinal)
        index = ordinal - self._first_ordinal
        return prefix[index] + self._in_day(ordinal, prefix[index + 1] - prefix[index], x)

    def per_day(
        self, key: str, kind: Kind, lo: float, hi: float, calendar: Calendar
    ) -> Counter[date]:
        """Nonzero counts of history events with lo <= ts < hi, by local date of ``calendar``."""
        counts: Counter[date] = Counter()
        if hi <= self._start_ts:
            return counts
        if calendar is not self._calendar:
            return self._per_foreign_day(key, kind, max(lo, self._start_ts), hi, calendar)
        first = self._first_ordinal
        if lo > self._start_ts:
            first = self._calendar.date_of(lo).toordinal()
        last = self._calendar.date_of(hi).toordinal()
        prefix = self._prefix(key, kind, last)
        for ordinal in range(first, last + 1):
            index = ordinal - self._first_ordinal
            found = n = prefix[index + 1] - prefix[index]
            if n and ordinal in (first, last):  # only the end days can be cut by the window
                found = self._in_day(ordinal, n, hi) - self._in_day(ordinal, n, lo)
            if found:
                counts[date.fromordinal(ordinal)] = found
        return counts

    def _per_foreign_day(
        self, key: str, kind: Kind, lo: float, hi: float, calendar: Calendar
    ) -> Counter[date]:
        """per_day() cut by another zone's days: slower, counts each day's [start, end)."""
        counts: Counter[date] = Counter()
        first, last = calendar.date_of(lo).toordinal(), calendar.date_of(hi).toordinal()
        before = self.before(key, kind, lo)
        for ordinal in range(first, last + 1):
            after = self.before(key, kind, min(hi, calendar.day_start(ordinal + 1)))
            if after > before:
                counts[date.fromordinal(ordinal)] = after - before
            before = after
        return counts

    def _in_day(self, ordinal: int, n: int, x: float) -> int:
        start, end = self._calendar.day_bounds(ordinal)
        return _spread_before(start, end - start, n, x, self._phase)

    def _prefix(self, key: str, kind: Kind, ordinal: int) -> array[int]:
        """Cumulative counts covering ``ordinal``: ``prefix[i]`` = events before day first+i."""
        needed = ordinal - self._first_ordinal + 2
        prefix = self._prefixes.get((key, kind))
        if prefix is not None and len(prefix) >= needed:
            return prefix
        with self._lock:
            prefix = self._prefixes.setdefault((key, kind), array("q", [0]))
            base = self._base_volume(key, kind)
            while len(prefix) < needed:
                day = date.fromordinal(self._first_ordinal + len(prefix) - 1)
                for n in self._month_counts(key, kind, base, day)[day.day - 1 :]:
                    prefix.append(prefix[-1] + n)
        return prefix

    def _base_volume(self, key: str, kind: Kind) -> float:
        """The key's typical daily volume for ``kind``."""
        low, high = _BASE_VOLUME[kind]
        rng = random.Random(f"{self._seed}:{key}:{kind}:base")
        return math.exp(rng.uniform(math.log(low), math.log(high)))

    def _month_counts(self, key: str, kind: Kind, base: float, day: date) -> list[int]:
        """Daily counts of the month containing ``day``."""
        # One seeded generator per calendar month, not per day: seeding costs ~10 us, which
        # would make a first scrape of 1000 keys x 400 days x 6 kinds take ~25 s of CPU.
        # Per-day draws are kept to a few random() calls for the same reason.
        rng = random.Random(f"{self._seed}:{key}:{kind}:{day.year:04d}-{day.month:02d}")
        first_weekday, days = monthrange(day.year, day.month)
        counts = []
        for i in range(days):
            # Drawn for messages too, so that dialog volumes stay the same for a seed.
            quiet = rng.random() < _QUIET_DAY_SHARE and kind != MESSAGES
            noise = 1.0 + _DAILY_NOISE * (rng.random() - rng.random())
            volume = base * _WEEKDAY_FACTOR[(first_weekday + i) % 7] * noise
            # Random rounding keeps rare kinds (0.2 meetings a day) from always rounding to 0.
            counts.append(0 if quiet else math.floor(volume + rng.random()))
        return counts


# --------------------------------------------------------------------------- how the API reads


def events_window(
    start: float | None,
    end: float | None,
    now: float,
    start_inclusive: bool = True,
    end_inclusive: bool = False,
) -> tuple[float, float]:
    """Half-open [lo, hi) of the events a window selects that exist at ``now``."""
    # Timestamps are floats, so ts > x is exactly ts >= nextafter(x).
    hi = math.nextafter(now, math.inf)  # an event exists once ts <= now
    if end is not None:
        hi = min(hi, math.nextafter(end, math.inf) if end_inclusive else float(end))
    if start is None:
        return -math.inf, hi
    lo = float(start) if start_inclusive else math.nextafter(start, math.inf)
    return min(lo, hi), hi


class Reading:
    """The documented reading of what the API leaves open; the demo's keys all play it.

    The tests' ``Variant`` overrides these methods to play other readings.
    """

    timezone: str | None = None  # zone of the per-day keys; None: the simulator's

    def window(self, start: float | None, end: float | None, now: float) -> tuple[float, float]:
        """Events with start <= ts < end (and ts <= now)."""
        return events_window(start, end, now)

    def page(
        self, days: dict[date, int], limit: int, offset: int, origin: date | None
    ) -> list[tuple[date, int]]:
        """One per-day answer from ascending nonzero ``days``: offset and limit count days
        with data. ``origin`` is the local day of start_date (None without one)."""
        return list(days.items())[offset : offset + limit]

    def count(self, n: int) -> int | str | float:
        """A count as written in JSON."""
        return n

    def error(self, message: str) -> dict[str, Any]:
        """An error body."""
        return {"errors": {"base": [message]}}


DOCUMENTED = Reading()


# --------------------------------------------------------------------------- HTTP plumbing


class Refused(ValueError):
    """A request the API refuses with ``status`` (422: a bad query parameter)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Query:
    start: int | None
    end: int | None
    limit: int
    offset: int
    types: tuple[int, ...] | None


def _parse_int(name: str, text: str) -> int:
    # int() alone would also take "1_000", " 7" or "+7", which a strict API refuses; the
    # length cap keeps absurd values from overflowing float arithmetic later.
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        raise Refused(f"{name} must be an integer")
    return int(text)


def _last_int(params: dict[str, list[str]], name: str) -> int | None:
    """The last value given for ``name``, as an int; None when absent."""
    values = params.get(name)
    return _parse_int(name, values[-1]) if values else None


def parse_query(raw: str, endpoint: Endpoint) -> Query:
    """The parameters ``endpoint`` understands; others (bare ``types``) are ignored."""
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    limit, offset = DEFAULT_LIMIT, 0
    if endpoint.per_day:
        given_limit, given_offset = _last_int(params, "limit"), _last_int(params, "offset")
        limit = DEFAULT_LIMIT if given_limit is None else given_limit
        offset = 0 if given_offset is None else given_offset
        if limit < 1 or offset < 0:
            raise Refused("limit must be >= 1 and offset >= 0")
    types = None
    if endpoint.dialogs and "types[]" in params:
        types = tuple(_parse_int("types[]", value) for value in params["types[]"])
    return Query(
        _last_int(params, "start_date"), _last_int(params, "end_date"), limit, offset, types
    )


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def send(
    start_response: StartResponse,
    status: int,
    body: bytes,
    content_type: str = JSON,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    start_response(
        status_line(status),
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def send_json(
    start_response: StartResponse,
    status: int,
    payload: Any,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    return send(start_response, status, json.dumps(payload).encode(), headers=headers)


def send_error(
    start_response: StartResponse,
    status: int,
    message: str,
    headers: Iterable[tuple[str, str]] = (),
    reading: Reading = DOCUMENTED,
) -> list[bytes]:
    """An error body in ``reading``'s shape, by default {"errors": {"base": [message]}}."""
    return send_json(start_response, status, reading.error(message), headers)


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """WSGI app answering the four Admin Statistics endpoints from a random history.

    Methods marked *extension point* are where the tests' rig adds to it.
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = ("demo-key",),
        timezone: str = "UTC",
        history_days: int = 400,
        seed: int = 0,
        random_history: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require(history_days >= 0, "history_days must be >= 0")
        self._api_keys = frozenset([api_keys] if isinstance(api_keys, str) else api_keys)
        self._clock = clock
        self._seed = seed
        self._calendar = Calendar(timezone)
        self._calendars = {timezone: self._calendar}
        # Anchored at construction, so totals never shrink when a day rolls over.
        self._first_day = self._calendar.date_of(clock()) - timedelta(days=history_days)
        self._history = (
            History(seed, self._calendar, self._first_day, midnight=False)
            if random_history
            else None
        )

    # ----------------------------------------------------------------- keys and events

    def is_valid_key(self, api_key: str | None) -> bool:
        """Whether the API would accept ``api_key``. Extension point."""
        return bool(api_key) and api_key in self._api_keys

    def _reading_of(self, api_key: str | None) -> Reading:
        """How the API answers ``api_key``. Extension point."""
        return DOCUMENTED

    def _history_of(self, api_key: str, kind: Kind) -> History | None:
        """The random history ``api_key`` sees for ``kind``. Extension point."""
        return self._history if kind in HISTORY_KINDS else None

    def _dialog_kinds(self, api_key: str) -> list[Kind]:
        """Every dialog type that has data for ``api_key``. Extension point."""
        return list(DIALOG_TYPES) if self._history is not None else []

    def _before(self, api_key: str, kind: Kind, x: float) -> int:
        """Number of events of ``kind`` with timestamp < ``x``. Extension point."""
        history = self._history_of(api_key, kind)
        return 0 if history is None else history.before(api_key, kind, x)

    def _day_counts(
        self, api_key: str, kind: Kind, lo: float, hi: float, calendar: Calendar
    ) -> Counter[date]:
        """Counts of events of ``kind`` with lo <= ts < hi by local date. Extension point."""
        history = self._history_of(api_key, kind)
        return Counter() if history is None else history.per_day(api_key, kind, lo, hi, calendar)

    def _count(self, api_key: str, kinds: Iterable[Kind], lo: float, hi: float) -> int:
        """Events with lo <= ts < hi."""
        return sum(
            self._before(api_key, kind, hi) - self._before(api_key, kind, lo) for kind in kinds
        )

    def _per_day(
        self, api_key: str, kinds: Iterable[Kind], lo: float, hi: float, calendar: Calendar
    ) -> dict[date, int]:
        """Nonzero counts of events with lo <= ts < hi by local date, ascending."""
        counts: Counter[date] = Counter()
        for kind in kinds:
            counts.update(self._day_counts(api_key, kind, lo, hi, calendar))
        return {day: counts[day] for day in sorted(counts) if counts[day] > 0}

    def _calendar_of(self, timezone: str | None) -> Calendar:
        if timezone is None:
            return self._calendar
        if timezone not in self._calendars:
            # Racing threads may both build one: harmless, calendars only cache.
            self._calendars[timezone] = Calendar(timezone)
        return self._calendars[timezone]

    # ----------------------------------------------------------------- WSGI

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        api_key = environ.get(API_KEY_ENVIRON) or None
        if path not in ENDPOINTS:
            reading = self._reading_of(api_key)
            return send_error(start_response, 404, f"no such endpoint: {path}", (), reading)
        return self._serve_api(environ, start_response, path, api_key)

    def _serve_api(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        path: str,
        api_key: str | None,
    ) -> Iterable[bytes]:
        """One request to an endpoint, whatever its method. Extension point."""
        if environ.get("REQUEST_METHOD") != "GET":
            allow = [("Allow", "GET")]
            return send_error(
                start_response, 405, "method not allowed", allow, self._reading_of(api_key)
            )
        return self._answer_get(environ, start_response, path, api_key)

    def _answer_get(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        path: str,
        api_key: str | None,
    ) -> Iterable[bytes]:
        """A GET of an endpoint. Extension point."""
        status, payload = self._answer(api_key, ENDPOINTS[path], environ.get("QUERY_STRING", ""))
        return send_json(start_response, status, payload)

    def _answer(self, api_key: str | None, endpoint: Endpoint, raw_query: str) -> tuple[int, Any]:
        """Status and JSON answer of a GET of ``endpoint``."""
        reading = self._reading_of(api_key)
        if api_key is None or not self.is_valid_key(api_key):
            return 401, reading.error("Required session does not exist")
        try:
            query = self._query(api_key, endpoint, raw_query)
        except Refused as exc:
            return exc.status, reading.error(str(exc))
        return 200, self._payload(api_key, endpoint, query)

    def _query(self, api_key: str, endpoint: Endpoint, raw_query: str) -> Query:
        """The query of a valid key's request; raises Refused. Extension point."""
        return parse_query(raw_query, endpoint)

    def _payload(self, api_key: str, endpoint: Endpoint, query: Query) -> Any:
        """The JSON answer of a valid request, as the key's reading has it. Extension point."""
        reading = self._reading_of(api_key)
        if not endpoint.dialogs:
            kinds: list[Kind] = [MESSAGES]
        elif query.types is None:
            kinds = self._dialog_kinds(api_key)
        else:
            kinds = sorted(set(query.types))
        lo, hi = reading.window(query.start, query.end, self._clock())
        if not endpoint.per_day:
            return {"total": reading.count(self._count(api_key, kinds, lo, hi))}
        calendar = self._calendar_of(reading.timezone)
        days = self._per_day(api_key, kinds, lo, hi, calendar)
        # The local day of start_date, even when nothing happened on it.
        origin = None if query.start is None else calendar.date_of(max(lo, _EARLIEST_TS))
        page = reading.page(days, query.limit, query.offset, origin)
        return {day.isoformat(): reading.count(n) for day, n in page}

    def _serve(self, host: str, port: int) -> RunningServer:
        """A server of this app on host:port. Extension point."""
        return RunningServer(self, host, port)


def start_simulator(simulator: Simulator, address: str = "127.0.0.1:0") -> RunningServer:
    """Serve ``simulator`` on ``address`` (HOST:PORT; port 0 picks a free port)."""
    host, port = parse_listen_address(address)
    return simulator._serve(host, port)
