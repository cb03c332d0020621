"""A simulated ConnectyCube Admin Statistics API: what ``connectycube-exporter --demo`` polls.

``Simulator``, an app for ``exporter.server``, answers the four endpoints as their
documentation reads (start_date inclusive, end_date exclusive, per-day ``limit`` and
``offset`` over the days with data) from a random ``History`` that looks like a living app.
The tests' rig (``tests/simulator.py``) builds its variants and faults on these pieces.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from array import array
from calendar import monthrange
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta
from functools import cache
from typing import Any, NamedTuple
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from exporter import api
from exporter.api import MESSAGES, Kind
from exporter.server import Request, Response


class Endpoint(NamedTuple):
    dialogs: bool  # counts dialogs and understands ``types[]``
    per_day: bool  # answers pages of {date: count} instead of {"total": n}


ENDPOINTS: dict[str, Endpoint] = {
    api.endpoint_path(kind, per_day): Endpoint(dialogs=kind != MESSAGES, per_day=per_day)
    for kind in (MESSAGES, 1)
    for per_day in (False, True)
}
DIALOG_TYPES: list[Kind] = [1, 2, 3, 4, 5]
# Log-uniform range of a key's typical daily volume: messages dominate, meetings are rare.
BASE_VOLUME: dict[Kind, tuple[float, float]] = {
    MESSAGES: (300.0, 3000.0),
    1: (0.5, 5.0),
    2: (5.0, 50.0),
    3: (20.0, 200.0),
    4: (1.0, 10.0),
    5: (0.2, 3.0),
}
WEEKDAY_FACTOR = (1.0, 1.05, 1.05, 1.0, 0.9, 0.55, 0.45)  # Monday first
QUIET_DAY_SHARE = 0.1  # of dialog types only: a live app always has messages
DAILY_NOISE = 0.5  # triangular noise: daily volume varies by up to +-50%


def month_counts(seed: int, key: str, kind: Kind, day: date) -> list[int]:
    """The daily counts of ``kind`` in the month of ``day``."""
    low, high = (math.log(volume) for volume in BASE_VOLUME[kind])
    base = math.exp(random.Random(f"{seed}:{key}:{kind}:base").uniform(low, high))
    # One generator per month: seeding costs ~10 us, too much for 1000 keys x 400 days.
    rng = random.Random(f"{seed}:{key}:{kind}:{day.year:04d}-{day.month:02d}")
    first_weekday, days = monthrange(day.year, day.month)
    counts = []
    for i in range(days):
        # Drawn for messages too, so that dialog volumes stay the same for a seed.
        quiet = rng.random() < QUIET_DAY_SHARE and kind != MESSAGES
        noise = 1.0 + DAILY_NOISE * (rng.random() - rng.random())
        volume = base * WEEKDAY_FACTOR[(first_weekday + i) % 7] * noise
        # Random rounding keeps rare kinds (0.2 meetings a day) from always rounding to 0.
        counts.append(0 if quiet else math.floor(volume + rng.random()))
    return counts


def date_of(ts: float, zone: ZoneInfo) -> date:
    """Floored: fromtimestamp() would round a hair before midnight up into the next day."""
    return api.local_day(math.floor(ts), zone)


@cache
def midnight(ordinal: int, zone: ZoneInfo) -> float:
    """The first instant of the day ``ordinal`` in ``zone`` (cached: every count asks)."""
    return float(api.day_start(date.fromordinal(ordinal), zone))


class History:
    """Random daily counts of each key and kind in ``zone``'s days from ``first_day`` on; a
    day's n events sit at (i + phase) / n of it, so phase 0 puts one at each midnight."""

    def __init__(self, seed: int, zone: ZoneInfo, first_day: date, phase: float) -> None:
        self.seed = seed
        self.zone = zone
        self.phase = phase
        self.first = first_day.toordinal()
        # (key, kind) -> cumulative day counts: prefix[i] events before day first + i.
        self._prefixes: dict[tuple[str, Kind], array[int]] = defaultdict(lambda: array("q", [0]))
        self._lock = threading.Lock()  # the tests' rig answers on many threads

    def before(self, key: str, kind: Kind, x: float) -> int:
        """The number of events of ``kind`` with timestamp < ``x``."""
        if x <= midnight(self.first, self.zone) or kind not in BASE_VOLUME:
            return 0
        ordinal = date_of(x, self.zone).toordinal()
        i = ordinal - self.first
        with self._lock:
            prefix = self._prefixes[key, kind]
            while len(prefix) < i + 2:
                day = date.fromordinal(self.first + len(prefix) - 1)
                for count in month_counts(self.seed, key, kind, day)[day.day - 1 :]:
                    prefix.append(prefix[-1] + count)
        n = prefix[i + 1] - prefix[i]
        start, end = midnight(ordinal, self.zone), midnight(ordinal + 1, self.zone)
        # The events i with i + phase < (x - start) * n / (end - start): monotone in x.
        in_day = math.ceil((x - start) * n / (end - start) - self.phase)
        return prefix[i] + min(n, max(0, in_day))

    def per_day(
        self, key: str, kinds: list[Kind], lo: float, hi: float, zone: ZoneInfo
    ) -> dict[date, int]:
        """Nonzero counts of ``kinds`` with lo <= ts < hi, by ascending local date in ``zone``."""
        counts: dict[date, int] = {}
        lo = max(lo, midnight(self.first, self.zone))
        if hi <= lo:
            return counts
        before = sum(self.before(key, kind, lo) for kind in kinds)
        for ordinal in range(date_of(lo, zone).toordinal(), date_of(hi, zone).toordinal() + 1):
            x = min(hi, midnight(ordinal + 1, zone))
            after = sum(self.before(key, kind, x) for kind in kinds)
            if after > before:
                counts[date.fromordinal(ordinal)] = after - before
            before = after
        return counts


