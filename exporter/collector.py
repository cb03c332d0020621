"""Turns the current snapshot into Prometheus metric families, fresh on every collect.

Nothing is kept between scrapes, so an app or a dialog type that is gone from the
snapshot is gone from ``/metrics`` too, and one scrape never mixes two polls.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from zoneinfo import ZoneInfo

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.client import MESSAGES, Kind
from exporter.days import local_day
from exporter.snapshot import Reading, Snapshot

DIALOG_TYPE_NAMES = {1: "broadcast", 2: "group", 3: "private", 4: "public", 5: "meeting"}


def dialog_type_label(code: int) -> str:
    """The documented name of a dialog type, or its number for any other code."""
    return DIALOG_TYPE_NAMES.get(code, str(code))


class StatsCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        zone: ZoneInfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._zone = zone
        self._clock = clock

    def describe(self) -> list[Metric]:
        # Registering must not collect: the families are only known from a snapshot.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        today = local_day(self._clock(), self._zone)

        messages = GaugeMetricFamily(
            "connectycube_messages_sent", "Messages sent, all time.", labels=["app"]
        )
        messages_today = GaugeMetricFamily(
            "connectycube_messages_sent_today",
            "Messages sent so far on the current day, in the configured time zone.",
            labels=["app"],
        )
        dialogs = GaugeMetricFamily(
            "connectycube_dialogs_created",
            "Dialogs created, all time, by dialog type.",
            labels=["app", "dialog_type"],
        )
        dialogs_today = GaugeMetricFamily(
            "connectycube_dialogs_created_today",
            "Dialogs created so far on the current day, by dialog type.",
            labels=["app", "dialog_type"],
        )
        up = GaugeMetricFamily(
            "connectycube_up",
            "1 if the last poll of the app fully succeeded, 0 otherwise.",
            labels=["app"],
        )
        last_success = GaugeMetricFamily(
            "connectycube_last_success_timestamp_seconds",
            "Unix time at which the last fully successful poll of the app finished.",
            labels=["app"],
        )
        poll_duration = GaugeMetricFamily(
            "connectycube_poll_duration_seconds",
            "Wall time the last poll of the app took.",
            labels=["app"],
        )
        polls = CounterMetricFamily(
            "connectycube_polls",
            "Polls of the app by outcome (success, failure).",
            labels=["app", "outcome"],
        )
        requests = CounterMetricFamily(
            "connectycube_api_requests",
            "Requests to the ConnectyCube API by endpoint and outcome "
            "(success, http_error, timeout, connection_error, invalid_response, error).",
            labels=["app", "endpoint", "outcome"],
        )

        def current(reading: Reading | None) -> Reading | None:
            # A count for a day that has ended is not today's count any more.
            if reading is None or (reading.day is not None and reading.day != today):
                return None
            return reading

        def add(family: GaugeMetricFamily, labels: list[str], reading: Reading | None) -> None:
            if reading is not None:
                family.add_metric(labels, reading.value)

        for app in snapshot.apps.values():
            name = app.name
            add(messages, [name], app.totals.get(MESSAGES))
            add(messages_today, [name], current(app.today.get(MESSAGES)))
            for code in app.dialog_types:
                kind: Kind = code
                labels = [name, dialog_type_label(code)]
                add(dialogs, labels, app.totals.get(kind))
                add(dialogs_today, labels, current(app.today.get(kind)))
            up.add_metric([name], 1 if app.up else 0)
            if app.last_success is not None:
                last_success.add_metric([name], app.last_success)
            if app.last_poll_duration is not None:
                poll_duration.add_metric([name], app.last_poll_duration)
            for outcome, count in sorted(app.polls.items()):
                polls.add_metric([name, outcome], count)
            for (endpoint, outcome), count in sorted(app.requests.items()):
                requests.add_metric([name, endpoint, outcome], count)

        build_info = GaugeMetricFamily(
            "connectycube_exporter_build_info",
            "Version of the exporter and of Python, always 1.",
            labels=["version", "python_version"],
        )
        build_info.add_metric([__version__, platform.python_version()], 1)

        yield from (messages, messages_today, dialogs, dialogs_today)
        yield from (up, last_success, poll_duration, polls, requests, build_info)
