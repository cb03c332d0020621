"""From a snapshot to /metrics: names, labels, what is left out, and the rendering."""

from __future__ import annotations

import gzip
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from exporter.api import MESSAGES
from exporter.collector import APP_FAMILIES, BUILD_INFO, BUILD_INFO_SAMPLE, View, app_samples
from exporter.exposition import Exposition
from exporter.snapshot import AppSnapshot, Reading, Snapshot, frozen_map
from tests.processes import Samples, parse_metrics

ZONE = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=ZONE).timestamp()
TODAY = date(2026, 3, 10)


def snapshot_of(*apps: AppSnapshot) -> Snapshot:
    return Snapshot(frozen_map({app.name: app for app in apps}))


def exposition_of(
    snapshot: Snapshot, now: float = NOW, max_staleness: float = float("inf")
) -> Exposition:
    # Both clocks read ``now``: readings stamped NOW are that old on either.
    return Exposition(
        lambda: snapshot,
        ZONE,
        max_staleness,
        CollectorRegistry(auto_describe=False),
        lambda: now,
        lambda: now,
    )


def metrics_of(
    *apps: AppSnapshot, now: float = NOW, max_staleness: float = float("inf")
) -> Samples:
    return parse_metrics(exposition_of(snapshot_of(*apps), now, max_staleness).render().decode())


def healthy_app(name: str = "prod", day: date = TODAY) -> AppSnapshot:
    return AppSnapshot(
        name=name,
        dialog_types=(1, 2, 3, 4, 5, 42),
        totals=frozen_map(
            {MESSAGES: Reading(1000, NOW), **{t: Reading(t * 10, NOW) for t in (1, 2, 3, 4, 5, 42)}}
        ),
        today=frozen_map(
            {
                MESSAGES: Reading(7, NOW, day),
                **{t: Reading(t, NOW, day) for t in (1, 2, 3, 4, 5, 42)},
            }
        ),
        up=True,
        polled=True,
        last_success=NOW,
        last_poll_duration=0.25,
        polls=frozen_map({"success": 3}),
        requests=frozen_map({("messages/sent-total", "success"): 3}),
    )


