"""The test suite's rig: a simulated API with the demo's data (:mod:`exporter.simulator`).

Used by the tests and the benchmarks, never shipped. Serve it with :func:`start_simulator`
or ``python -m tests.simulator``. On top of the demo's random history it adds:

* explicit events added with :meth:`Simulator.add_events`, for exact expected values, and
  the ground truth (:meth:`Simulator.count`, :meth:`Simulator.per_day`);
* :class:`Variant`: the API documentation leaves some behaviours open (window bounds, what
  ``offset`` counts, count types, error shapes, ...). A variant fixes one reading of each;
  every API key can play its own, so that one server hosts many variants at once. The
  ground truth is the same under every variant;
* faults (latency, error statuses, malformed or pathological bodies), switched on with
  :meth:`Simulator.set_faults` or over HTTP with ``POST /_sim/faults``;
* request counters, and the ``/_sim/`` control API.

It is a WSGI app, served by ``wsgiref`` on a thread per connection: a held answer (a hang,
a trickle) blocks only its own thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any, Literal, TypeAlias, get_args
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exporter.api import API_KEY_HEADER, MESSAGES, Kind, endpoint_path
from exporter.config import parse_listen_address
from exporter.simulator import (
    DIALOG_TYPES,
    ENDPOINTS,
    Endpoint,
    History,
    Query,
    Refused,
    date_of,
    error_body,
    events_window,
    midnight,
    parse_query,
)

MESSAGES_TOTAL_PATH = endpoint_path(MESSAGES, per_day=False)
MESSAGES_PER_DAY_PATH = endpoint_path(MESSAGES, per_day=True)
DIALOGS_TOTAL_PATH = endpoint_path(1, per_day=False)
DIALOGS_PER_DAY_PATH = endpoint_path(1, per_day=True)
API_KEY_ENVIRON = "HTTP_" + API_KEY_HEADER.upper().replace("-", "_")
JSON = "application/json"
ALL_DIALOGS = "dialogs"  # accepted by count()/per_day() only: every dialog type together
# Calendar day 0 of a start_date before year 1 (which date_of() cannot name) is 0001-01-03.
_EARLIEST_TS = (date(1, 1, 3).toordinal() - date(1970, 1, 1).toordinal()) * 86400.0

log = logging.getLogger(__name__)

# These replace the whole answer (before auth), like a broken proxy in front of the API.
_TRANSPORT_MODES = frozenset({"garbage", "truncated", "huge", "trickle", "reset"})
# These reshape an otherwise successful answer, like a buggy API release.
_VALUE_MODES = frozenset(
    {"wrong_shape", "negative", "float", "bad_date_key", "empty", "error_body"}
)
BODY_MODES = _TRANSPORT_MODES | _VALUE_MODES | {"hang"}  # "hang" holds the request

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


# --------------------------------------------------------------------------- explicit events


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def zone_info(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc


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
        self, key: str, kinds: Iterable[Kind], lo: float, hi: float, zone: ZoneInfo
    ) -> Counter[date]:
        """Counts of events of ``kinds`` with lo <= ts < hi, by local date in ``zone``."""
        counts: Counter[date] = Counter()
        for kind in kinds:
            timestamps = self._timestamps(key, kind)
            window = timestamps[bisect_left(timestamps, lo) : bisect_left(timestamps, hi)]
            counts.update(date_of(ts, zone) for ts in window)
        return counts

    def _timestamps(self, key: str, kind: Kind) -> list[float]:
        return self._events.get(key, {}).get(kind, [])


# --------------------------------------------------------------------------- faults and stats


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_timestamp(ts: float, zones: Iterable[ZoneInfo]) -> float:
    require(_is_number(ts) and math.isfinite(ts), f"bad timestamp {ts!r}")
    try:
        for zone in zones:
            date_of(ts, zone)
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
        require(_is_number(self.latency) and self.latency >= 0, "latency must be >= 0")
        require(
            self.status is None or (_is_int(self.status) and 200 <= self.status <= 599),
            "status must be an HTTP status code",
        )
        require(
            self.retry_after is None or isinstance(self.retry_after, str),
            "retry_after must be a string",
        )
        require(
            self.body is None or self.body in BODY_MODES,
            f"body must be one of {sorted(BODY_MODES)}",
        )
        require(_is_number(self.huge_mb) and self.huge_mb > 0, "huge_mb must be > 0")
        require(self.count is None or (_is_int(self.count) and self.count > 0), "count must be > 0")
        require(
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


@dataclass(frozen=True)
class Variant:
    """One reading of what the API documentation leaves open; the defaults are the client's
    (and the documented reading the demo plays)."""

    # Whether events at exactly start_date / end_date count (events after now never do).
    start_inclusive: bool = True
    end_inclusive: bool = False
    # What per-day offset and limit count: the days with data, or calendar days from the
    # local day of start_date (of the first day with data when start_date is absent).
    offset_counts: OffsetCounts = "days_with_data"
    page_cap: int | None = None  # most entries of one per-day answer, whatever limit asks
    # Most calendar days one per-day answer spans, quiet days left out, whatever limit asks:
    # from the day offset points at (the local day of start_date, plus offset calendar days
    # or to the offset-th day with data).
    page_days: int | None = None
    # Every N-th day (by ordinal, in the key's zone) the totals no longer count the events
    # of its first hour, as if deleted; the per-day answers still do.
    total_drift_every: int | None = None
    count_format: CountFormat = "int"  # 167, "167" or 167.0
    totals_need_window: bool = False  # totals without start_date and end_date are 422
    plan_forbidden: bool = False  # a valid key whose plan has no Admin API: 403
    error_shape: ErrorShape = "object"  # {"errors": {"base": [msg]}} or {"errors": [msg]}
    timezone: str | None = None  # zone of the per-day keys; None: the simulator's
    midnight_events: bool = False  # the random history has an event at each local midnight

    def __post_init__(self) -> None:
        for name in _BOOLEAN_FIELDS:
            require(isinstance(getattr(self, name), bool), f"{name} must be True or False")
        for name, alias in (
            ("offset_counts", OffsetCounts),
            ("count_format", CountFormat),
            ("error_shape", ErrorShape),
        ):
            require(
                getattr(self, name) in get_args(alias), f"{name} must be one of {get_args(alias)}"
            )
        for name in ("page_cap", "page_days", "total_drift_every"):
            value = getattr(self, name)
            require(
                value is None or (_is_int(value) and value >= 1), f"{name} must be None or >= 1"
            )
        if self.timezone is not None:
            zone_info(self.timezone)

    @classmethod
    def from_bounds(cls, bounds: str, **options: Any) -> Variant:
        """A variant from interval notation: ``Variant.from_bounds("(]", page_cap=7)``."""
        require(bounds in BOUNDS, f"bounds must be one of {list(BOUNDS)}")
        start_inclusive, end_inclusive = BOUNDS[bounds]
        return cls(start_inclusive=start_inclusive, end_inclusive=end_inclusive, **options)

    @property
    def bounds(self) -> str:
        return ("[" if self.start_inclusive else "(") + ("]" if self.end_inclusive else ")")

    def window(self, start: float | None, end: float | None, now: float) -> tuple[float, float]:
        """Half-open [lo, hi) of the events these bounds select that exist at ``now``."""
        # Timestamps are floats, so ts > x is exactly ts >= nextafter(x).
        if start is not None and not self.start_inclusive:
            start = math.nextafter(start, math.inf)
        if end is not None and self.end_inclusive:
            end = math.nextafter(end, math.inf)
        return events_window(start, end, now)

    def page(self, days: dict[date, int], query: Query, zone: ZoneInfo) -> list[tuple[date, int]]:
        """One per-day answer from ascending nonzero ``days``, per-day keys in ``zone``."""
        if self.offset_counts == "days_with_data" or not days:
            page = list(days.items())[query.offset : query.offset + query.limit]
            first = page[0][0].toordinal() if page else 0
        else:
            origin = next(iter(days))  # calendar day 0, even when nothing happened on it
            if query.start is not None:
                origin = date_of(max(query.start, _EARLIEST_TS), zone)
            first = origin.toordinal() + query.offset
            page = [
                (day, n)
                for day, n in days.items()
                if first <= day.toordinal() < first + query.limit
            ]
        # The server's own caps on one answer, whatever limit counts.
        if self.page_days is not None:
            page = [(day, n) for day, n in page if day.toordinal() < first + self.page_days]
        return page[: self.page_cap]

    def count(self, n: int) -> int | str | float:
        """A count as this variant writes it in JSON."""
        if self.count_format == "string":
            return str(n)
        return float(n) if self.count_format == "float" else n

    def error(self, message: str) -> dict[str, Any]:
        """An error body in this variant's shape."""
        return {"errors": [message]} if self.error_shape == "list" else error_body(message)


