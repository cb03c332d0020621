"""A faithful, scriptable simulator of ConnectyCube's Admin Statistics API.

Used by the test suite, the benchmarks and the exporter's ``--demo`` mode. It is a plain
WSGI application; serve it with :func:`start_simulator` or ``python -m exporter.simulator``.

Each valid API key sees the sum of two event sources:

* a deterministic pseudo-random history (``random_history=True``), computed arithmetically
  from daily counts so that thousands of keys stay cheap, and
* explicit events added with :meth:`Simulator.add_events`, for exact expected values.

The API documentation leaves some behaviours open (window bounds, what ``offset`` counts,
count types, error shapes, ...). A :class:`Variant` fixes one reading of each; every API key
can play its own, so that one server hosts many variants at once. The ground truth
(:meth:`Simulator.count`, :meth:`Simulator.per_day`) is the same under every variant.

Faults (latency, error statuses, malformed or pathological bodies) are switched on with
:meth:`Simulator.set_faults` or over HTTP with ``POST /_sim/faults``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from array import array
from bisect import bisect_left
from calendar import monthrange
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from http import HTTPStatus
from typing import Any, Literal, TypeAlias, get_args
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse, WSGIEnvironment
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exporter.api import API_KEY_HEADER, MESSAGES, PAGE_DAYS, Kind, endpoint_path
from exporter.config import parse_listen_address
from exporter.server import RunningServer

ALL_DIALOGS = "dialogs"  # accepted by count()/per_day() only: every dialog type together
DIALOG_TYPES: tuple[int, ...] = (1, 2, 3, 4, 5)

MESSAGES_TOTAL_PATH = endpoint_path(MESSAGES, per_day=False)
MESSAGES_PER_DAY_PATH = endpoint_path(MESSAGES, per_day=True)
DIALOGS_TOTAL_PATH = endpoint_path(1, per_day=False)
DIALOGS_PER_DAY_PATH = endpoint_path(1, per_day=True)
DEFAULT_LIMIT = PAGE_DAYS

BODY_MODES = frozenset(
    {
        "garbage",
        "truncated",
        "wrong_shape",
        "negative",
        "float",
        "bad_date_key",
        "empty",
        "huge",
        "trickle",
        "hang",
        "reset",
        "error_body",
    }
)
# These replace the whole answer (before auth), like a broken proxy in front of the API.
_TRANSPORT_MODES = frozenset({"garbage", "truncated", "huge", "trickle", "reset"})
# These reshape an otherwise successful answer, like a buggy API release.
_VALUE_MODES = frozenset(
    {"wrong_shape", "negative", "float", "bad_date_key", "empty", "error_body"}
)

_API_KEY_ENVIRON = "HTTP_" + API_KEY_HEADER.upper().replace("-", "_")
_JSON = "application/json"
_RECENT_REQUESTS = 1000
_HANG_POLL_SECONDS = 0.05
# Set when the server stops; held responses wait on it. Other servers get one never set.
_STOPPING_ENVIRON = "simulator.stopping"
_NEVER = threading.Event()
_TRICKLE_INTERVAL_SECONDS = 1.0
_HUGE_CHUNK_BYTES = 64 * 1024
_SAMPLE_TOTAL = b'{"total": 167}'
_SAMPLE_PER_DAY = b'{"2023-02-20": 56, "2023-02-21": 78, "2023-02-26": 47}'
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1>upstream went away</body></html>\n"

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


@dataclass(frozen=True)
class _Endpoint:
    dialogs: bool  # counts dialogs and understands ``types[]``
    per_day: bool  # answers pages of {date: count} instead of {"total": n}


ENDPOINTS: dict[str, _Endpoint] = {
    MESSAGES_TOTAL_PATH: _Endpoint(dialogs=False, per_day=False),
    MESSAGES_PER_DAY_PATH: _Endpoint(dialogs=False, per_day=True),
    DIALOGS_TOTAL_PATH: _Endpoint(dialogs=True, per_day=False),
    DIALOGS_PER_DAY_PATH: _Endpoint(dialogs=True, per_day=True),
}


# --------------------------------------------------------------------------- time and data


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc


class _Calendar:
    """Local days of one time zone, as the API's per-day keys see them."""

    def __init__(self, timezone: str) -> None:
        self.zone = _zone(timezone)
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


class _History:
    """Deterministic pseudo-random daily volumes, each day's events spread evenly over it.

    With ``midnight`` event i of n sits i / n of the way into its day, so one is exactly at
    midnight (a hard case for window bounds); otherwise (i + 0.5) / n of the way in.
    """

    def __init__(self, seed: int, calendar: _Calendar, first_day: date, midnight: bool) -> None:
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
        self, key: str, kind: Kind, lo: float, hi: float, calendar: _Calendar
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
        self, key: str, kind: Kind, lo: float, hi: float, calendar: _Calendar
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


