"""The dashboard over backfilled history, and over backfilled history joined by live data.

A simulated app's weeks are backfilled by the real command over HTTP, turned into blocks
by ``promtool`` and served by a real Prometheus; then every per-day and range panel's
query runs as Grafana sends it (a range query with Grafana's step, start and end
aligned to the step in the dashboard's time zone, which the docs tell users to set to
``CONNECTYCUBE_TIMEZONE``), and each day must equal the simulator's own count. Two zones
that are not UTC: one east of it on a half hour, one west of it with a DST change in
the range (its earlier days' bars stand an hour off midnight, as in Grafana).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import require_tool
from tests.processes import Exporter, parse_metrics
from tests.prometheus_server import PrometheusServer
from tests.simulator import Simulator, start_simulator
from tests.test_backfill import DIALOG_TYPES, JOB_LABELS, KEY, midnight, run_backfill
from tests.test_dashboard import panels, substitute

ZONES = ["Asia/Kolkata", "America/New_York"]
DAY = 86400
WEEKS = 6
JOB = {"job": "connectycube", "instance": "exporter:19742"}  # as JOB_LABELS gives them
KINDS = {"messages": "messages", **{name: code for code, name in DIALOG_TYPES.items()}}


# ------------------------------------------------------------------ Grafana's requests


def per_day_targets() -> dict[str, dict[str, Any]]:
    """Title -> target of the panels with a bar per day (range queries, min step 1d)."""
    return {
        panel["title"]: target
        for panel in panels()
        for target in panel.get("targets", [])
        if target.get("range") and target.get("interval") == "1d"
    }


def range_targets() -> dict[str, dict[str, Any]]:
    """Title -> target of the panels that count over the dashboard's time range."""
    return {
        panel["title"]: target
        for panel in panels()
        for target in panel.get("targets", [])
        if "$__range" in target["expr"]
    }


def max_data_points(title: str) -> int:
    (panel,) = [panel for panel in panels() if panel["title"] == title]
    return int(panel.get("maxDataPoints", 1000))  # else about the panel's width in pixels


def grafana_range_query(
    prometheus: PrometheusServer, title: str, start: float, end: float, zone: str
) -> list[dict[str, Any]]:
    """What Grafana's Prometheus data source asks for the panel ``title`` over
    [start, end] with the dashboard in ``zone``: step = max(range / max data points,
    the target's min interval, range / 11000), start and end rounded down to a multiple
    of the step counted from midnight in the zone's UTC offset at ``end``."""
    target = per_day_targets()[title]
    seconds = math.ceil(end) - math.floor(start)
    # Grafana rounds range / max data points to a nice interval; below 42 h that is 1d
    # at most, so the target's 1d is the step.
    assert seconds / max_data_points(title) < 42 * 3600
    step = max(DAY, math.ceil(seconds / 11000))
    offset = utc_offset(end, zone)

    def align(at: float) -> int:
        return (math.floor(at) + offset) // step * step - offset

    promql = substitute(target["expr"], __range=f"{seconds}s")
    data = prometheus.api(
        "query_range", query=promql, start=align(start), end=align(end), step=step
    )
    assert data["resultType"] == "matrix"
    return list(data["result"])


def grafana_instant_query(
    prometheus: PrometheusServer, title: str, start: float, end: float
) -> list[dict[str, Any]]:
    """A stat or bar gauge over [start, end]: an instant query at the end, $__range the
    range in whole seconds."""
    expr = range_targets()[title]["expr"]
    seconds = round(end - start)
    return prometheus.query(substitute(expr, __range=f"{seconds}s"), at=math.ceil(end))


def utc_offset(at: float, zone: str) -> int:
    offset = ZoneInfo(zone).utcoffset(datetime.fromtimestamp(at, ZoneInfo(zone)))
    assert offset is not None
    return int(offset.total_seconds())


