"""Every day proven: pages cut by calendar days, quiet days left out, totals that drift.

An API may cap a per-day answer at a few calendar days, leave quiet days out, and count
``offset`` and its bounds in any way the documentation allows. One simulator per zone serves
every combination, one API key each; the real ``backfill``, daemon and ``check`` run as
processes against it over loopback, and every day and total they give must equal the
simulator's truth to the unit. The simulator's clock is frozen, so that every count has one
true value for the whole test.
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
from tests.simulator import RunningServer, Simulator, Variant, start_simulator

KINDS: tuple[str | int, ...] = ("messages", 5)  # busy every day, and quiet on many
TYPE_NAME = "meeting"
DAYS = 45  # more than a 30-day page, so that even that cap cuts the backfill's window
# The zones: daylight saving (the issue's), a half-hour offset, and both, south of the equator.
ZONES = ("America/New_York", "Asia/Kolkata", "Australia/Adelaide")
CAPS = {"1day": {"page_days": 1}, "2days": {"page_days": 2}, "7days": {"page_days": 7}}
CAPS |= {"30days": {"page_days": 30}, "2entries": {"page_cap": 2}}


def matrix(caps: dict[str, dict[str, int]]) -> dict[str, Variant]:
    """A key per bounds, meaning of ``offset`` and cap; every other key has an event at
    each local midnight, where the bounds matter."""
    combinations = itertools.product(("[]", "[)", "()", "(]"), ("days_with_data", "calendar_days"))
    variants = {}
    for (bounds, offset), (cap, options) in itertools.product(combinations, caps.items()):
        midnight = len(variants) % 2 == 1
        variant = Variant.from_bounds(
            bounds, offset_counts=offset, midnight_events=midnight, **options
        )
        variants[f"key{len(variants):02d}-{bounds}-{offset}-{cap}"] = variant
    return variants


VARIANTS = matrix(CAPS)


@dataclass(frozen=True)
class Served:
    sim: Simulator
    url: str
    zone: str
    today: date
    config: Path

    def midnight(self, day: date) -> int:
        return int(datetime.combine(day, datetime.min.time(), ZoneInfo(self.zone)).timestamp())

    def day_count(self, key: str, kind: str | int, day: date) -> int:
        start, end = self.midnight(day), self.midnight(day + timedelta(days=1))
        return self.sim.per_day(key, kind, start, end, timezone=self.zone).get(day.isoformat(), 0)

    def total_before(self, key: str, kind: str | int, moment: float | None = None) -> int:
        """The total endpoint's own figure, deleted events left out."""
        return self.sim.total(key, kind, None, moment)

    def settings(self) -> list[str]:
        return ["--api-url", self.url, "--config-file", str(self.config), "--timezone", self.zone]


def serve(variants: dict[str, Variant], zone: str, folder: Path) -> tuple[Served, RunningServer]:
    frozen = time.time()
    sim = Simulator(
        api_keys=[],
        variants=variants,
        timezone=zone,
        history_days=DAYS + 10,
        seed=17,
        clock=lambda: frozen,
    )
    server = start_simulator(sim)
    config = folder / "apps.yml"
    apps = [{"name": key, "api_key": key, "dialog_types": [5]} for key in variants]
    config.write_text(yaml.safe_dump({"apps": apps}))
    today = datetime.fromtimestamp(frozen, ZoneInfo(zone)).date()
    return Served(sim, server.url, zone, today, config), server