class Refused(ValueError):
    """A bad query parameter: the API answers 422."""


class Query(NamedTuple):
    start: int | None
    end: int | None
    limit: int
    offset: int
    types: list[int] | None


def _integer(name: str, text: str) -> int:
    # Not int() alone, which takes "1_000", " 7" or "+7"; capped to stay within floats.
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        raise Refused(f"{name} must be an integer")
    return int(text)


def parse_query(raw: str, endpoint: Endpoint) -> Query:
    """The parameters ``endpoint`` understands, the last of each; others are ignored."""
    pairs = parse_qsl(raw, keep_blank_values=True)
    params = dict(pairs)  # the last value of each

    def last(name: str, default: int | None = None) -> int | None:
        return _integer(name, params[name]) if name in params else default

    limit, offset = api.PAGE_DAYS, 0
    if endpoint.per_day:
        limit, offset = last("limit", limit), last("offset", offset)
        if limit < 1 or offset < 0:
            raise Refused("limit must be >= 1 and offset >= 0")
    types = None
    if endpoint.dialogs and "types[]" in params:  # a bare ``types`` is ignored
        types = sorted({_integer(name, value) for name, value in pairs if name == "types[]"})
    return Query(last("start_date"), last("end_date"), limit, offset, types)


def events_window(start: float | None, end: float | None, now: float) -> tuple[float, float]:
    """[lo, hi) of the events with start <= ts < end that exist at ``now`` (ts <= now)."""
    hi = min(math.nextafter(now, math.inf), math.inf if end is None else end)
    return (-math.inf if start is None else min(start, hi)), hi


def error_body(message: str) -> dict[str, Any]:
    return {"errors": {"base": [message]}}


class Simulator:
    """The four endpoints over a ``History`` of the last 400 days, today never quiet."""

    def __init__(self, api_keys: Iterable[str], timezone: str) -> None:
        self.api_keys = frozenset(api_keys)
        self.zone = ZoneInfo(timezone)
        # Anchored at construction, so that totals never shrink when a day rolls over.
        first_day = date_of(time.time(), self.zone) - timedelta(days=400)
        self.history = History(0, self.zone, first_day, phase=0.0)

    async def __call__(self, request: Request) -> Response:
        try:
            status, body = self.answer(request)
        except Refused as exc:
            status, body = 422, error_body(str(exc))
        return Response(status, [("Content-Type", "application/json")], json.dumps(body).encode())

    def answer(self, request: Request) -> tuple[int, dict[str, Any]]:
        endpoint = ENDPOINTS.get(request.path)
        api_key = request.headers.get(api.API_KEY_HEADER.lower(), "")
        if endpoint is None:
            return 404, error_body(f"no such endpoint: {request.path}")
        if api_key not in self.api_keys:
            return 401, error_body("Required session does not exist")
        query = parse_query(request.query, endpoint)
        kinds = [MESSAGES] if not endpoint.dialogs else query.types or DIALOG_TYPES
        lo, hi = events_window(query.start, query.end, time.time())
        days = self.history.per_day(api_key, kinds, lo, hi, self.zone)
        if not endpoint.per_day:
            return 200, {"total": sum(days.values())}
        page = list(days.items())[query.offset : query.offset + query.limit]
        return 200, {day.isoformat(): n for day, n in page}
