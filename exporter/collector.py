"""What /metrics says about a snapshot: the metric families and each app's samples.

``app_samples`` decides, for one app, which samples are shown and until when that
answer holds; ``exposition.Exposition`` renders them. Everything comes from the
snapshot of the moment, nothing from earlier ones: an app or a dialog type that is gone
from the snapshot is gone from ``/metrics`` too, and one scrape never mixes two polls.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from exporter import __version__
from exporter.api import MESSAGES, Kind, day_start, local_day, type_name
from exporter.snapshot import AppSnapshot


@dataclass(frozen=True)
class Family:
    """One metric family; for a counter, ``name`` is without the ``_total`` suffix. Label
    names are in sorted order, the order in which prometheus_client writes them."""

    name: str
    help: str
    type: Literal["gauge", "counter"] = "gauge"
    labels: tuple[str, ...] = ("app",)


@dataclass(frozen=True)
class Count:
    """A family of counts and the day they must belong to: ``days_ago``, None for all time."""

    family: Family
    days_ago: int | None


def _count(name: str, days_ago: int | None, help_text: str) -> Count:
    # Dialogs are counted by dialog type, messages are not.
    labels = ("app", "dialog_type") if name.startswith("connectycube_dialogs_") else ("app",)
    return Count(Family(name, help_text, labels=labels), days_ago)


COUNTS = (
    _count("connectycube_messages_sent", None, "Messages sent, all time."),
    _count(
        "connectycube_messages_sent_today",
        0,
        "Messages sent so far on the current day, in the configured time zone.",
    ),
    _count(
        "connectycube_messages_sent_yesterday",
        1,
        "Messages sent on the previous day, in the configured time zone.",
    ),
    _count("connectycube_dialogs_created", None, "Dialogs created, all time, by dialog type."),
    _count(
        "connectycube_dialogs_created_today",
        0,
        "Dialogs created so far on the current day, by dialog type.",
    ),
    _count(
        "connectycube_dialogs_created_yesterday",
        1,
        "Dialogs created on the previous day, by dialog type.",
    ),
)
BUILD_INFO = Family(
    "connectycube_exporter_build_info",
    "Version of the exporter and of Python, always 1.",
    labels=("python_version", "version"),
)
# Per-app families, in the order /metrics shows them.
APP_FAMILIES: tuple[Family, ...] = (
    *(count.family for count in COUNTS),
    Family("connectycube_up", "1 if the last poll of the app fully succeeded, else 0."),
    Family(
        "connectycube_last_success_timestamp_seconds",
        "Unix time at which the last fully successful poll of the app finished.",
    ),
    Family("connectycube_poll_duration_seconds", "Wall time the last poll of the app took."),
    Family(
        "connectycube_polls",
        "Polls of the app by outcome (success, failure).",
        "counter",
        ("app", "outcome"),
    ),
    Family(
        "connectycube_api_requests",
        "Requests to the ConnectyCube API by endpoint and outcome (success, http_error, "
        "timeout, connection_error, invalid_response, rate_limited, error).",
        "counter",
        ("app", "endpoint", "outcome"),
    ),
)
BUILD_INFO_SAMPLE = ((platform.python_version(), __version__), 1.0)

Sample = tuple[int, tuple[str, ...], float]  # index into APP_FAMILIES, label values, value


@dataclass(frozen=True)
class View:
    """What one moment shows of the snapshot: the day, and counts not older than this.
    Times are on the monotonic clock, as the snapshot's (see ``exporter.snapshot``)."""

    today: date
    oldest: float  # a count fetched before this is stale
    max_staleness: float
    next_midnight: float  # when ``today`` ends, as the wall clock says
    wall_offset: float  # the wall clock minus the monotonic clock

    @classmethod
    def at(
        cls, now: float, monotonic: float, wall_offset: float, zone: ZoneInfo, max_staleness: float
    ) -> View:
        """The view at wall clock time ``now``, monotonic time ``monotonic``, the clocks
        ``wall_offset`` apart (as last measured: see ``Exposition.render``)."""
        today = local_day(now, zone)
        tomorrow = day_start(today + timedelta(days=1), zone) - wall_offset
        return cls(today, monotonic - max_staleness, max_staleness, tomorrow, wall_offset)


def app_samples(app: AppSnapshot, view: View) -> tuple[list[Sample], float]:
    """The samples of one app, and the time until which they stay the same."""
    samples: list[Sample] = []
    expires = view.next_midnight
    for index, count in enumerate(COUNTS):
        readings = {None: app.totals, 0: app.today, 1: app.yesterday}[count.days_ago]
        kinds: tuple[Kind, ...] = app.dialog_types if len(count.family.labels) == 2 else (MESSAGES,)
        day = None if count.days_ago is None else view.today - timedelta(days=count.days_ago)
        for kind in kinds:
            reading = readings.get(kind)
            # A count not refreshed for too long, or for another day than the one the
            # metric is about, would be silently wrong: leave a gap instead.
            if reading is None or reading.fetched_at < view.oldest or reading.day != day:
                continue
            expires = min(expires, reading.fetched_at + view.max_staleness)
            if kind == MESSAGES:
                labels: tuple[str, ...] = (app.name,)
            else:
                labels = (app.name, type_name(int(kind), app.dialog_type_names))
            samples.append((index, labels, float(reading.value)))
    base = len(COUNTS)
    samples.append((base, (app.name,), 1.0 if app.up else 0.0))
    if app.last_success is not None:
        # On today's wall clock: never later than now, whatever steps the clock took since.
        samples.append((base + 1, (app.name,), app.last_success + view.wall_offset))
    if app.last_poll_duration is not None:
        samples.append((base + 2, (app.name,), app.last_poll_duration))
    for outcome, number in sorted(app.polls.items()):
        samples.append((base + 3, (app.name, outcome), float(number)))
    for (endpoint, outcome), number in sorted(app.requests.items()):
        samples.append((base + 4, (app.name, endpoint, outcome), float(number)))
    return samples, expires
