"""Exact against every reading of what the API's documentation leaves open.

One simulator serves every combination of the variants (bounds, the meaning of
``offset``, a page cap, counts as strings or floats, totals that need a window, events at
exactly local midnight), one API key per combination. The real daemon, ``backfill`` and
``check`` run as processes against it over loopback, each with one app per key, and
every count they give must equal the simulator's ground truth to the unit.

The simulator's clock is frozen, so that its random history does not grow while the
processes read it: every count has one true value for the whole test.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.processes import Exporter, parse_metrics, wait_until
from tests.simulator import Simulator, Variant, start_simulator

ZONE = "Asia/Kathmandu"  # UTC+05:45: a midnight that a UTC reading would cut wrongly
TYPES = {2: "group", 5: "meeting"}  # a busy and a rare dialog type
KINDS: tuple[str | int, ...] = ("messages", *TYPES)
BACKFILL_DAYS = 12


def _variants() -> dict[str, Variant]:
    combinations = itertools.product(
        ("[]", "[)", "()", "(]"),
        ("days_with_data", "calendar_days"),
        (1, 7, None),
        ("int", "string", "float"),
        (False, True),
        (False, True),
    )
    variants = {}
    for bounds, offset, cap, counts, needs_window, midnight in combinations:
        variant = Variant.from_bounds(
            bounds,
            offset_counts=offset,
            page_cap=cap,
            count_format=counts,
            totals_need_window=needs_window,
            midnight_events=midnight,
        )
        name = f"{bounds}-{offset}-cap{cap}-{counts}-{'window' if needs_window else 'open'}-"
        variants[f"key{len(variants):03d}-{name}{'midnight' if midnight else 'spread'}"] = variant
    return variants


VARIANTS = _variants()


def local_midnight(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), ZoneInfo(ZONE)).timestamp())


@dataclass(frozen=True)
class Served:
    sim: Simulator
    url: str
    config: Path
    today: date

    def day_count(self, key: str, kind: str | int, day: date) -> int:
        start, end = local_midnight(day), local_midnight(day + timedelta(days=1))
        return self.sim.per_day(key, kind, start, end, timezone=ZONE).get(day.isoformat(), 0)

    def total_before(self, key: str, kind: str | int, moment: float | None = None) -> int:
        return self.sim.count(key, kind, None, moment)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    frozen = time.time()
    sim = Simulator(
        api_keys=[],
        variants=VARIANTS,
        timezone=ZONE,
        history_days=60,
        seed=9,
        clock=lambda: frozen,
    )
    server = start_simulator(sim)
    config = tmp_path_factory.mktemp("fidelity") / "apps.yml"
    apps = [{"name": key, "api_key": key, "dialog_types": list(TYPES)} for key in VARIANTS]
    config.write_text(yaml.safe_dump({"apps": apps}))
    today = datetime.fromtimestamp(frozen, ZoneInfo(ZONE)).date()
    yield Served(sim, server.url, config, today)
    server.stop()


def settings(served: Served) -> list[str]:
    return ["--api-url", served.url, "--config-file", str(served.config), "--timezone", ZONE]


def test_the_matrix_has_midnight_events_and_capped_pages(served: Served) -> None:
    """The variants really differ where it matters, or the tests below prove nothing."""
    key = next(k for k, v in VARIANTS.items() if v.midnight_events)
    midnight = local_midnight(served.today)
    assert served.total_before(key, "messages", midnight + 1) > served.total_before(
        key, "messages", midnight
    )
    assert len(VARIANTS) == 4 * 2 * 3 * 3 * 2 * 2


@pytest.mark.slow
def test_the_daemon_is_exact_under_every_variant(served: Served) -> None:
    process = Exporter([*settings(served), "--poll-interval-seconds", "3600"])
    try:
        wait_until(lambda: process.get("/-/ready").status_code == 200, 60, "the first polls")
        samples = parse_metrics(process.get("/metrics").text)
    finally:
        assert process.stop() == 0
    yesterday = served.today - timedelta(days=1)
    wrong = []
    for key in VARIANTS:
        for kind in KINDS:
            if kind == "messages":
                name, labels = "connectycube_messages_sent", {"app": key}
            else:
                name = "connectycube_dialogs_created"
                labels = {"app": key, "dialog_type": TYPES[int(kind)]}
            expected = {
                name: served.total_before(key, kind),
                f"{name}_today": served.day_count(key, kind, served.today),
                f"{name}_yesterday": served.day_count(key, kind, yesterday),
            }
            for series, value in expected.items():
                got = samples.get((series, frozenset(labels.items())))
                if got != value:
                    wrong.append(f"{series}{labels}: {got} != {value}")
        if samples.get(("connectycube_up", frozenset({"app": key}.items()))) != 1:
            wrong.append(f"{key}: not up")
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"


def read_openmetrics(text: str) -> dict[tuple[str, str, str], dict[int, float]]:
    """(metric, app, dialog_type) -> {timestamp: value}."""
    series: dict[tuple[str, str, str], dict[int, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels["app"], sample.labels.get("dialog_type", ""))
            series.setdefault(key, {})[sample.timestamp.sec] = sample.value
    return series


@pytest.mark.slow
def test_backfill_is_exact_under_every_variant(served: Served, tmp_path: Path) -> None:
    since = served.today - timedelta(days=BACKFILL_DAYS)
    output = tmp_path / "backfill.om"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "backfill",
            "--since",
            since.isoformat(),
            "--until",
            (served.today - timedelta(days=1)).isoformat(),
            "--output",
            str(output),
            "--concurrency",
            "32",
            "--strict",
            *settings(served),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    series = read_openmetrics(output.read_text())
    days = [since + timedelta(days=i) for i in range(BACKFILL_DAYS)]
    wrong = []
    for key in VARIANTS:
        for kind in KINDS:
            name = (
                "connectycube_messages_sent"
                if kind == "messages"
                else "connectycube_dialogs_created"
            )
            label = "" if kind == "messages" else TYPES[int(kind)]
            for day in days:
                stamp = local_midnight(day + timedelta(days=1)) - 1
                expected = {
                    name: served.total_before(key, kind, stamp + 1),
                    f"{name}_today": served.day_count(key, kind, day),
                    f"{name}_yesterday": served.day_count(key, kind, day - timedelta(days=1)),
                }
                for metric, value in expected.items():
                    got = series.get((metric, key, label), {}).get(stamp)
                    if got != value:
                        wrong.append(f"{metric}{{{key},{label}}} at {day}: {got} != {value}")
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"


@pytest.mark.slow
def test_check_is_clean_under_every_variant(served: Served) -> None:
    """``check`` raises no false alarm, whatever the reading of the documentation.

    Notes are allowed, where the design needs them: the keys whose server caps a page at
    one day run out of budget (their per-day reads cost up to 15 requests a kind), and see
    the API's midnight only to the hour (an hour holding two dates shows the earlier).
    Any key may get a zone note should its history be too quiet around midnight.
    """
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check", *settings(served)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("FAIL")], result.stdout
    assert result.returncode == 0, result.stderr
    assert lines[-1] == f"check: {len(VARIANTS)} app(s) checked, all consistent"
    capped = {key for key, variant in VARIANTS.items() if variant.page_cap == 1}
    notes = [line.removeprefix("note ").split(": ", 1) for line in lines if line[:4] == "note"]
    assert {key for key, text in notes if "budget" in text} == capped
    unexpected = [(key, text) for key, text in notes if key not in capped]
    assert all("too little activity" in text for _, text in unexpected), unexpected