class _ExplicitEvents:
    """Events added by hand: sorted timestamp lists per key and kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Replaced, never mutated, so that readers need no lock.
        self._events: dict[str, dict[Kind, list[float]]] = {}

    def add(self, key: str, kind: Kind, timestamps: list[float]) -> None:
        with self._lock:
            by_kind = dict(self._events.get(key, {}))
            by_kind[kind] = sorted([*by_kind.get(kind, []), *timestamps])
            self._events[key] = by_kind

    def clear(self) -> None:
        with self._lock:
            self._events = {}

    def kinds(self, key: str) -> set[Kind]:
        return set(self._events.get(key, {}))

    def before(self, key: str, kind: Kind, x: float) -> int:
        """Number of events with timestamp < ``x``."""
        return bisect_left(self._timestamps(key, kind), x)

    def per_day(
        self, key: str, kind: Kind, lo: float, hi: float, calendar: _Calendar
    ) -> Counter[date]:
        """Counts of events with lo <= ts < hi, by local date of ``calendar``."""
        timestamps = self._timestamps(key, kind)
        window = timestamps[bisect_left(timestamps, lo) : bisect_left(timestamps, hi)]
        return Counter(calendar.date_of(ts) for ts in window)

    def _timestamps(self, key: str, kind: Kind) -> list[float]:
        return self._events.get(key, {}).get(kind, [])


# --------------------------------------------------------------------------- faults and stats


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_timestamp(ts: float, calendars: Iterable[_Calendar]) -> float:
    _require(_is_number(ts) and math.isfinite(ts), f"bad timestamp {ts!r}")
    try:
        for calendar in calendars:
            calendar.date_of(ts)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"timestamp out of range: {ts!r}") from exc
    return float(ts)


@dataclass(frozen=True)
class Faults:
    """One set of simulated faults; see :meth:`Simulator.set_faults` for the meaning."""

    latency: float = 0.0
    status: int | None = None
    retry_after: str | None = None
    body: str | None = None
    huge_mb: float = 50.0
    count: int | None = None
    paths: frozenset[str] | None = None
    keys: frozenset[str] | None = None

    def __post_init__(self) -> None:
        _require(_is_number(self.latency) and self.latency >= 0, "latency must be >= 0")
        _require(
            self.status is None or (_is_int(self.status) and 200 <= self.status <= 599),
            "status must be an HTTP status code",
        )
        _require(
            self.retry_after is None or isinstance(self.retry_after, str),
            "retry_after must be a string",
        )
        _require(
            self.body is None or self.body in BODY_MODES,
            f"body must be one of {sorted(BODY_MODES)}",
        )
        _require(_is_number(self.huge_mb) and self.huge_mb > 0, "huge_mb must be > 0")
        _require(
            self.count is None or (_is_int(self.count) and self.count > 0), "count must be > 0"
        )
        _require(
            self.paths is None or self.paths <= ENDPOINTS.keys(),
            f"paths must be among {sorted(ENDPOINTS)}",
        )

    @property
    def active(self) -> bool:
        return bool(self.latency) or self.status is not None or self.body is not None

    def applies_to(self, path: str, key: str | None) -> bool:
        return (self.paths is None or path in self.paths) and (
            self.keys is None or key in self.keys
        )

    def to_json(self) -> dict[str, Any]:
        """The options as set_faults() / POST /_sim/faults accept them."""
        options = {field.name: getattr(self, field.name) for field in fields(self)}
        for name in ("paths", "keys"):
            if options[name] is not None:
                options[name] = sorted(options[name])
        return options


_NO_FAULTS = Faults()


def _frozen(values: Iterable[str] | None, name: str) -> frozenset[str] | None:
    """A fault's paths/keys as a set; a bare string is refused, not split into letters."""
    if values is None:
        return None
    if isinstance(values, str | bytes):
        raise TypeError(f"{name} must be a list of strings")
    return frozenset(values)


