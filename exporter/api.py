"""The ConnectyCube Admin Statistics API's domain: its endpoints, what they count, and
the calendar days in which they count it. Nothing here does I/O or imports the package.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

API_KEY_HEADER: Final = "CB-Administration-API-Key"
MESSAGES: Final = "messages"
"""The kind of count that is not a dialog type: messages sent."""

Kind = str | int
"""``MESSAGES`` or a dialog type code."""

ENDPOINT_PREFIX: Final = "/admin/stats/"
PAGE_DAYS: Final = 100
"""The ``limit`` asked of the per-day endpoints: their documented default page size."""
ONE_DAY: Final = timedelta(days=1)

# The REST docs' names. The official JS SDK numbers them otherwise (1 public, 4 broadcast):
# CONNECTYCUBE_DIALOG_TYPE_NAMES lets a user say which is right for their account.
DEFAULT_DIALOG_TYPE_NAMES: Final = {
    1: "broadcast",
    2: "group",
    3: "private",
    4: "public",
    5: "meeting",
}


def endpoint_path(kind: Kind, per_day: bool) -> str:
    """The endpoint that counts ``kind``, all in one or day by day."""
    if kind == MESSAGES:
        return ENDPOINT_PREFIX + "messages/" + ("sent-per-day" if per_day else "sent-total")
    return ENDPOINT_PREFIX + "dialogs/" + ("created-per-day" if per_day else "created-total")


def endpoint_label(path: str) -> str:
    """``/admin/stats/messages/sent-total`` -> ``messages/sent-total``."""
    return path.removeprefix(ENDPOINT_PREFIX)


def type_name(code: int, names: tuple[tuple[int, str], ...] = ()) -> str:
    """The ``dialog_type`` label of a code: as configured, as documented, or the number."""
    return dict(names).get(code) or DEFAULT_DIALOG_TYPE_NAMES.get(code, str(code))


DAY_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str) -> date | None:
    """A strict ``YYYY-MM-DD`` (fromisoformat alone also takes ``20230220``, ``2023-W01-1``)."""
    if not DAY_PATTERN.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------- days


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