def bars(
    result: list[dict[str, Any]], zone: str, end: float, label: str | None = None
) -> dict[Any, int]:
    """(label value, day) -> count of a per-day panel's answer. Each bar must stand at
    the midnight that starts its day, give or take the change of UTC offset between that
    day and ``end`` (Grafana aligns the whole range to the offset at its end)."""
    found: dict[Any, int] = {}
    for series in result:
        key = series["metric"].get(label) if label else None
        for stamp, value in series["values"]:
            day = datetime.fromtimestamp(stamp + 12 * 3600, ZoneInfo(zone)).date()
            start = midnight(day, zone)
            assert stamp - start == utc_offset(start, zone) - utc_offset(end, zone), (stamp, day)
            assert (key, day) not in found
            found[key, day] = int(float(value))
    return found


# ------------------------------------------------------------------ the stack


@dataclass
class Clock:
    """The simulator's clock: real time, or a moment the test moves it to."""

    shift: float = 0.0

    def now(self) -> float:
        return time.time() + self.shift


@dataclass
class Backfilled:
    sim: Simulator
    clock: Clock
    zone: str
    since: date
    until: date
    url: str
    data: Path

    def truth(self, kind: str, first: date, last: date) -> dict[date, int]:
        """The simulator's count of each day from ``first`` to ``last``, quiet days 0."""
        code = KINDS[kind]
        counts = self.sim.per_day(
            KEY,
            code,
            midnight(first, self.zone),
            midnight(last + timedelta(1), self.zone),
            timezone=self.zone,
        )
        days = [first + timedelta(i) for i in range((last - first).days + 1)]
        return {day: counts.get(day.isoformat(), 0) for day in days}


