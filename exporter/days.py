"""Calendar days in the API's time zone: which day a moment falls on, and its bounds."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def local_day(timestamp: float, zone: ZoneInfo) -> date:
    """The day, in ``zone``, that the Unix time ``timestamp`` falls on."""
    return datetime.fromtimestamp(timestamp, zone).date()


def day_start(day: date, zone: ZoneInfo) -> int:
    """Unix time of the first second of ``day`` in ``zone``.

    Where a DST change skips midnight, the day starts at the change: zoneinfo reads a
    missing 00:00 with the offset from before the gap, which is that very instant.
    """
    return int(datetime.combine(day, time.min, zone).timestamp())


def day_bounds(day: date, zone: ZoneInfo) -> tuple[int, int]:
    """``[start, end)`` of ``day`` in ``zone`` as Unix seconds (23 to 25 hours long)."""
    return day_start(day, zone), day_start(day + timedelta(days=1), zone)


# The API does not say whether ``start_date`` and ``end_date`` are inclusive. Starting one
# second early and ending at the next midnight holds every event of the days asked for
# either way; the per-day answer is then read only for those days, since the window may
# add a key either side (an event in that extra second, or one at exactly the midnight
# that ends the window when the end is inclusive).
ALL_TIME_START = 1
"""``start_date`` of an all-time window: before any event, and not 0 (which some servers
read as "no date given")."""


def days_window(first: date, last: date, zone: ZoneInfo) -> tuple[int, int]:
    """``(start_date, end_date)`` whose answer holds every event of ``first`` to ``last``."""
    return day_start(first, zone) - 1, day_start(last + timedelta(days=1), zone)


def all_time_window(today: date, zone: ZoneInfo) -> tuple[int, int]:
    """``(start_date, end_date)`` covering every event up to the end of ``today``.

    Sent with every all-time total, because the API may refuse a total without dates.
    """
    return ALL_TIME_START, day_start(today + timedelta(days=1), zone)