class _Stats:
    """Thread-safe accounting of API requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._clear()

    def _clear(self) -> None:
        self._requests = 0
        self._by_path: Counter[str] = Counter()
        self._peak = self._in_flight
        self._recent: deque[dict[str, Any]] = deque(maxlen=_RECENT_REQUESTS)

    def begin(self, path: str, query: str, key_ok: bool) -> None:
        with self._lock:
            self._requests += 1
            self._by_path[path] += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            self._recent.append(
                {"path": path, "query": query, "key_ok": key_ok, "time": time.time()}
            )

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def reset(self) -> None:
        # Requests still in flight stay counted: they will call end() later.
        with self._lock:
            self._clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "by_path": dict(self._by_path),
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak,
                "recent": [dict(request) for request in self._recent],
            }


# --------------------------------------------------------------------------- variants

OffsetCounts: TypeAlias = Literal["days_with_data", "calendar_days"]
CountFormat: TypeAlias = Literal["int", "string", "float"]
ErrorShape: TypeAlias = Literal["object", "list"]
# Interval notation for (start_inclusive, end_inclusive).
BOUNDS: dict[str, tuple[bool, bool]] = {
    "[]": (True, True),
    "[)": (True, False),
    "()": (False, False),
    "(]": (False, True),
}
PLAN_FORBIDDEN_MESSAGE = "Admin API is available on the Advanced plan or higher"
_BOOLEAN_FIELDS = (
    "start_inclusive",
    "end_inclusive",
    "totals_need_window",
    "plan_forbidden",
    "midnight_events",
)
# Calendar day 0 of a start_date before year 1 (which date_of() cannot name) is 0001-01-03.
_EARLIEST_TS = (date(1, 1, 3).toordinal() - date(1970, 1, 1).toordinal()) * 86400.0


@dataclass(frozen=True)
class Variant:
    """One reading of what the API documentation leaves open; the defaults are the client's."""

    # Whether events at exactly start_date / end_date count (events after now never do).
    start_inclusive: bool = True
    end_inclusive: bool = False
    # What per-day offset and limit count: the days with data, or calendar days from the
    # local day of start_date (of the first day with data when start_date is absent).
    offset_counts: OffsetCounts = "days_with_data"
    page_cap: int | None = None  # most entries of one per-day answer, whatever limit asks
    count_format: CountFormat = "int"  # 167, "167" or 167.0
    totals_need_window: bool = False  # totals without start_date and end_date are 422
    plan_forbidden: bool = False  # a valid key whose plan has no Admin API: 403
    error_shape: ErrorShape = "object"  # {"errors": {"base": [msg]}} or {"errors": [msg]}
    timezone: str | None = None  # zone of the per-day keys; None: the simulator's
    midnight_events: bool = False  # the random history has an event at each local midnight

    def __post_init__(self) -> None:
        for name in _BOOLEAN_FIELDS:
            _require(isinstance(getattr(self, name), bool), f"{name} must be True or False")
        for name, alias in (
            ("offset_counts", OffsetCounts),
            ("count_format", CountFormat),
            ("error_shape", ErrorShape),
        ):
            _require(
                getattr(self, name) in get_args(alias), f"{name} must be one of {get_args(alias)}"
            )
        _require(
            self.page_cap is None or (_is_int(self.page_cap) and self.page_cap >= 1),
            "page_cap must be None or >= 1",
        )
        if self.timezone is not None:
            _zone(self.timezone)

    @classmethod
    def from_bounds(cls, bounds: str, **options: Any) -> Variant:
        """A variant from interval notation: ``Variant.from_bounds("(]", page_cap=7)``."""
        _require(bounds in BOUNDS, f"bounds must be one of {list(BOUNDS)}")
        start_inclusive, end_inclusive = BOUNDS[bounds]
        return cls(start_inclusive=start_inclusive, end_inclusive=end_inclusive, **options)

    @property
    def bounds(self) -> str:
        return ("[" if self.start_inclusive else "(") + ("]" if self.end_inclusive else ")")

    def window(self, start: float | None, end: float | None, now: float) -> tuple[float, float]:
        """Half-open [lo, hi) of the events these bounds select that exist at ``now``."""
        # Timestamps are floats, so ts > x is exactly ts >= nextafter(x).
        hi = math.nextafter(now, math.inf)  # an event exists once ts <= now
        if end is not None:
            hi = min(hi, math.nextafter(end, math.inf) if self.end_inclusive else float(end))
        if start is None:
            return -math.inf, hi
        lo = float(start) if self.start_inclusive else math.nextafter(start, math.inf)
        return min(lo, hi), hi

    def page(
        self, days: dict[date, int], limit: int, offset: int, origin: date | None
    ) -> list[tuple[date, int]]:
        """One per-day answer from ascending nonzero ``days``; ``origin`` is calendar day 0."""
        if self.offset_counts == "days_with_data":
            page = list(days.items())[offset : offset + limit]
        else:
            origin = origin or next(iter(days), None)
            first = (origin.toordinal() if origin else 0) + offset
            page = [(day, n) for day, n in days.items() if first <= day.toordinal() < first + limit]
        # The server's own cap on the entries of one answer, whatever limit counts.
        return page[: self.page_cap]

    def count(self, n: int) -> int | str | float:
        """A count as this variant writes it in JSON."""
        if self.count_format == "string":
            return str(n)
        return float(n) if self.count_format == "float" else n

    def error(self, message: str) -> dict[str, Any]:
        """An error body in this variant's shape."""
        return {"errors": [message] if self.error_shape == "list" else {"base": [message]}}


DEFAULT_VARIANT = Variant()


# --------------------------------------------------------------------------- HTTP plumbing


