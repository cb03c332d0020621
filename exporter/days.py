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