def blocks(openmetrics: Path, data: Path) -> None:
    command = ["tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=744h"]
    result = subprocess.run(
        [require_tool("promtool"), *command, str(openmetrics), str(data)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def serve(work: Path, data: Path) -> PrometheusServer:
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    # The default retention (15 days) would delete the older blocks at start-up.
    return PrometheusServer(config, data, extra_args=["--storage.tsdb.retention.time=10y"])


@pytest.fixture(scope="module", params=ZONES)
def backfilled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backfilled]:
    """Six weeks of a simulated app in the zone, backfilled to yesterday into blocks."""
    require_tool("promtool")
    require_tool("prometheus")
    zone: str = request.param
    work = tmp_path_factory.mktemp("history")
    clock = Clock()
    sim = Simulator(
        api_keys=[KEY], timezone=zone, history_days=WEEKS * 7 + 10, seed=20, clock=clock.now
    )
    server = start_simulator(sim)
    try:
        today = datetime.now(ZoneInfo(zone)).date()
        since, until = today - timedelta(WEEKS * 7 - 2), today - timedelta(1)
        output = work / "history.om"
        result = run_backfill(
            server.url,
            "--since",
            str(since),
            "--until",
            str(until),
            "--output",
            str(output),
            *JOB_LABELS,
            timezone=zone,
        )
        assert result.returncode == 0, result.stderr
        blocks(output, work / "data")
        yield Backfilled(sim, clock, zone, since, until, server.url, work / "data")
    finally:
        server.stop()


def check_per_day_panels(
    prometheus: PrometheusServer,
    history: Backfilled,
    end: float,
    first: date,
    last: date,
    known: dict[date, dict[str, int]] | None = None,
) -> None:
    """Every per-day panel over the six weeks to ``end`` shows exactly the days ``first``
    to ``last``, each with the simulator's count, and the days of ``known`` with the
    counts given there (a count so far); across a DST change, some bars an hour off."""
    zone = history.zone
    start = end - WEEKS * 7 * DAY
    titles = per_day_targets()
    assert set(titles) == {"Messages per day", "Dialogs per day by type"}
    expected = {(None, day): n for day, n in history.truth("messages", first, last).items()}
    expected |= {(None, day): counts["messages"] for day, counts in (known or {}).items()}
    result = grafana_range_query(prometheus, "Messages per day", start, end, zone)
    assert bars(result, zone, end) == expected
    result = grafana_range_query(prometheus, "Dialogs per day by type", start, end, zone)
    expected = {
        (name, day): n
        for name in DIALOG_TYPES.values()
        for day, n in history.truth(name, first, last).items()
    }
    for day, counts in (known or {}).items():
        expected |= {(name, day): counts[name] for name in DIALOG_TYPES.values()}
    assert bars(result, zone, end, "dialog_type") == expected
    assert sum(expected.values()) > 0


# ------------------------------------------------------------------ backfilled only


@pytest.mark.slow
def test_per_day_panels_show_every_backfilled_day(backfilled: Backfilled) -> None:
    """Six weeks as Grafana shows them (now-6w to now): every backfilled day, and the
    day before the first (its count is the first day's _yesterday), each to the unit."""
    with serve(backfilled.data.parent, backfilled.data) as prometheus:
        first = backfilled.since - timedelta(1)
        check_per_day_panels(prometheus, backfilled, time.time(), first, backfilled.until)


@pytest.mark.slow
def test_range_panels_count_whole_backfilled_days(backfilled: Backfilled) -> None:
    """A range from a local midnight to the end of a later day counts exactly its days."""
    zone = backfilled.zone
    titles = range_targets()
    assert set(titles) == {
        "Messages in the selected range",
        "Dialogs in the selected range by type",
    }
    with serve(backfilled.data.parent, backfilled.data) as prometheus:
        for first, last in [
            (backfilled.since + timedelta(3), backfilled.until - timedelta(2)),
            (backfilled.until - timedelta(6), backfilled.until),
            (backfilled.since + timedelta(10), backfilled.since + timedelta(10)),
        ]:
            start = midnight(first, zone)
            end = midnight(last + timedelta(1), zone) - 0.001  # Grafana's end of a day
            [messages] = grafana_instant_query(
                prometheus, "Messages in the selected range", start, end
            )
            truth = backfilled.truth("messages", first, last)
            assert int(float(messages["value"][1])) == sum(truth.values()), (first, last)
            result = grafana_instant_query(
                prometheus, "Dialogs in the selected range by type", start, end
            )
            counted = {s["metric"]["dialog_type"]: int(float(s["value"][1])) for s in result}
            assert counted == {
                name: sum(backfilled.truth(name, first, last).values())
                for name in DIALOG_TYPES.values()
            }


# ------------------------------------------------------------------ live on top


def faketime_library() -> Path:
    """libfaketime, which moves the exporter's clock (Debian's path, as CI installs it)."""
    require_tool("faketime")
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    assert found, "faketime is installed, but not its libfaketime.so.1 under /usr/lib/*/faketime"
    return found[0]


Scrape = tuple[float, dict[tuple[str, frozenset[tuple[str, str]]], float]]


def scrape_live(history: Backfilled, at: float, scrapes: int = 3, until: float = 0) -> list[Scrape]:
    """Start the real exporter with its clock at ``at`` (and the simulator's a second
    ahead, so that the API has every event the exporter's day asks for), and scrape it
    ``scrapes`` times and on until its clock reads ``until``, as Prometheus would:
    stamped with the exporter's own time (its Date header), series with the job and
    instance labels Prometheus attaches."""
    history.clock.shift = at + 1 - time.time()
    stamp = datetime.fromtimestamp(at, ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M:%S")
    env = {
        "CONNECTYCUBE_API_URL": history.url,
        "CONNECTYCUBE_API_KEY": KEY,
        "CONNECTYCUBE_TIMEZONE": history.zone,
        "LD_PRELOAD": str(faketime_library()),
        "FAKETIME": f"@{stamp}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "TZ": "UTC",
    }
    exporter = Exporter(["--poll-interval-seconds", "1"], env=env)
    taken: list[Scrape] = []
    try:
        exporter.wait_for_value("connectycube_up", 1, timeout=30, app="default")
        deadline = time.monotonic() + 120
        while len(taken) < scrapes or taken[-1][0] < until:
            assert time.monotonic() < deadline, f"scrapes: {len(taken)}\n{exporter.logs}"
            try:
                response = exporter.get("/metrics")
            except httpx.TimeoutException:  # a busy machine: a missed scrape, as in Prometheus
                continue
            assert response.status_code == 200
            served = parse_metrics(response.text)
            # Mid-second: the Date header has whole seconds, and a sample exactly on a
            # midnight would belong to both days (range selectors include both ends).
            second = parsedate_to_datetime(response.headers["Date"]).timestamp() + 0.5
            assert abs(second - history.clock.now()) < 60, "the exporter's clock was not moved"
            if not taken or taken[-1][0] < second:  # one scrape a second, as promtool wants
                taken.append((second, served))
            time.sleep(0.3)
    finally:
        exporter.stop()
    return taken


def live_openmetrics(scrapes: list[Scrape], path: Path) -> None:
    """The count samples of ``scrapes`` as Prometheus would store them, for promtool."""
    families: dict[str, dict[frozenset[tuple[str, str]], list[str]]] = {}
    for stamp, served in scrapes:
        for (name, labels), value in served.items():
            if name.startswith(("connectycube_messages_sent", "connectycube_dialogs_created")):
                series = families.setdefault(name, {}).setdefault(labels, [])
                series.append(f"{value:.0f} {stamp}")
    lines = []
    for name, series in families.items():
        lines.append(f"# TYPE {name} gauge")
        for labels, samples in series.items():
            text = ",".join(f'{k}="{v}"' for k, v in sorted({*labels, *JOB.items()}))
            lines += [f"{name}{{{text}}} {sample}" for sample in samples]
    path.write_text("\n".join([*lines, "# EOF\n"]))


def counts_today(scrapes: list[Scrape]) -> dict[str, int]:
    """The ``_today`` counts of the newest of ``scrapes``, by kind."""
    _, newest = scrapes[-1]

    def count(name: str, **labels: str) -> int:
        return int(newest[name, frozenset({"app": "default", **labels}.items())])

    found = {"messages": count("connectycube_messages_sent_today")}
    for name in DIALOG_TYPES.values():
        found[name] = count("connectycube_dialogs_created_today", dialog_type=name)
    return found


@contextmanager
def load(history: Backfilled, scrapes: list[Scrape], work: Path) -> Iterator[PrometheusServer]:
    """A Prometheus with the backfilled blocks and ``scrapes``."""
    work.mkdir()
    shutil.copytree(history.data, work / "data")
    live_openmetrics(scrapes, work / "live.om")
    blocks(work / "live.om", work / "data")
    with serve(work, work / "data") as prometheus:
        yield prometheus


@pytest.mark.slow
def test_live_days_join_the_backfilled_ones(backfilled: Backfilled, tmp_path: Path) -> None:
    """Live scrapes on top of the backfill: the evening of the day after the last
    backfilled one, across midnight, and the small hours of the next. Every day, the
    backfilled ones, the half-live one and the live one, shows its count once, and the
    day in progress its count so far."""
    zone, last = backfilled.zone, backfilled.until
    live_day, today = last + timedelta(1), last + timedelta(2)
    hour = 3600
    scrapes: list[Scrape] = []
    scrapes += scrape_live(backfilled, midnight(live_day, zone) + 20 * hour)
    # The exporter's own midnight passes during this session.
    crossing = scrape_live(backfilled, midnight(today, zone) - 30, until=midnight(today, zone) + 10)
    assert crossing[0][0] < midnight(today, zone) <= crossing[-1][0]
    scrapes += crossing
    for at in [midnight(today, zone) + 1.5 * hour, midnight(today, zone) + 2 * hour]:
        scrapes += scrape_live(backfilled, at)
    days = {datetime.fromtimestamp(stamp, ZoneInfo(zone)).date() for stamp, _ in scrapes}
    assert days == {live_day, today}
    before, after = scrapes[: len(scrapes) - 6], scrapes[-6:]  # the small hours: 2 x 3
    assert before[-1][0] < midnight(today, zone) + hour < after[0][0]

    # Until the small hours: yesterday's bar holds its last live count, today's its first.
    with load(backfilled, before, tmp_path / "early") as prometheus:
        check_per_day_panels(
            prometheus,
            backfilled,
            before[-1][0],
            backfilled.since - timedelta(1),
            last,
            known={
                live_day: counts_today([s for s in before if s[0] < midnight(today, zone)]),
                today: counts_today(before),
            },
        )
    # After them: yesterday's bar has its final count.
    now = backfilled.clock.now()
    so_far = counts_today(scrapes)
    for kind, count in so_far.items():  # the count so far is the API's, and not yet final
        assert count <= sum(backfilled.truth(kind, today, today).values())
    with load(backfilled, scrapes, tmp_path / "late") as prometheus:
        check_per_day_panels(
            prometheus,
            backfilled,
            now,
            backfilled.since - timedelta(1),
            live_day,
            known={today: so_far},
        )
