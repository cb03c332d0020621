"""The ConnectyCube Admin Statistics API's domain: its endpoints, what they count, and
the calendar days in which they count it. Nothing here does I/O or imports the package.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

API_KEY_HEADER: Final = "CB-Administration-API-Key"
MESSAGES: Final = "messages"  # the kind of count that is not a dialog type: messages sent
Kind = str | int  # MESSAGES or a dialog type code

ENDPOINT_PREFIX: Final = "/admin/stats/"
PAGE_DAYS: Final = 100  # the limit asked per page: the per-day endpoints' documented default
WINDOW_DAYS: Final = PAGE_DAYS - 2  # the widest window asked: it and a day either side fit
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


class InvalidAnswer(ValueError):
    """An answer that does not have the shape the API documents."""


MAX_COUNT: Final = 2**53  # past this a float64, and so Prometheus, misses whole numbers
COUNT_TEXT = re.compile(r"[0-9]{1,20}")


def check_count(value: Any) -> int:
    """A count as the API may spell it: ``167``, ``"167"`` or ``167.0``; nothing else."""
    # bool is an int subclass in Python; JSON true is not a count.
    spelled = isinstance(value, str) and COUNT_TEXT.fullmatch(value)
    if spelled or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        # The type, not the value: an answer's text is not ours to print.
        raise InvalidAnswer(f"a count of type {_json_type(value)} is not an integer")
    if value < 0:
        raise InvalidAnswer(f"count {value} is negative")
    if value > MAX_COUNT:
        raise InvalidAnswer("a count is larger than 2^53, more than Prometheus holds exactly")
    return value


def parse_total(payload: Any) -> int:
    """``{"total": N}`` to N."""
    if not isinstance(payload, dict) or "total" not in payload:
        raise InvalidAnswer('expected an object with "total"')
    return check_count(payload["total"])


def parse_per_day(payload: Any) -> dict[date, int]:
    """``{"YYYY-MM-DD": N, ...}`` to counts by day; the keys may come in any order."""
    if not isinstance(payload, dict):
        raise InvalidAnswer("expected an object of day: count")
    counts: dict[date, int] = {}
    for key, value in payload.items():
        day = parse_day(key)
        if day is None:
            raise InvalidAnswer("a key is not a YYYY-MM-DD date")
        counts[day] = check_count(value)
    return counts


def _json_type(value: Any) -> str:
    names = {bool: "boolean", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def build_query(
    kind: Kind,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> str:
    """The query string; the dialog type filter must be spelled ``types[]=N``."""
    given = {"start_date": start, "end_date": end, "limit": limit, "offset": offset}
    params = [(name, value) for name, value in given.items() if value is not None]
    if kind != MESSAGES:
        params.append(("types[]", int(kind)))
    # Brackets stay literal: a server may ignore the percent-encoded spelling.
    return urlencode(params, safe="[]")


def local_day(timestamp: float, zone: ZoneInfo) -> date:
    """The day, in ``zone``, that the Unix time ``timestamp`` falls on."""
    return datetime.fromtimestamp(timestamp, zone).date()


def day_start(day: date, zone: ZoneInfo) -> int:
    """Unix time of the first second of ``day`` in ``zone``. Where a DST change skips
    midnight, the day starts at the change: zoneinfo reads a missing 00:00 with the offset
    from before the gap, which is that very instant."""
    return int(datetime.combine(day, time.min, zone).timestamp())


def day_bounds(day: date, zone: ZoneInfo) -> tuple[int, int]:
    """``[start, end)`` of ``day`` in ``zone`` as Unix seconds (23 to 25 hours long)."""
    return day_start(day, zone), day_start(day + ONE_DAY, zone)


# The API does not say whether ``start_date`` and ``end_date`` are inclusive. Starting one
# second early and ending at the next midnight holds every event of the days asked for
# either way; the per-day answer is then read only for those days, since the window may
# add a key either side (an event in that extra second, or one at exactly the midnight
# that ends the window when the end is inclusive).


def days_window(first: date, last: date, zone: ZoneInfo) -> tuple[int, int]:
    """``(start_date, end_date)`` whose answer holds every event of ``first`` to ``last``."""
    return day_start(first, zone) - 1, day_start(last + ONE_DAY, zone)


def all_time_window(today: date, zone: ZoneInfo) -> tuple[int, int]:
    """``(start_date, end_date)`` of every event up to the end of ``today``, sent with
    every all-time total since the API may refuse one without dates. The start is before
    any event, and not 0 (which some servers read as "no date given")."""
    return 1, day_start(today + ONE_DAY, zone)