@pytest.fixture(scope="module", params=ZONES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    served, server = serve(VARIANTS, request.param, tmp_path_factory.mktemp("windows"))
    yield served
    server.stop()


def backfill(served: Served, output: Path, *args: str) -> subprocess.CompletedProcess[str]:
    since = served.today - timedelta(days=DAYS)
    command = [sys.executable, "-m", "exporter", "backfill", "--since", since.isoformat()]
    command += ["--output", str(output), "--concurrency", "32", *args, *served.settings()]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def read_openmetrics(text: str) -> dict[tuple[str, str, str], dict[int, float]]:
    """(metric, app, dialog_type) -> {timestamp: value}."""
    series: dict[tuple[str, str, str], dict[int, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels["app"], sample.labels.get("dialog_type", ""))
            series.setdefault(key, {})[sample.timestamp.sec] = sample.value
    return series


def wrong_days(served: Served, text: str, keys: list[str]) -> list[str]:
    """Every written sample that differs from the simulator's truth."""
    series = read_openmetrics(text)
    days = [served.today - timedelta(days=DAYS - i) for i in range(DAYS)]
    wrong = []
    for key, kind in itertools.product(keys, KINDS):
        name = (
            "connectycube_messages_sent" if kind == "messages" else "connectycube_dialogs_created"
        )
        label = "" if kind == "messages" else TYPE_NAME
        for day in days:
            stamp = served.midnight(day + timedelta(days=1)) - 1
            expected = {
                name: served.total_before(key, kind, stamp + 1),
                f"{name}_today": served.day_count(key, kind, day),
                f"{name}_yesterday": served.day_count(key, kind, day - timedelta(days=1)),
            }
            for metric, value in expected.items():
                got = series.get((metric, key, label), {}).get(stamp)
                if got != value:
                    wrong.append(f"{metric}{{{key},{label}}} at {day}: {got} != {value}")
    return wrong


def test_the_matrix_cuts_pages_and_leaves_out_quiet_days(served: Served) -> None:
    """The variants really differ where it matters, or the tests below prove nothing."""
    key = next(key for key, v in VARIANTS.items() if v.page_days == 30)
    since = served.midnight(served.today - timedelta(days=DAYS))
    days = served.sim.per_day(key, 5, since, served.midnight(served.today), served.zone)
    assert 0 < len(days) < DAYS, "the rare kind has quiet days, which the answers leave out"
    assert len(VARIANTS) == 4 * 2 * len(CAPS)


@pytest.mark.slow
def test_backfill_is_exact_whatever_the_pages(served: Served, tmp_path: Path) -> None:
    output = tmp_path / "history.om"
    result = backfill(served, output, "--strict")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, "a consistent API prints no warning"
    wrong = wrong_days(served, output.read_text(), list(VARIANTS))
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"


@pytest.mark.slow
def test_the_daemon_is_exact_with_pages_of_one_day_or_two_entries(served: Served) -> None:
    process = Exporter([*served.settings(), "--poll-interval-seconds", "3600"])
    try:
        wait_until(lambda: process.get("/-/ready").status_code == 200, 120, "the first polls")
        samples = parse_metrics(process.get("/metrics").text)
    finally:
        assert process.stop() == 0
    wrong = []
    for key, kind in itertools.product(VARIANTS, KINDS):
        if kind == "messages":
            name, labels = "connectycube_messages_sent", {"app": key}
        else:
            name, labels = "connectycube_dialogs_created", {"app": key, "dialog_type": TYPE_NAME}
        expected = {
            name: served.total_before(key, kind),
            f"{name}_today": served.day_count(key, kind, served.today),
            f"{name}_yesterday": served.day_count(key, kind, served.today - timedelta(days=1)),
        }
        for series, value in expected.items():
            got = samples.get((series, frozenset(labels.items())))
            if got != value:
                wrong.append(f"{series}{labels}: {got} != {value}")
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"


# --------------------------------------------------------------------------- totals that drift

DRIFT_EVERY = 10  # days


@pytest.fixture(scope="module")
def drifting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two apps whose totals leave out the first hour of every tenth day, one of them with
    answers of 7 calendar days."""
    variants = {
        "drift-whole": Variant(total_drift_every=DRIFT_EVERY),
        "drift-cut": Variant.from_bounds(
            "(]", offset_counts="calendar_days", page_days=7, total_drift_every=DRIFT_EVERY
        ),
    }
    served, server = serve(variants, "America/New_York", tmp_path_factory.mktemp("drift"))
    yield served
    server.stop()


@pytest.mark.slow
def test_days_the_endpoints_disagree_on_are_written_and_reported_once(
    drifting: Served, tmp_path: Path
) -> None:
    output = tmp_path / "history.om"
    result = backfill(drifting, output)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "warning" in line]
    first = drifting.today - timedelta(days=DAYS + 1)  # the day before --since is read too
    drifted = [
        first + timedelta(days=i)
        for i in range(DAYS + 1)
        if (first + timedelta(days=i)).toordinal() % DRIFT_EVERY == 0
    ]
    for key, kind in itertools.product(("drift-whole", "drift-cut"), KINDS):
        what = "messages" if kind == "messages" else f"dialogs {TYPE_NAME}"
        mine = [line for line in lines if f"app {key}: {what}:" in line]
        # The days whose first hour had events: the rare kind's may have none.
        disputed = [day for day in drifted if differs(drifting, key, kind, day)]
        if not disputed:
            assert not mine, mine
            continue
        [line] = mine
        assert f"disagree on {len(disputed)} day(s) even asked alone, first {disputed[0]}" in line
        assert "requests spent" in line
    wrong = wrong_days(drifting, output.read_text(), ["drift-whole", "drift-cut"])
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"

    output.write_text("earlier\n")
    strict = backfill(drifting, output, "--strict")
    assert strict.returncode == 1, strict.stderr
    assert "per-day and total endpoints disagree on" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1, strict.stderr
    assert output.read_text() == "earlier\n", "a failed run leaves the earlier file"


def differs(served: Served, key: str, kind: str | int, day: date) -> bool:
    """Whether the total endpoint counts ``day`` otherwise than the per-day one."""
    start, end = served.midnight(day), served.midnight(day + timedelta(days=1))
    return served.sim.total(key, kind, start, end) != served.sim.count(key, kind, start, end)


# --------------------------------------------------------------------------- check


@pytest.mark.slow
def test_check_says_how_the_api_pages(tmp_path: Path) -> None:
    variants = {"whole": Variant(), "cut": Variant.from_bounds("[]", page_days=30)}
    served, server = serve(variants, "Asia/Kolkata", tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "check", *served.settings()],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    pages = [line for line in result.stdout.splitlines() if "(98 days) answered" in line]
    assert len(pages) == 2, result.stdout
    whole = next(line for line in pages if " whole: " in line)
    cut = next(line for line in pages if " cut: " in line)
    assert whole.startswith("ok ")
    assert "in one page, adding up to its total" in whole
    assert cut.startswith("note ")
    assert "a cap on the page cut it short" in cut
    # The cut answer held about 30 calendar days of the 98 asked: its dates say so.
    held = int(cut.split("answered ")[1].split(" date")[0])
    assert 25 <= held <= 31, cut