def value(metrics: Samples, name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


def test_counts_are_exported_with_app_and_dialog_type() -> None:
    registry = metrics_of(healthy_app())
    assert value(registry, "connectycube_messages_sent", app="prod") == 1000
    assert value(registry, "connectycube_messages_sent_today", app="prod") == 7
    names = {"broadcast": 1, "group": 2, "private": 3, "public": 4, "meeting": 5, "42": 42}
    for label, code in names.items():
        assert value(registry, "connectycube_dialogs_created", app="prod", dialog_type=label) == (
            code * 10
        )
        assert (
            value(registry, "connectycube_dialogs_created_today", app="prod", dialog_type=label)
            == code
        )
    assert value(registry, "connectycube_up", app="prod") == 1
    assert value(registry, "connectycube_last_success_timestamp_seconds", app="prod") == NOW
    assert value(registry, "connectycube_poll_duration_seconds", app="prod") == 0.25
    assert value(registry, "connectycube_polls_total", app="prod", outcome="success") == 3
    assert (
        value(
            registry,
            "connectycube_api_requests_total",
            app="prod",
            endpoint="messages/sent-total",
            outcome="success",
        )
        == 3
    )


def test_a_count_for_a_day_that_has_ended_is_not_shown() -> None:
    yesterday = healthy_app(day=date(2026, 3, 9))
    registry = metrics_of(yesterday)
    assert value(registry, "connectycube_messages_sent_today", app="prod") is None
    assert (
        value(registry, "connectycube_dialogs_created_today", app="prod", dialog_type="group")
        is None
    )
    assert value(registry, "connectycube_messages_sent", app="prod") == 1000


@pytest.mark.parametrize(
    ("now", "shown"),
    [
        (datetime(2026, 3, 10, 23, 59, 59, tzinfo=ZONE).timestamp(), True),
        (datetime(2026, 3, 11, 0, 0, 0, tzinfo=ZONE).timestamp(), False),
    ],
)
def test_today_ends_at_local_midnight(now: float, shown: bool) -> None:
    registry = metrics_of(healthy_app(), now=now)
    assert (value(registry, "connectycube_messages_sent_today", app="prod") == 7) is shown


def test_an_app_never_polled_is_down_with_no_values() -> None:
    registry = metrics_of(AppSnapshot("new", (1, 2)))
    assert value(registry, "connectycube_up", app="new") == 0
    assert value(registry, "connectycube_messages_sent", app="new") is None
    assert value(registry, "connectycube_last_success_timestamp_seconds", app="new") is None


def test_only_apps_in_the_snapshot_appear() -> None:
    metrics = metrics_of(healthy_app("a"), AppSnapshot("b", (2,)))
    apps = {dict(labels).get("app") for (_, labels) in metrics if dict(labels).get("app")}
    assert apps == {"a", "b"}


def test_yesterday_is_shown_only_while_it_is_the_previous_day() -> None:
    app = AppSnapshot(
        name="prod",
        dialog_types=(2,),
        yesterday=frozen_map(
            {MESSAGES: Reading(40, NOW, date(2026, 3, 9)), 2: Reading(6, NOW, date(2026, 3, 9))}
        ),
    )
    registry = metrics_of(app)
    assert value(registry, "connectycube_messages_sent_yesterday", app="prod") == 40
    assert (
        value(registry, "connectycube_dialogs_created_yesterday", app="prod", dialog_type="group")
        == 6
    )
    next_day = datetime(2026, 3, 11, 0, 0, 1, tzinfo=ZONE).timestamp()
    assert (
        value(metrics_of(app, now=next_day), "connectycube_messages_sent_yesterday", app="prod")
        is None
    )


def test_counts_older_than_the_staleness_limit_are_dropped() -> None:
    stale = metrics_of(healthy_app(), now=NOW + 61, max_staleness=60)
    assert value(stale, "connectycube_messages_sent", app="prod") is None
    assert value(stale, "connectycube_up", app="prod") == 1  # health is never stale
    fresh = metrics_of(healthy_app(), now=NOW + 59, max_staleness=60)
    assert value(fresh, "connectycube_messages_sent", app="prod") == 1000


def reference_families(snapshot: Snapshot, now: float) -> CollectorRegistry:
    """The same samples as prometheus_client's own metric families, for comparison."""
    view = View.at(now, now, 0.0, ZONE, float("inf"))
    families = [
        (GaugeMetricFamily if f.type == "gauge" else CounterMetricFamily)(
            f.name, f.help, labels=list(f.labels)
        )
        for f in (*APP_FAMILIES, BUILD_INFO)
    ]
    for app in snapshot.apps.values():
        for index, labels, number in app_samples(app, view)[0]:
            families[index].add_metric(list(labels), number)
    families[-1].add_metric(list(BUILD_INFO_SAMPLE[0]), BUILD_INFO_SAMPLE[1])

    class Families:
        def collect(self) -> list:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())  # type: ignore[arg-type]
    return registry


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_rendering_matches_prometheus_client_byte_for_byte(openmetrics: bool) -> None:
    snapshot = snapshot_of(
        healthy_app("a"), healthy_app('we"ird\\app\nname'), AppSnapshot("c", (2,))
    )
    reference = (generate_openmetrics if openmetrics else generate_latest)(
        reference_families(snapshot, NOW)
    )
    assert exposition_of(snapshot).render(openmetrics=openmetrics) == reference