class _BadRequest(ValueError):
    """A query parameter the real API would answer 422 for."""


@dataclass(frozen=True)
class _Query:
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
        raise _BadRequest(f"{name} must be an integer")
    return int(text)


def _last_int(params: dict[str, list[str]], name: str) -> int | None:
    """The last value given for ``name``, as an int; None when absent."""
    values = params.get(name)
    return _parse_int(name, values[-1]) if values else None


def _parse_query(raw: str, endpoint: _Endpoint) -> _Query:
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
            raise _BadRequest("limit must be >= 1 and offset >= 0")
    types = None
    if endpoint.dialogs and "types[]" in params:
        types = tuple(_parse_int("types[]", value) for value in params["types[]"])
    return _Query(
        _last_int(params, "start_date"), _last_int(params, "end_date"), limit, offset, types
    )


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _send(
    start_response: StartResponse,
    status: int,
    body: bytes,
    content_type: str = _JSON,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    start_response(
        _status_line(status),
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def _send_json(
    start_response: StartResponse,
    status: int,
    payload: Any,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    return _send(start_response, status, json.dumps(payload).encode(), headers=headers)


def _send_error(
    start_response: StartResponse,
    status: int,
    message: str,
    headers: Iterable[tuple[str, str]] = (),
    variant: Variant = DEFAULT_VARIANT,
) -> list[bytes]:
    """An error body in ``variant``'s shape, by default {"errors": {"base": [message]}}."""
    return _send_json(start_response, status, variant.error(message), headers)


class _ClosingBody:
    """A response body that calls ``on_close`` once the server is done with it."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        close_body = getattr(self._body, "close", None)
        if close_body is not None:
            close_body()
        if self._on_close is not None:
            self._on_close, on_close = None, self._on_close
            on_close()


def _padded_json(sample: bytes, size: int) -> Iterator[bytes]:
    """``sample`` padded with whitespace to ``size`` bytes: valid JSON, never held in memory."""
    yield sample[:-1]
    chunk = b" " * _HUGE_CHUNK_BYTES
    remaining = size - len(sample)
    while remaining > 0:
        yield chunk[: min(remaining, len(chunk))]
        remaining -= len(chunk)
    yield sample[-1:]


def _cut_off(environ: WSGIEnvironment, part: bytes) -> Iterator[bytes]:
    """Send ``part``, then drop the connection under the server's feet."""
    yield part
    # A duplicate descriptor lets us shut the shared connection down without closing the
    # server's own socket object under it. Without a socket (another server) or with the
    # client already gone, ending early still breaks the promised Content-Length.
    with (
        contextlib.suppress(AttributeError, OSError, ValueError),
        socket.socket(fileno=os.dup(environ["wsgi.input"].fileno())) as connection,
    ):
        connection.shutdown(socket.SHUT_RDWR)


def _trickle(data: bytes, stopping: threading.Event) -> Iterator[bytes]:
    """``data`` one byte per second, until the server stops."""
    for i in range(len(data)):
        yield data[i : i + 1]
        if stopping.wait(_TRICKLE_INTERVAL_SECONDS):
            return


def _distort(mode: str, endpoint: _Endpoint, payload: Any, today: str, variant: Variant) -> Any:
    """A successful answer reshaped the way fault ``mode`` says."""
    if mode == "error_body":
        return variant.error("simulated error")
    if not endpoint.per_day:
        wrong = {"wrong_shape": {"count": 5}, "negative": {"total": -5}, "float": {"total": 5.5}}
        return wrong.get(mode, payload)
    if mode == "empty":
        return {}
    days = payload or {today: 1}  # the fault must show even on an empty page
    if mode == "wrong_shape":
        return [{"date": day, "count": n} for day, n in days.items()]
    if mode == "negative":
        return dict.fromkeys(days, -5)
    if mode == "float":
        return dict.fromkeys(days, 2.5)
    return {**days, "not-a-date": 1}


def _read_json_object(environ: WSGIEnvironment) -> dict[str, Any]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    data = json.loads(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """WSGI app imitating the four Admin Statistics endpoints, with faults and ground truth.

    ``variants`` maps API keys (valid by being listed) to the :class:`Variant` they play;
    every other valid key plays ``variant``. ``max_limit`` is the default variant's page_cap.
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = ("demo-key",),
        key_prefix: str | None = None,
        timezone: str = "UTC",
        history_days: int = 400,
        seed: int = 0,
        random_history: bool = True,
        max_limit: int | None = None,
        shuffle_keys: bool = False,
        clock: Callable[[], float] = time.time,
        variant: Variant = DEFAULT_VARIANT,
        variants: Mapping[str, Variant] | None = None,
    ) -> None:
        _require(history_days >= 0, "history_days must be >= 0")
        _require(max_limit is None or max_limit >= 1, "max_limit must be >= 1")
        _require(
            max_limit is None or variant.page_cap is None, "give max_limit or page_cap, not both"
        )
        self._variant = variant if max_limit is None else replace(variant, page_cap=max_limit)
        self._variants = dict(variants or {})
        _require(
            all(isinstance(v, Variant) for v in [variant, *self._variants.values()]),
            "variants must be Variant instances",
        )
        self._api_keys = frozenset([api_keys] if isinstance(api_keys, str) else api_keys)
        self._key_prefix = key_prefix
        self._shuffle_keys = shuffle_keys
        self._clock = clock
        self._calendar = _Calendar(timezone)
        self._calendars = {timezone: self._calendar}
        first_day = self._calendar.date_of(clock()) - timedelta(days=history_days)
        # Anchored at construction, so totals never shrink when a day rolls over. One per
        # event placement; a key only ever uses one of them, so nothing is computed twice.
        self._histories = (
            {
                midnight: _History(seed, self._calendar, first_day, midnight)
                for midnight in (False, True)
            }
            if random_history
            else {}
        )
        self._explicit = _ExplicitEvents()
        self._stats = _Stats()
        self._fault_lock = threading.Lock()
        self._faults: Faults | None = None
        self._fault_remaining: int | None = None
        self._fault_generation = 0
        self._control: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("GET", "/_sim/stats"): lambda _: self.stats(),
            ("POST", "/_sim/stats/reset"): lambda _: self.reset_stats(),
            ("GET", "/_sim/faults"): lambda _: self._current_faults().to_json(),
            ("POST", "/_sim/faults"): lambda body: self.set_faults(**body),
            ("POST", "/_sim/events"): self._control_events,
            ("POST", "/_sim/reset"): lambda _: self.reset(),
        }

    # ----------------------------------------------------------------- ground truth

    def is_valid_key(self, api_key: str | None) -> bool:
        """Whether the API would accept ``api_key``."""
        if not api_key:
            return False
        prefix = self._key_prefix
        return (
            api_key in self._api_keys
            or api_key in self._variants
            or (prefix is not None and api_key.startswith(prefix))
        )

    def variant_of(self, api_key: str | None) -> Variant:
        """The variant ``api_key`` plays; the default one for any key not in ``variants``."""
        return self._variants.get(api_key or "", self._variant)

    def add_events(self, api_key: str, kind: str | int, timestamps: Iterable[float]) -> None:
        """Add events of ``kind`` ("messages" or a dialog type code) at ``timestamps``."""
        self._require_key(api_key)
        _require(kind == MESSAGES or _is_int(kind), "kind must be 'messages' or an int")
        # Both calendars must name the day: the history's and the one the key's answers use.
        calendars = {self._calendar, self._calendar_of(self.variant_of(api_key).timezone)}
        self._explicit.add(api_key, kind, [_checked_timestamp(ts, calendars) for ts in timestamps])

    def count(
        self,
        api_key: str,
        kind: str | int,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        """Events with start <= ts < end (end defaults to now) that exist by now.

        ``kind`` is "messages", a dialog type code, or "dialogs" for every dialog type.
        The key's variant changes how the API answers, never this (though a midnight_events
        key's random history has its events at other times).
        """
        self._require_key(api_key)
        lo, hi = DEFAULT_VARIANT.window(start, end, self._clock())  # [start, end)
        return self._count(api_key, self._kinds(api_key, kind), lo, hi)

    def per_day(
        self,
        api_key: str,
        kind: str | int,
        start: float | None = None,
        end: float | None = None,
        timezone: str | None = None,
    ) -> dict[str, int]:
        """Like :meth:`count`, by local date: nonzero days, ascending, not paged.

        ``timezone`` cuts the days (default: the simulator's zone, whatever the key's variant).
        """
        self._require_key(api_key)
        lo, hi = DEFAULT_VARIANT.window(start, end, self._clock())  # [start, end)
        calendar = self._calendar_of(timezone)
        days = self._per_day(api_key, self._kinds(api_key, kind), lo, hi, calendar)
        return {day.isoformat(): n for day, n in days.items()}

    def _require_key(self, api_key: str) -> None:
        _require(isinstance(api_key, str) and self.is_valid_key(api_key), "unknown API key")

    def _calendar_of(self, timezone: str | None) -> _Calendar:
        if timezone is None:
            return self._calendar
        if timezone not in self._calendars:
            # Racing threads may both build one: harmless, calendars only cache.
            self._calendars[timezone] = _Calendar(timezone)
        return self._calendars[timezone]

    def _kinds(self, api_key: str, kind: str | int) -> list[Kind]:
        if kind == ALL_DIALOGS:
            return self._dialog_kinds(api_key)
        _require(kind == MESSAGES or _is_int(kind), "kind must be 'messages', 'dialogs' or an int")
        return [kind]

    def _dialog_kinds(self, api_key: str) -> list[Kind]:
        """Every dialog type that has data for ``api_key``."""
        kinds = {kind for kind in self._explicit.kinds(api_key) if kind != MESSAGES}
        if self._histories:
            kinds.update(DIALOG_TYPES)
        return sorted(kinds, key=int)

    def _history_of(self, api_key: str, kind: Kind) -> _History | None:
        if kind not in HISTORY_KINDS:
            return None
        return self._histories.get(self.variant_of(api_key).midnight_events)

    def _before(self, api_key: str, kind: Kind, x: float) -> int:
        found = self._explicit.before(api_key, kind, x)
        history = self._history_of(api_key, kind)
        if history is not None:
            found += history.before(api_key, kind, x)
        return found

    def _count(self, api_key: str, kinds: Iterable[Kind], lo: float, hi: float) -> int:
        """Events with lo <= ts < hi."""
        return sum(
            self._before(api_key, kind, hi) - self._before(api_key, kind, lo) for kind in kinds
        )

    def _per_day(
        self, api_key: str, kinds: Iterable[Kind], lo: float, hi: float, calendar: _Calendar
    ) -> dict[date, int]:
        """Nonzero counts of events with lo <= ts < hi by local date, ascending."""
        counts: Counter[date] = Counter()
        for kind in kinds:
            counts.update(self._explicit.per_day(api_key, kind, lo, hi, calendar))
            history = self._history_of(api_key, kind)
            if history is not None:
                counts.update(history.per_day(api_key, kind, lo, hi, calendar))
        return {day: counts[day] for day in sorted(counts) if counts[day] > 0}

    # ----------------------------------------------------------------- faults and stats

    def set_faults(
        self,
        *,
        latency: float = 0.0,
        status: int | None = None,
        retry_after: str | None = None,
        body: str | None = None,
        huge_mb: float = 50.0,
        count: int | None = None,
        paths: Iterable[str] | None = None,
        keys: Iterable[str] | None = None,
    ) -> None:
        """Replace the active faults; with no arguments, clear them.

        latency: seconds to wait before answering. status: answer with this HTTP status
        and the error body, with ``Retry-After: retry_after`` if given. body: one of
        BODY_MODES (huge bodies are ``huge_mb`` megabytes). count: only the next N matching
        requests, then the faults clear themselves. paths / keys: only these endpoints /
        API keys (None = all). Any call releases requests held by an earlier "hang".
        """
        faults = Faults(
            latency=latency,
            status=status,
            retry_after=retry_after,
            body=body,
            huge_mb=huge_mb,
            count=count,
            paths=_frozen(paths, "paths"),
            keys=_frozen(keys, "keys"),
        )
        with self._fault_lock:
            self._faults = faults if faults.active else None
            self._fault_remaining = faults.count
            self._fault_generation += 1

    def _current_faults(self) -> Faults:
        with self._fault_lock:
            return self._faults or _NO_FAULTS

    def _take_faults(self, path: str, api_key: str | None) -> tuple[Faults, int]:
        """The faults for one request (using up one of ``count``), and their generation."""
        with self._fault_lock:
            faults = self._faults
            if faults is None or not faults.applies_to(path, api_key):
                return _NO_FAULTS, self._fault_generation
            if self._fault_remaining is not None:
                self._fault_remaining -= 1
                if self._fault_remaining <= 0:
                    self._faults = None
            return faults, self._fault_generation

    def stats(self) -> dict[str, Any]:
        """API request counters: requests, by_path, in_flight, peak_in_flight, recent."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def reset(self) -> None:
        """Drop explicit events, clear faults and stats (the random history stays)."""
        self._explicit.clear()
        self.set_faults()
        self._stats.reset()

    # ----------------------------------------------------------------- WSGI

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ENDPOINTS:
            return self._serve_api(environ, start_response, path)
        if path.startswith("/_sim/"):
            return self._serve_control(environ, start_response, path)
        variant = self.variant_of(environ.get(_API_KEY_ENVIRON))
        return _send_error(start_response, 404, f"no such endpoint: {path}", variant=variant)

    def _serve_api(
        self, environ: WSGIEnvironment, start_response: StartResponse, path: str
    ) -> Iterable[bytes]:
        api_key = environ.get(_API_KEY_ENVIRON) or None
        self._stats.begin(path, environ.get("QUERY_STRING", ""), self.is_valid_key(api_key))
        try:
            body = self._answer_api(environ, start_response, path, api_key)
        except BaseException:
            self._stats.end()
            raise
        # in_flight drops only when the body is fully sent (or abandoned).
        return _ClosingBody(body, self._stats.end)

    def _answer_api(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        path: str,
        api_key: str | None,
    ) -> Iterable[bytes]:
        variant = self.variant_of(api_key)
        if environ.get("REQUEST_METHOD") != "GET":
            return _send_error(
                start_response, 405, "method not allowed", [("Allow", "GET")], variant
            )
        endpoint = ENDPOINTS[path]
        faults, generation = self._take_faults(path, api_key)
        stopping: threading.Event = environ.get(_STOPPING_ENVIRON, _NEVER)
        if faults.latency:
            stopping.wait(faults.latency)
        if faults.body == "hang":
            self._hang(generation, stopping)
        if faults.status is not None:
            retry = [("Retry-After", faults.retry_after)] if faults.retry_after else []
            return _send_error(start_response, faults.status, "simulated error", retry, variant)
        if faults.body in _TRANSPORT_MODES:
            return self._broken_answer(faults, endpoint, environ, start_response)
        if api_key is None or not self.is_valid_key(api_key):
            return _send_error(start_response, 401, "Required session does not exist", (), variant)
        if variant.plan_forbidden:
            return _send_error(start_response, 403, PLAN_FORBIDDEN_MESSAGE, (), variant)
        try:
            query = _parse_query(environ.get("QUERY_STRING", ""), endpoint)
        except _BadRequest as exc:
            return _send_error(start_response, 422, str(exc), (), variant)
        if variant.totals_need_window and not endpoint.per_day and None in (query.start, query.end):
            message = "start_date and end_date are required"
            return _send_error(start_response, 422, message, (), variant)
        payload = self._payload(api_key, variant, endpoint, query)
        if faults.body in _VALUE_MODES:
            today = self._calendar_of(variant.timezone).date_of(self._clock()).isoformat()
            payload = _distort(faults.body, endpoint, payload, today, variant)
        return _send_json(start_response, 200, payload)

    def _payload(self, api_key: str, variant: Variant, endpoint: _Endpoint, query: _Query) -> Any:
        """The JSON answer of a valid request, as ``variant`` reads the API."""
        if not endpoint.dialogs:
            kinds: list[Kind] = [MESSAGES]
        elif query.types is None:
            kinds = self._dialog_kinds(api_key)
        else:
            kinds = sorted(set(query.types))
        lo, hi = variant.window(query.start, query.end, self._clock())
        if not endpoint.per_day:
            return {"total": variant.count(self._count(api_key, kinds, lo, hi))}
        calendar = self._calendar_of(variant.timezone)
        days = self._per_day(api_key, kinds, lo, hi, calendar)
        # Calendar day 0 is the local day of start_date, even when nothing happened on it.
        origin = None if query.start is None else calendar.date_of(max(lo, _EARLIEST_TS))
        items = variant.page(days, query.limit, query.offset, origin)
        if self._shuffle_keys:
            random.shuffle(items)  # clients must not rely on the order of JSON keys
        return {day.isoformat(): variant.count(n) for day, n in items}

    def _hang(self, generation: int, stopping: threading.Event) -> None:
        """Hold the request until faults change or the server stops."""
        while self._fault_generation == generation and not stopping.wait(_HANG_POLL_SECONDS):
            pass

    def _broken_answer(
        self,
        faults: Faults,
        endpoint: _Endpoint,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        """A 200 whose body breaks at the transport level."""
        sample = _SAMPLE_PER_DAY if endpoint.per_day else _SAMPLE_TOTAL
        if faults.body == "garbage":
            return _send(start_response, 200, _GARBAGE, "text/html; charset=utf-8")
        if faults.body == "truncated":
            return _send(start_response, 200, sample[: len(sample) // 2])
        if faults.body == "huge":
            # No Content-Length: the client must cap the size while streaming.
            start_response(_status_line(200), [("Content-Type", _JSON)])
            return _padded_json(sample, int(faults.huge_mb * 1024 * 1024))
        content_length = [("Content-Type", _JSON), ("Content-Length", str(len(sample)))]
        start_response(_status_line(200), content_length)
        if faults.body == "trickle":
            return _trickle(sample, environ.get(_STOPPING_ENVIRON, _NEVER))
        return _cut_off(environ, sample[: len(sample) // 2])

    def _serve_control(
        self, environ: WSGIEnvironment, start_response: StartResponse, path: str
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        handler = self._control.get((method, path))
        if handler is None:
            allowed = [m for m, p in self._control if p == path]
            if not allowed:
                return _send_error(start_response, 404, f"no such endpoint: {path}")
            return _send_error(
                start_response, 405, "method not allowed", [("Allow", ", ".join(allowed))]
            )
        try:
            result = handler(_read_json_object(environ) if method == "POST" else {})
        except (TypeError, ValueError) as exc:
            return _send_error(start_response, 400, str(exc))
        return _send_json(start_response, 200, {"ok": True} if result is None else result)

    def _control_events(self, body: dict[str, Any]) -> dict[str, int]:
        """POST /_sim/events: explicit ``timestamps``, or ``count`` events right now."""
        if "timestamps" in body:
            timestamps = body["timestamps"]
            _require(isinstance(timestamps, list), "timestamps must be a list")
        else:
            count = body.get("count")
            _require(_is_int(count) and count >= 0, "give timestamps or a count >= 0")
            timestamps = [self._clock()] * count
        self.add_events(body.get("api_key"), body.get("kind"), timestamps)
        return {"added": len(timestamps)}


class _SimulatorServer(RunningServer):
    """A RunningServer that also releases its held (hanging, slow) responses when stopped.

    The stop signal travels in the WSGI environ, so stopping one of several servers of
    the same simulator leaves the others' requests alone.
    """

    def __init__(self, simulator: Simulator, host: str, port: int) -> None:
        self._simulator = simulator
        self._stopping = threading.Event()
        super().__init__(self._app, host, port)

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[_STOPPING_ENVIRON] = self._stopping
        return self._simulator(environ, start_response)

    def stop(self) -> None:
        self._stopping.set()
        super().stop()


def start_simulator(simulator: Simulator, address: str = "127.0.0.1:0") -> RunningServer:
    """Serve ``simulator`` on ``address`` (HOST:PORT; port 0 picks a free port)."""
    host, port = parse_listen_address(address)
    return _SimulatorServer(simulator, host, port)


# --------------------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Serve a simulated ConnectyCube Admin Statistics API until SIGTERM/SIGINT.",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="port 0 picks a free port"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted API key; repeatable (default: demo-key)",
    )
    parser.add_argument("--key-prefix", metavar="PREFIX", help="also accept keys with this prefix")
    parser.add_argument("--timezone", default="UTC", help="zone of the per-day dates (default UTC)")
    parser.add_argument(
        "--history-days", type=int, default=400, metavar="N", help="random history length"
    )
    parser.add_argument("--seed", type=int, default=0, help="random history seed (default 0)")
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay of every API answer"
    )
    parser.add_argument(
        "--no-random-history", action="store_true", help="start with no data at all"
    )
    parser.add_argument("--shuffle-keys", action="store_true", help="shuffle per-day JSON keys")
    variant = parser.add_argument_group(
        "API variant", "how every key reads what the API documentation leaves open"
    )
    variant.add_argument(
        "--bounds",
        choices=list(BOUNDS),
        default=DEFAULT_VARIANT.bounds,
        help="[ or ] counts events at exactly start_date or end_date, ( or ) not (default [))",
    )
    variant.add_argument(
        "--offset-counts",
        choices=get_args(OffsetCounts),
        default=DEFAULT_VARIANT.offset_counts,
        help="what per-day offset and limit count (default days_with_data)",
    )
    variant.add_argument(
        "--page-cap",
        "--max-limit",
        type=int,
        metavar="N",
        help="most days in one per-day answer, whatever limit asks",
    )
    variant.add_argument(
        "--count-format",
        choices=get_args(CountFormat),
        default=DEFAULT_VARIANT.count_format,
        help="counts as JSON ints, numeric strings or whole floats (default int)",
    )
    variant.add_argument(
        "--totals-need-window",
        action="store_true",
        help="totals without start_date and end_date are 422",
    )
    variant.add_argument(
        "--plan-forbidden", action="store_true", help="every key's plan lacks the Admin API: 403"
    )
    variant.add_argument(
        "--error-shape",
        choices=get_args(ErrorShape),
        default=DEFAULT_VARIANT.error_shape,
        help='errors as {"errors": {"base": [...]}} (object) or {"errors": [...]} (list)',
    )
    variant.add_argument(
        "--key-timezone", metavar="ZONE", help="zone of the per-day dates (default --timezone)"
    )
    variant.add_argument(
        "--midnight-events",
        action="store_true",
        help="the random history has an event at each local midnight",
    )
    return parser.parse_args(argv)


def _variant(args: argparse.Namespace) -> Variant:
    return Variant.from_bounds(
        args.bounds,
        offset_counts=args.offset_counts,
        page_cap=args.page_cap,
        count_format=args.count_format,
        totals_need_window=args.totals_need_window,
        plan_forbidden=args.plan_forbidden,
        error_shape=args.error_shape,
        timezone=args.key_timezone,
        midnight_events=args.midnight_events,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    stop = threading.Event()
    # Installed first, so that an early Ctrl-C also ends quietly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        simulator = Simulator(
            api_keys=args.api_keys or ("demo-key",),
            key_prefix=args.key_prefix,
            timezone=args.timezone,
            history_days=args.history_days,
            seed=args.seed,
            random_history=not args.no_random_history,
            shuffle_keys=args.shuffle_keys,
            variant=_variant(args),
        )
        if args.latency:
            simulator.set_faults(latency=args.latency)
        server = start_simulator(simulator, args.listen)
    except (ValueError, OSError) as exc:
        print(f"simulator: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"simulator listening on {server.url}", file=sys.stderr, flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