DEFAULT_VARIANT = Variant()


# --------------------------------------------------------------------------- HTTP plumbing


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
    variant: Variant = DEFAULT_VARIANT,
) -> list[bytes]:
    """An error body in ``variant``'s shape, by default {"errors": {"base": [message]}}."""
    return send_json(start_response, status, variant.error(message), headers)


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


def _distort(mode: str, endpoint: Endpoint, payload: Any, today: str, variant: Variant) -> Any:
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
    """The demo's data and API, with explicit events, variants, faults, stats and control API.

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
        require(history_days >= 0, "history_days must be >= 0")
        require(max_limit is None or max_limit >= 1, "max_limit must be >= 1")
        require(
            max_limit is None or variant.page_cap is None, "give max_limit or page_cap, not both"
        )
        self._variant = variant if max_limit is None else replace(variant, page_cap=max_limit)
        self._variants = dict(variants or {})
        require(
            all(isinstance(v, Variant) for v in [variant, *self._variants.values()]),
            "variants must be Variant instances",
        )
        self._api_keys = frozenset([api_keys] if isinstance(api_keys, str) else api_keys)
        self._key_prefix = key_prefix
        self._shuffle_keys = shuffle_keys
        self._clock = clock
        self._zone = zone_info(timezone)
        first_day = date_of(clock(), self._zone) - timedelta(days=history_days)
        # Events half a gap into their slot; midnight_events keys see the demo's history,
        # one event at each midnight: the same volumes, other times.
        self._history: History | None = None
        self._midnight_history: History | None = None
        if random_history:
            self._history = History(seed, self._zone, first_day, phase=0.5)
            self._midnight_history = History(seed, self._zone, first_day, phase=0.0)
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
        require(kind == MESSAGES or _is_int(kind), "kind must be 'messages' or an int")
        # Both zones must name the day: the history's and the one the key's answers use.
        zones = {self._zone, self._zone_of(self.variant_of(api_key).timezone)}
        self._explicit.add(api_key, kind, [_checked_timestamp(ts, zones) for ts in timestamps])

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
        lo, hi = events_window(start, end, self._clock())
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
        lo, hi = events_window(start, end, self._clock())
        days = self._per_day(api_key, self._kinds(api_key, kind), lo, hi, self._zone_of(timezone))
        return {day.isoformat(): n for day, n in days.items()}

    def _require_key(self, api_key: str) -> None:
        require(isinstance(api_key, str) and self.is_valid_key(api_key), "unknown API key")

    def _kinds(self, api_key: str, kind: str | int) -> list[Kind]:
        if kind == ALL_DIALOGS:
            return self._dialog_kinds(api_key)
        require(kind == MESSAGES or _is_int(kind), "kind must be 'messages', 'dialogs' or an int")
        return [kind]

    def _dialog_kinds(self, api_key: str) -> list[Kind]:
        """Every dialog type that has data for ``api_key``."""
        kinds = {kind for kind in self._explicit.kinds(api_key) if kind != MESSAGES}
        if self._history is not None:
            kinds.update(DIALOG_TYPES)
        return sorted(kinds, key=int)

    def _zone_of(self, timezone: str | None) -> ZoneInfo:
        return self._zone if timezone is None else zone_info(timezone)

    def _history_of(self, api_key: str) -> History | None:
        if self.variant_of(api_key).midnight_events:
            return self._midnight_history
        return self._history

    def _count(self, api_key: str, kinds: Iterable[Kind], lo: float, hi: float) -> int:
        """Events of ``kinds`` with lo <= ts < hi."""
        history = self._history_of(api_key)
        sources = [self._explicit] if history is None else [self._explicit, history]
        return sum(
            source.before(api_key, kind, hi) - source.before(api_key, kind, lo)
            for source in sources
            for kind in kinds
        )

    def total(
        self, api_key: str, kind: str | int, start: float | None = None, end: float | None = None
    ) -> int:
        """Like :meth:`count`, as the key's total endpoint counts: without the events its
        variant's ``total_drift_every`` deletes."""
        self._require_key(api_key)
        lo, hi = events_window(start, end, self._clock())
        return self._total(api_key, self._kinds(api_key, kind), lo, hi)

    def _total(self, api_key: str, kinds: list[Kind], lo: float, hi: float) -> int:
        """Events of ``kinds`` with lo <= ts < hi that the key's total endpoint counts."""
        count = self._count(api_key, kinds, lo, hi)
        variant = self.variant_of(api_key)
        every = variant.total_drift_every
        if every is None or hi <= lo:
            return count
        zone = self._zone_of(variant.timezone)
        first = date_of(max(lo, 0.0), zone).toordinal()  # days of 1970 on
        for ordinal in range(-(-first // every) * every, date_of(hi, zone).toordinal() + 1, every):
            start = midnight(ordinal, zone)
            deleted = max(lo, start), min(hi, start + 3600)
            if deleted[0] < deleted[1]:
                count -= self._count(api_key, kinds, *deleted)
        return count

    def _per_day(
        self, api_key: str, kinds: list[Kind], lo: float, hi: float, zone: ZoneInfo
    ) -> dict[date, int]:
        """Nonzero counts of events of ``kinds`` with lo <= ts < hi by local date, ascending."""
        counts = self._explicit.per_day(api_key, kinds, lo, hi, zone)
        history = self._history_of(api_key)
        if history is not None:
            counts.update(history.per_day(api_key, kinds, lo, hi, zone))
        return dict(sorted(counts.items()))

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
        if path.startswith("/_sim/"):
            return self._serve_control(environ, start_response, path)
        api_key = environ.get(API_KEY_ENVIRON) or None
        if path not in ENDPOINTS:
            variant = self.variant_of(api_key)
            return send_error(start_response, 404, f"no such endpoint: {path}", (), variant)
        self._stats.begin(path, environ.get("QUERY_STRING", ""), self.is_valid_key(api_key))
        try:
            body = self._serve_api(environ, start_response, path, api_key)
        except BaseException:
            self._stats.end()
            raise
        # in_flight drops only when the body is fully sent (or abandoned).
        return _ClosingBody(body, self._stats.end)

    def _serve_api(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        path: str,
        api_key: str | None,
    ) -> Iterable[bytes]:
        """One request to an endpoint, with the faults that apply to it."""
        variant = self.variant_of(api_key)
        if environ.get("REQUEST_METHOD") != "GET":
            return send_error(
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
            return send_error(start_response, faults.status, "simulated error", retry, variant)
        if faults.body in _TRANSPORT_MODES:
            return self._broken_answer(faults, endpoint, environ, start_response)
        status, payload = self._answer(api_key, endpoint, environ.get("QUERY_STRING", ""))
        if status == 200 and faults.body in _VALUE_MODES:
            today = date_of(self._clock(), self._zone_of(variant.timezone)).isoformat()
            payload = _distort(faults.body, endpoint, payload, today, variant)
        return send_json(start_response, status, payload)

    def _answer(self, api_key: str | None, endpoint: Endpoint, raw_query: str) -> tuple[int, Any]:
        """Status and JSON answer of a GET of ``endpoint``, as the key's variant has it."""
        variant = self.variant_of(api_key)
        if api_key is None or not self.is_valid_key(api_key):
            return 401, variant.error("Required session does not exist")
        if variant.plan_forbidden:
            return 403, variant.error(PLAN_FORBIDDEN_MESSAGE)
        try:
            query = parse_query(raw_query, endpoint)
            if (
                variant.totals_need_window
                and not endpoint.per_day
                and None in (query.start, query.end)
            ):
                raise Refused("start_date and end_date are required")
        except Refused as exc:
            return 422, variant.error(str(exc))
        kinds = [MESSAGES] if not endpoint.dialogs else query.types or self._dialog_kinds(api_key)
        lo, hi = variant.window(query.start, query.end, self._clock())
        if not endpoint.per_day:
            return 200, {"total": variant.count(self._total(api_key, kinds, lo, hi))}
        zone = self._zone_of(variant.timezone)
        page = variant.page(self._per_day(api_key, kinds, lo, hi, zone), query, zone)
        items = [(day.isoformat(), variant.count(n)) for day, n in page]
        if self._shuffle_keys:
            random.shuffle(items)  # clients must not rely on the order of JSON keys
        return 200, dict(items)

    def _hang(self, generation: int, stopping: threading.Event) -> None:
        """Hold the request until faults change or the server stops."""
        while self._fault_generation == generation and not stopping.wait(_HANG_POLL_SECONDS):
            pass

    def _broken_answer(
        self,
        faults: Faults,
        endpoint: Endpoint,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        """A 200 whose body breaks at the transport level."""
        sample = _SAMPLE_PER_DAY if endpoint.per_day else _SAMPLE_TOTAL
        if faults.body == "garbage":
            return send(start_response, 200, _GARBAGE, "text/html; charset=utf-8")
        if faults.body == "truncated":
            return send(start_response, 200, sample[: len(sample) // 2])
        if faults.body == "huge":
            # No Content-Length: the client must cap the size while streaming.
            start_response(status_line(200), [("Content-Type", JSON)])
            return _padded_json(sample, int(faults.huge_mb * 1024 * 1024))
        content_length = [("Content-Type", JSON), ("Content-Length", str(len(sample)))]
        start_response(status_line(200), content_length)
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
                return send_error(start_response, 404, f"no such endpoint: {path}")
            return send_error(
                start_response, 405, "method not allowed", [("Allow", ", ".join(allowed))]
            )
        try:
            result = handler(_read_json_object(environ) if method == "POST" else {})
        except (TypeError, ValueError) as exc:
            return send_error(start_response, 400, str(exc))
        return send_json(start_response, 200, {"ok": True} if result is None else result)

    def _control_events(self, body: dict[str, Any]) -> dict[str, int]:
        """POST /_sim/events: explicit ``timestamps``, or ``count`` events right now."""
        if "timestamps" in body:
            timestamps = body["timestamps"]
            require(isinstance(timestamps, list), "timestamps must be a list")
        else:
            count = body.get("count")
            require(_is_int(count) and count >= 0, "give timestamps or a count >= 0")
            timestamps = [self._clock()] * count
        self.add_events(body.get("api_key"), body.get("kind"), timestamps)
        return {"added": len(timestamps)}


# --------------------------------------------------------------------------- serving


class _QuietHandler(WSGIRequestHandler):
    """Sends wsgiref's per-request access log to debug logging instead of stderr."""

    timeout = 30  # a client that connects and goes silent must not hold its thread for ever

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128  # many scrapers (or benchmark clients) may connect at once
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
        # A dropped connection is the client's business: one debug line, not a traceback.
        log.debug("connection from %s failed: %s", client_address, sys.exc_info()[1])


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class RunningServer:
    """A :class:`Simulator` served on a background thread until ``stop()``, which also
    releases the answers it holds (hanging, trickling).

    The stop signal travels in the WSGI environ, so stopping one of several servers of
    the same simulator leaves the others' requests alone.
    """

    def __init__(self, simulator: Simulator, host: str, port: int) -> None:
        self._simulator = simulator
        self._stopping = threading.Event()
        server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
        self._server = make_server(
            host, port, self._app, server_class=server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"simulator-{self.port}", daemon=True
        )
        self._thread.start()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[_STOPPING_ENVIRON] = self._stopping
        return self._simulator(environ, start_response)

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_simulator(simulator: Simulator, address: str = "127.0.0.1:0") -> RunningServer:
    """Serve ``simulator`` on ``address`` (HOST:PORT; port 0 picks a free port)."""
    host, port = parse_listen_address(address)
    return RunningServer(simulator, host, port)


# --------------------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.simulator",
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
        "--page-days",
        type=int,
        metavar="N",
        help="most calendar days one per-day answer spans, quiet days left out",
    )
    variant.add_argument(
        "--total-drift-every",
        type=int,
        metavar="N",
        help="every N-th day the totals leave out the events of its first hour",
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
        page_days=args.page_days,
        total_drift_every=args.total_drift_every,
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
