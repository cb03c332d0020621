"""From a snapshot to metric families: names, labels, and what is left out."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from exporter.client import MESSAGES
from exporter.collector import StatsCollector
from exporter.snapshot import AppSnapshot, Reading, Snapshot, frozen_map

ZONE = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=ZONE).timestamp()
TODAY = date(2026, 3, 10)


def registry_for(*apps: AppSnapshot, now: float = NOW) -> CollectorRegistry:
    snapshot = Snapshot(frozen_map({app.name: app for app in apps}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(lambda: snapshot, ZONE, clock=lambda: now))
    return registry


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


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_counts_are_exported_with_app_and_dialog_type() -> None:
    registry = registry_for(healthy_app())
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
    registry = registry_for(yesterday)
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
    registry = registry_for(healthy_app(), now=now)
    assert (value(registry, "connectycube_messages_sent_today", app="prod") == 7) is shown


def test_an_app_never_polled_is_down_with_no_values() -> None:
    registry = registry_for(AppSnapshot("new", (1, 2)))
    assert value(registry, "connectycube_up", app="new") == 0
    assert value(registry, "connectycube_messages_sent", app="new") is None
    assert value(registry, "connectycube_last_success_timestamp_seconds", app="new") is None


def test_only_apps_in_the_snapshot_appear() -> None:
    registry = registry_for(healthy_app("a"), AppSnapshot("b", (2,)))
    apps = {
        sample.labels.get("app")
        for family in registry.collect()
        for sample in family.samples
        if "app" in sample.labels
    }
    assert apps == {"a", "b"}


def test_gauges_carry_no_total_suffix_and_build_info_is_one() -> None:
    registry = registry_for(healthy_app())
    for family in registry.collect():
        if family.type == "gauge":
            assert not family.name.endswith("_total")
    [info] = [f for f in registry.collect() if f.name == "connectycube_exporter_build_info"]
    assert [s.value for s in info.samples] == [1]


def test_yesterday_is_shown_only_while_it_is_the_previous_day() -> None:
    app = AppSnapshot(
        name="prod",
        dialog_types=(2,),
        yesterday=frozen_map(
            {MESSAGES: Reading(40, NOW, date(2026, 3, 9)), 2: Reading(6, NOW, date(2026, 3, 9))}
        ),
    )
    registry = registry_for(app)
    assert value(registry, "connectycube_messages_sent_yesterday", app="prod") == 40
    assert (
        value(registry, "connectycube_dialogs_created_yesterday", app="prod", dialog_type="group")
        == 6
    )
    next_day = datetime(2026, 3, 11, 0, 0, 1, tzinfo=ZONE).timestamp()
    assert (
        value(registry_for(app, now=next_day), "connectycube_messages_sent_yesterday", app="prod")
        is None
    )


def test_counts_older_than_the_staleness_limit_are_dropped() -> None:
    snapshot = Snapshot(frozen_map({"prod": healthy_app()}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        StatsCollector(lambda: snapshot, ZONE, max_staleness=60, clock=lambda: NOW + 61)
    )
    assert value(registry, "connectycube_messages_sent", app="prod") is None
    assert value(registry, "connectycube_up", app="prod") == 1  # health is never stale
    fresh = CollectorRegistry(auto_describe=False)
    fresh.register(StatsCollector(lambda: snapshot, ZONE, max_staleness=60, clock=lambda: NOW + 59))
    assert value(fresh, "connectycube_messages_sent", app="prod") == 1000