def test_openmetrics_parses_and_gzip_is_one_ordinary_stream() -> None:
    exposition = exposition_of(snapshot_of(healthy_app()))
    body = exposition.render(openmetrics=True)
    assert body.endswith(b"# EOF\n")
    assert next(f.name for f in parse_openmetrics(body.decode())) == "connectycube_messages_sent"
    for openmetrics in (False, True):
        plain = exposition.render(openmetrics=openmetrics)
        packed = exposition.render(openmetrics=openmetrics, compress=True)
        assert gzip.decompress(packed) == plain
        # A second scrape reuses the compressed snapshot part and is still whole.
        assert gzip.decompress(exposition.render(openmetrics=openmetrics, compress=True)) == plain


def test_a_new_snapshot_or_a_new_day_changes_the_body() -> None:
    current = {"snapshot": snapshot_of(healthy_app())}
    clock = {"now": NOW}
    exposition = Exposition(
        lambda: current["snapshot"],
        ZONE,
        float("inf"),
        CollectorRegistry(),
        lambda: clock["now"],
        lambda: clock["now"],
    )
    first = parse_metrics(exposition.render().decode())
    assert value(first, "connectycube_messages_sent_today", app="prod") == 7
    current["snapshot"] = snapshot_of(healthy_app(), AppSnapshot("new", (1,)))
    second = parse_metrics(exposition.render().decode())
    assert value(second, "connectycube_up", app="new") == 0
    clock["now"] = datetime(2026, 3, 11, 0, 0, 1, tzinfo=ZONE).timestamp()
    third = parse_metrics(exposition.render().decode())
    assert value(third, "connectycube_messages_sent_today", app="prod") is None
    assert value(third, "connectycube_messages_sent", app="prod") == 1000


def test_a_wall_clock_step_changes_no_age() -> None:
    # Readings stamped NOW on the monotonic clock; then 10 s pass and the wall clock steps
    # ten minutes back.
    clock = {"wall": NOW - 600 + 10, "monotonic": NOW + 10}
    exposition = Exposition(
        lambda: snapshot_of(healthy_app()),
        ZONE,
        60,
        CollectorRegistry(),
        lambda: clock["wall"],
        lambda: clock["monotonic"],
    )
    shown = parse_metrics(exposition.render().decode())
    assert value(shown, "connectycube_messages_sent", app="prod") == 1000
    # 10 s old on the exporter's clock as it reads now: never later than that clock.
    assert value(shown, "connectycube_last_success_timestamp_seconds", app="prod") == NOW - 600
    clock["wall"] += 51
    clock["monotonic"] += 51
    stale = parse_metrics(exposition.render().decode())
    assert value(stale, "connectycube_messages_sent", app="prod") is None


class CountedReads:
    """A process metric that counts how often it is read, as its value."""

    def __init__(self) -> None:
        self.reads = 0

    def collect(self) -> list[GaugeMetricFamily]:
        self.reads += 1
        return [GaugeMetricFamily("process_reads", "Reads of the process metrics.", self.reads)]


def test_process_metrics_are_read_at_most_once_a_second() -> None:
    reads = CountedReads()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(reads)
    clock = {"wall": NOW, "monotonic": NOW}
    snapshot = snapshot_of(healthy_app())
    exposition = Exposition(
        lambda: snapshot,
        ZONE,
        float("inf"),
        registry,
        lambda: clock["wall"],
        lambda: clock["monotonic"],
    )

    def process_reads(openmetrics: bool = False) -> float | None:
        return value(parse_metrics(exposition.render(openmetrics).decode()), "process_reads")

    assert process_reads() == 1
    clock["monotonic"] = NOW + 0.999  # an HA pair's second scrape, or a flood: the same answer
    assert process_reads() == 1
    packed = exposition.render(compress=True)
    assert reads.reads == 2  # the gzip answer's own reading
    assert exposition.render(compress=True) == packed
    assert process_reads(openmetrics=True) == 3  # each format reads once for itself
    clock["monotonic"] = NOW + 1.0
    assert process_reads() == 4
    clock["wall"] = NOW - 60  # the wall clock stepped: everything is placed again, once
    assert process_reads() == 5
    assert process_reads() == 5
