"""Turns the current snapshot into Prometheus metric families, fresh on every collect.

Nothing is kept between scrapes, so an app or a dialog type that is gone from the
snapshot is gone from ``/metrics`` too, and one scrape never mixes two polls.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.client import MESSAGES, Kind
from exporter.days import local_day
from exporter.snapshot import Snapshot

DIALOG_TYPE_NAMES = {1: "broadcast", 2: "group", 3: "private", 4: "public", 5: "meeting"}


def dialog_type_label(code: int) -> str:
    """The documented name of a dialog type, or its number for any other code."""
    return DIALOG_TYPE_NAMES.get(code, str(code))


class StatsCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        zone: ZoneInfo,
        max_staleness: float = float("inf"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._zone = zone
        self._max_staleness = max_staleness
        self._clock = clock

    def describe(self) -> list[Metric]:
        # Registering must not collect: the families are only known from a snapshot.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        now = self._clock()
        today = local_day(now, self._zone)
        oldest = now - self._max_staleness

        counts = {spec: _family(spec) for spec in COUNTS}
        up, last_success, poll_duration = (
            GaugeMetricFamily(name, help_text, labels=["app"])
            for name, help_text in (
                ("connectycube_up", "1 if the last poll of the app fully succeeded, else 0."),
                (
                    "connectycube_last_success_timestamp_seconds",
                    "Unix time at which the last fully successful poll of the app finished.",
                ),
                ("connectycube_poll_duration_seconds", "Wall time the last poll of the app took."),
            )
        )
        polls = CounterMetricFamily(
            "connectycube_polls",
            "Polls of the app by outcome (success, failure).",
            labels=["app", "outcome"],
        )
        requests = CounterMetricFamily(
            "connectycube_api_requests",
            "Requests to the ConnectyCube API by endpoint and outcome (success, http_error, "
            "timeout, connection_error, invalid_response, rate_limited, error).",
            labels=["app", "endpoint", "outcome"],
        )

        for app in snapshot.apps.values():
            for spec, family in counts.items():
                readings = getattr(app, spec.source)
                kinds: tuple[Kind, ...] = app.dialog_types if spec.by_dialog_type else (MESSAGES,)
                day = None if spec.days_ago is None else today - timedelta(days=spec.days_ago)
                for kind in kinds:
                    reading = readings.get(kind)
                    # A count not refreshed for too long, or for another day than the one
                    # the metric is about, would be silently wrong: leave a gap instead.
                    if reading is None or reading.fetched_at < oldest or reading.day != day:
                        continue
                    labels = (
                        [app.name] if kind == MESSAGES else [app.name, dialog_type_label(int(kind))]
                    )
                    family.add_metric(labels, reading.value)
            up.add_metric([app.name], 1 if app.up else 0)
            if app.last_success is not None:
                last_success.add_metric([app.name], app.last_success)
            if app.last_poll_duration is not None:
                poll_duration.add_metric([app.name], app.last_poll_duration)
            for outcome, count in sorted(app.polls.items()):
                polls.add_metric([app.name, outcome], count)
            for (endpoint, outcome), count in sorted(app.requests.items()):
                requests.add_metric([app.name, endpoint, outcome], count)

        build_info = GaugeMetricFamily(
            "connectycube_exporter_build_info",
            "Version of the exporter and of Python, always 1.",
            labels=["version", "python_version"],
        )
        build_info.add_metric([__version__, platform.python_version()], 1)

        yield from counts.values()
        yield from (up, last_success, poll_duration, polls, requests, build_info)


@dataclass(frozen=True)
class CountMetric:
    """A family of counts: where in an ``AppSnapshot`` it comes from, and for which day."""

    name: str
    help: str
    source: str  # "totals", "today" or "yesterday"
    days_ago: int | None  # the day a per-day count must belong to; None for all time
    by_dialog_type: bool


COUNTS = (
    CountMetric("connectycube_messages_sent", "Messages sent, all time.", "totals", None, False),
    CountMetric(
        "connectycube_messages_sent_today",
        "Messages sent so far on the current day, in the configured time zone.",
        "today",
        0,
        False,
    ),
    CountMetric(
        "connectycube_messages_sent_yesterday",
        "Messages sent on the previous day, in the configured time zone.",
        "yesterday",
        1,
        False,
    ),
    CountMetric(
        "connectycube_dialogs_created",
        "Dialogs created, all time, by dialog type.",
        "totals",
        None,
        True,
    ),
    CountMetric(
        "connectycube_dialogs_created_today",
        "Dialogs created so far on the current day, by dialog type.",
        "today",
        0,
        True,
    ),
    CountMetric(
        "connectycube_dialogs_created_yesterday",
        "Dialogs created on the previous day, by dialog type.",
        "yesterday",
        1,
        True,
    ),
)


def _family(spec: CountMetric) -> GaugeMetricFamily:
    labels = ["app", "dialog_type"] if spec.by_dialog_type else ["app"]
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)
