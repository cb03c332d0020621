"""``connectycube-exporter backfill``: past days into Prometheus, checked end to end.

Expected values come from the simulator's own ground truth (``Simulator.count`` and
``Simulator.per_day``), never from the backfill's code; the slow tests run the real
command, ``promtool`` and a real Prometheus on what they produce.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from pydantic import SecretStr

from exporter import backfill
from exporter.backfill import (
    AppHistory,
    BackfillError,
    Fetcher,
    Output,
    Plan,
    Progress,
    make_plan,
    parse_day,
    parse_label,
    render,
)
from exporter.client import ClientLimits, StatsClient
from exporter.config import AppConfig
from tests.conftest import require_tool, streaming_transport
from tests.processes import parse_metrics, run_exporter_once, start_exporter, wait_until
from tests.prometheus_server import PrometheusServer
from tests.simulator import MESSAGES_PER_DAY_PATH, Simulator, start_simulator

KEY = "backfill-key-0001"
DIALOG_TYPES = {1: "broadcast", 2: "group", 3: "private", 4: "public"}
COUNT_NAMES = (
    "connectycube_messages_sent",
    "connectycube_messages_sent_today",
    "connectycube_messages_sent_yesterday",
    "connectycube_dialogs_created",
    "connectycube_dialogs_created_today",
    "connectycube_dialogs_created_yesterday",
)
JOB_LABELS = ("--label", "job=connectycube", "--label", "instance=exporter:19742")

Series = tuple[str, frozenset[tuple[str, str]]]


# --------------------------------------------------------------------------- helpers


def local_today(zone: str = "UTC") -> date:
    return datetime.now(ZoneInfo(zone)).date()


def midnight(day: date, zone: str = "UTC") -> int:
    """Unix time of the local midnight that starts ``day``, computed here, not by the tool."""
    return int(datetime.combine(day, clock_time(0), tzinfo=ZoneInfo(zone)).timestamp())


def last_second(day: date, zone: str = "UTC") -> int:
    return midnight(day + timedelta(days=1), zone) - 1


def read_openmetrics(path: Path) -> dict[Series, list[tuple[float, float]]]:
    """Samples by series, in file order, as (timestamp, value); parsed by prometheus_client."""
    samples: dict[Series, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            assert sample.timestamp is not None
            series = (sample.name, frozenset(sample.labels.items()))
            stamp = sample.timestamp.sec + sample.timestamp.nsec / 1e9
            samples.setdefault(series, []).append((stamp, sample.value))
    return samples


def by_stamp(
    samples: dict[Series, list[tuple[float, float]]], name: str, **labels: str
) -> dict[int, float]:
    """One series' samples keyed by timestamp, checking that no timestamp repeats."""
    matching = [
        points
        for (series_name, series_labels), points in samples.items()
        if series_name == name and labels.items() <= dict(series_labels).items()
    ]
    assert len(matching) == 1, f"{name}{labels}: {len(matching)} series"
    stamps = [int(stamp) for stamp, _ in matching[0]]
    assert stamps == sorted(stamps), "samples out of time order"
    repeated = [stamp for stamp, n in Counter(stamps).items() if n > 1]
    assert not repeated, f"{name}{labels}: timestamps written twice: {repeated[:3]}"
    return {int(stamp): value for stamp, value in matching[0]}


def command_env(url: str, key: str = KEY, **settings: str) -> dict[str, str]:
    env = {"CONNECTYCUBE_API_URL": url, "CONNECTYCUBE_API_KEY": key}
    env.update({f"CONNECTYCUBE_{name.upper()}": value for name, value in settings.items()})
    return env


def run_backfill(
    url: str, *args: str, key: str = KEY, **settings: str
) -> subprocess.CompletedProcess[str]:
    """The real command, ``python -m exporter backfill ...``, to completion."""
    return run_exporter_once(["backfill", *args], env=command_env(url, key, **settings))


# --------------------------------------------------------------------------- input


@pytest.mark.parametrize("text", ["2024-1-1", "20240101", "2024-W01-1", "yesterday", ""])
def test_day_must_be_yyyy_mm_dd(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a YYYY-MM-DD date"):
        parse_day(text)


def test_day_must_exist() -> None:
    assert parse_day("2024-02-29") == date(2024, 2, 29)
    with pytest.raises(argparse.ArgumentTypeError, match="not a valid date"):
        parse_day("2023-02-29")


def test_labels() -> None:
    assert parse_label("instance=exporter:19742") == ("instance", "exporter:19742")
    assert parse_label('job=a=b "c"') == ("job", 'a=b "c"')
    for text, problem in [
        ("job", "not NAME=VALUE"),
        ("1job=x", "not a valid Prometheus label name"),
        ("job-name=x", "not a valid Prometheus label name"),
        ("__name__=x", "reserved"),
        ("app=x", "set by the exporter"),
        ("dialog_type=x", "set by the exporter"),
        ("job=", "empty value"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=problem):
            parse_label(text)


def _plan(since: str, until: str | None = None, labels: tuple[str, ...] = ()) -> Plan:
    argv = ["--since", since, "--output", "-", *(["--until", until] if until else [])]
    argv += [word for label in labels for word in ("--label", label)]
    return make_plan(backfill.build_parser().parse_args(argv), date(2024, 6, 15))


def test_plan_defaults_to_yesterday_and_checks_the_range() -> None:
    plan = _plan("2024-06-01")
    assert (plan.first, plan.last, len(plan.days)) == (date(2024, 6, 1), date(2024, 6, 14), 14)
    assert _plan("2024-06-14", "2024-06-14").days == [date(2024, 6, 14)]
    for since, until, problem in [
        ("2024-06-10", "2024-06-09", "--since: 2024-06-10 is after --until 2024-06-09"),
        ("2024-06-20", None, "--since: 2024-06-20 is in the future"),
        ("2024-06-01", "2024-06-16", "--until: 2024-06-16 is in the future"),
        ("2024-06-01", "2024-06-15", "not over yet"),
        ("2024-06-15", None, "not over yet"),
        ("1970-01-01", "1970-01-31", "too early"),
    ]:
        with pytest.raises(ValueError, match=problem):
            _plan(since, until)
    with pytest.raises(ValueError, match="repeated label job"):
        _plan("2024-06-01", labels=("job=a", "job=b"))


# --------------------------------------------------------------------------- rendering


def _app(name: str = "prod", dialog_types: tuple[int, ...] = (2,)) -> AppConfig:
    return AppConfig(name, SecretStr(KEY), "http://api.invalid", dialog_types)


def test_render_writes_every_day_of_every_series_in_order(tmp_path: Path) -> None:
    zone = "Europe/Berlin"
    days = [date(2024, 3, 30), date(2024, 3, 31), date(2024, 4, 1)]  # DST starts on the 31st
    history = AppHistory(
        _app('a"b\\c'),
        counts={"messages": {date(2024, 3, 29): 4, date(2024, 3, 31): 7}, 2: {}},
        totals={"messages": dict(zip(days, [10, 17, 17], strict=True)), 2: dict.fromkeys(days, 3)},
    )
    text, samples = render([history], days, ZoneInfo(zone), [("job", 'x"\ny\\')])
    assert samples == 6 * 3
    assert text.endswith("# EOF\n")
    path = tmp_path / "out.om"
    path.write_text(text)
    parsed = read_openmetrics(path)
    labels = {"app": 'a"b\\c', "job": 'x"\ny\\'}
    stamps = [last_second(day, zone) for day in days]
    assert stamps[1] - stamps[0] == 23 * 3600  # the short day is really short
    assert by_stamp(parsed, "connectycube_messages_sent_today", **labels) == dict(
        zip(stamps, [0, 7, 0], strict=True)
    )
    assert by_stamp(parsed, "connectycube_messages_sent_yesterday", **labels) == dict(
        zip(stamps, [4, 0, 7], strict=True)
    )
    assert by_stamp(parsed, "connectycube_messages_sent", **labels) == dict(
        zip(stamps, [10, 17, 17], strict=True)
    )
    assert by_stamp(
        parsed, "connectycube_dialogs_created_today", dialog_type="group", **labels
    ) == dict.fromkeys(stamps, 0)
    assert {name for name, _ in parsed} == set(COUNT_NAMES)


# --------------------------------------------------------------------------- paging


def _fetch(app: AppConfig, plan: Plan, zone: str = "UTC") -> list[AppHistory]:
    async def run() -> list[AppHistory]:
        async with httpx.AsyncClient() as http:
            client = StatsClient(http, ClientLimits(max_retries=0, request_timeout=5))
            progress = Progress(
                {app.name: 1 + len(app.dialog_types)}, len(plan.days), io.StringIO()
            )
            fetcher = Fetcher(client, ZoneInfo(zone), plan, progress)
            return await asyncio.wait_for(fetcher.fetch_all([app]), 30)

    return asyncio.run(run())


def _days_plan(first: date, last: date) -> Plan:
    return Plan(first, last, "-", (), concurrency=3)


def test_small_pages_yield_every_day_once(served: Callable[[Simulator], str]) -> None:
    """A server capping limit at 3 answers short pages that are not the end."""
    sim = Simulator(api_keys=[KEY], history_days=260, seed=3, max_limit=3, shuffle_keys=True)
    app = AppConfig("prod", SecretStr(KEY), served(sim), (2, 5))
    today = local_today()
    plan = _days_plan(today - timedelta(days=250), today - timedelta(days=1))
    [history] = _fetch(app, plan)
    start, end = midnight(plan.first - timedelta(days=1)), midnight(today)
    for kind in ("messages", 2, 5):
        expected = {date.fromisoformat(k): v for k, v in sim.per_day(KEY, kind, start, end).items()}
        assert history.counts[kind] == expected
        for day in (plan.first, plan.days[137], plan.last):
            assert history.totals[kind][day] == sim.count(KEY, kind, None, midnight(day) + 86400)
    queries = [request["query"] for request in sim.stats()["recent"]]
    assert all("limit=100" in query for query in queries if "offset" in query)


def _fake_api(
    per_day: Callable[[dict[str, str]], dict[str, int]], total: Callable[[dict[str, str]], int]
) -> Any:
    """A one-app API that answers ``per_day(query)`` and ``{"total": total(query)}``."""

    def handler(request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        if request.url.path.endswith("-per-day"):
            return httpx.Response(200, json=per_day(query))
        return httpx.Response(200, json={"total": total(query)})

    return handler


def _fetch_fake(handler: Any, plan: Plan) -> Fetcher:
    app = _app(dialog_types=(1,))

    async def run() -> Fetcher:
        transport = streaming_transport(handler)
        async with httpx.AsyncClient(transport=transport) as http:
            client = StatsClient(http, ClientLimits(max_retries=0))
            progress = Progress({app.name: 2}, len(plan.days), io.StringIO())
            fetcher = Fetcher(client, ZoneInfo("UTC"), plan, progress)
            await asyncio.wait_for(fetcher.fetch_all([app]), 10)
            return fetcher

    return asyncio.run(run())


def _utc_day(timestamp: str) -> str:
    return datetime.fromtimestamp(int(timestamp), UTC).date().isoformat()


def _calendar_api(days: dict[str, int], cap: int, queries: list[dict[str, str]]) -> Any:
    """The issue's API: exclusive bounds, answers of at most ``cap`` calendar days from the
    start's day (``offset`` counting calendar days), quiet days left out, and totals that
    agree with the days. Every day's events sit at its noon."""

    def inside(query: dict[str, str]) -> list[tuple[str, int]]:
        start, end = int(query["start_date"]), int(query["end_date"])
        return [(day, n) for day, n in days.items() if start < _noon(day) < end]

    def handler(request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        queries.append(query)
        if not request.url.path.endswith("-per-day"):
            return httpx.Response(200, json={"total": sum(n for _, n in inside(query))})
        first = date.fromisoformat(_utc_day(query["start_date"])) + timedelta(
            days=int(query.get("offset", 0))
        )
        last = first + timedelta(days=cap - 1)
        page = [(d, n) for d, n in inside(query) if first <= date.fromisoformat(d) <= last]
        return httpx.Response(200, json=dict(page))

    return handler


def _noon(day: str) -> int:
    return midnight(date.fromisoformat(day)) + 43200


def test_a_window_is_taken_only_when_it_adds_up_to_its_total() -> None:
    """The issue's case: 150 days, 30 calendar days an answer, quiet days left out; every
    day exact, no warning, and at most the documented 6 requests per day and kind."""
    plan = _days_plan(date(2024, 1, 1), date(2024, 5, 29))
    every = [date(2023, 12, 31) + timedelta(days=i) for i in range(151)]
    days = {day.isoformat(): i % 5 for i, day in enumerate(every) if i % 5}  # a fifth quiet
    for cap in (1, 2, 7, 30):
        queries: list[dict[str, str]] = []
        fetcher = _fetch_fake(_calendar_api(days, cap, queries), plan)
        [history] = fetcher.histories
        assert history.counts["messages"] == {date.fromisoformat(d): n for d, n in days.items()}
        assert not fetcher.warnings
        assert len(queries) <= 6 * 151 * 2 + 2 * 3 * 3, (cap, len(queries))


def test_a_day_next_to_the_window_is_dropped_a_day_far_outside_is_an_error() -> None:
    plan = _days_plan(date(2024, 1, 1), date(2024, 1, 31))

    def near(query: dict[str, str]) -> dict[str, int]:
        """Events in the window's extra second before, and at its closing midnight."""
        before, after = _utc_day(query["start_date"]), _utc_day(query["end_date"])
        return {before: 4, **({"2024-01-10": 1} if before < "2024-01-10" < after else {}), after: 9}

    def total(query: dict[str, str]) -> int:
        return sum(near(query).values())

    [history] = _fetch_fake(_fake_api(near, total), plan).histories
    assert history.counts["messages"] == {date(2024, 1, 10): 1}
    handler = _fake_api(lambda _: {"2023-06-01": 1}, lambda _: 1)
    with pytest.raises(BackfillError, match=r"asked for .* the answer holds 2023-06-01"):
        _fetch_fake(handler, plan)


def test_days_the_endpoints_disagree_on_are_one_warning_or_with_strict_an_error() -> None:
    plan = _days_plan(date(2024, 1, 1), date(2024, 1, 31))
    # Every day has 1 in the per-day answers, but the total of any window is 100.
    days = {(date(2023, 12, 31) + timedelta(days=i)).isoformat(): 1 for i in range(32)}

    def per_day(query: dict[str, str]) -> dict[str, int]:
        first, last = _utc_day(query["start_date"]), _utc_day(query["end_date"])
        return {day: n for day, n in days.items() if first < day < last}

    fetcher = _fetch_fake(_fake_api(per_day, lambda _: 100), plan)
    disputes = [warning for warning in fetcher.warnings if "even asked alone" in warning]
    assert [warning.split(":")[1] for warning in disputes] == [" messages", " dialogs broadcast"]
    summary = "disagree on 32 day(s) even asked alone, first 2023-12-31, by up to +99"
    assert all(summary in warning for warning in disputes)
    zone = [warning for warning in fetcher.warnings if warning not in disputes]
    assert zone, "the totals at the days' ends cannot add up either"
    assert all("CONNECTYCUBE_TIMEZONE" in warning for warning in zone)
    [history] = fetcher.histories
    assert history.counts["messages"] == {date.fromisoformat(d): 1 for d in days}
    with pytest.raises(BackfillError, match="per-day and total endpoints disagree on 32 day"):
        _fetch_fake(_fake_api(per_day, lambda _: 100), replace(plan, strict=True))


# --------------------------------------------------------------------------- progress, output


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress({"prod": 2, "staging": 1}, 10, stream)
        progress.draw()
        progress.advance("prod", 10)
        progress.draw()
        assert "prod [########........] 5/10 days" in progress.line()
        assert "staging [................] 0/10 days" in progress.line()
        progress.clear()
    assert pipe.getvalue() == ""
    assert terminal.getvalue().startswith("\rbackfill: prod [")
    assert terminal.getvalue().endswith("\r")


def test_output_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out.om"
    target.write_text("old\n")
    output = Output(str(target))
    assert sorted(os.listdir(tmp_path)) == ["out.om"]  # the check left nothing behind
    output.discard()
    assert target.read_text() == "old\n"
    output.commit("new\n")
    assert target.read_text() == "new\n"
    assert sorted(os.listdir(tmp_path)) == ["out.om"]
    with pytest.raises(OSError, match="is a directory"):
        Output(str(tmp_path))
    with pytest.raises(OSError, match="cannot write: No such file or directory"):
        Output(str(tmp_path / "missing" / "out.om"))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2024-13-01"], "argument --since: '2024-13-01' is not a valid date"),
        (["--since", "2024-1-1"], "argument --since: '2024-1-1' is not a YYYY-MM-DD date"),
        (["--since", "{yesterday}", "--until", "{week_ago}"], "is after --until"),
        (["--since", "{tomorrow}"], "is in the future"),
        (["--since", "{week_ago}", "--until", "{tomorrow}"], "is in the future"),
        (["--since", "{week_ago}", "--until", "{today}"], "is not over yet"),
        (["--label", "job"], "argument --label: 'job' is not NAME=VALUE"),
        (["--label", "app=x"], "set by the exporter"),
        (["--label", "job=a", "--label", "job=b"], "repeated label job"),
        (["--output", "{tmp}/missing/out.om"], "cannot write: No such file or directory"),
        (["--output", "{tmp}"], "is a directory"),
        (["--only-app", "nope"], "configuration error: --only-app: unknown app 'nope'"),
        (["--concurrency", "0"], "argument --concurrency: must be between 1 and 64"),
        (["--timezone", "Mars/Olympus"], "configuration error: CONNECTYCUBE_TIMEZONE"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    clean_env: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    today = local_today()
    values = {
        "tmp": str(clean_env),
        "today": today.isoformat(),
        "yesterday": (today - timedelta(days=1)).isoformat(),
        "tomorrow": (today + timedelta(days=1)).isoformat(),
        "week_ago": (today - timedelta(days=7)).isoformat(),
    }
    defaults = {"--since": "{week_ago}", "--output": "{tmp}/out.om"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [*args, flag, value]
    argv = [arg.format(**values) for arg in [*args, "--api-key", KEY]]
    try:
        code = backfill.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("connectycube-exporter backfill: "), err
    assert message in err
    assert sorted(os.listdir(clean_env)) == []


def test_missing_key_is_a_configuration_error(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backfill.main(["--since", "2024-01-01", "--output", "-"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "configuration error: CONNECTYCUBE_API_KEY or CONNECTYCUBE_API_KEY_FILE" in err


def test_every_app_of_the_config_file_or_only_some(
    clean_env: Path, served: Callable[[Simulator], str], capsys: pytest.CaptureFixture[str]
) -> None:
    sim = Simulator(api_keys=[KEY, "other-key"], history_days=40, seed=2)
    sim.set_faults(latency=0.01)  # requests overlap, so the cap on them is visible
    url = served(sim)
    config = clean_env / "apps.yml"
    config.write_text(
        f"apps:\n  - {{name: prod, api_key: {KEY}}}\n"
        "  - {name: staging, api_key: other-key, dialog_types: [5]}\n"
    )
    since = str(local_today() - timedelta(days=30))
    common = ["--since", since, "--config-file", str(config), "--api-url", url]
    output = clean_env / "all.om"
    assert backfill.main([*common, "--output", str(output), "--concurrency", "2"]) == 0
    assert "30 days" in capsys.readouterr().err
    series = read_openmetrics(output)
    assert {dict(labels)["app"] for _, labels in series} == {"prod", "staging"}
    assert len(series) == 15 + 6  # staging breaks down one dialog type only
    assert sim.stats()["peak_in_flight"] == 2
    yesterday = local_today() - timedelta(days=1)
    assert by_stamp(series, "connectycube_messages_sent", app="staging")[
        last_second(yesterday)
    ] == sim.count("other-key", "messages", None, midnight(local_today()))

    only = clean_env / "staging.om"
    assert backfill.main([*common, "--output", str(only), "--only-app", "staging"]) == 0
    assert {dict(labels)["app"] for _, labels in read_openmetrics(only)} == {"staging"}


# --------------------------------------------------------------------------- the real command


@pytest.fixture(scope="module")
def long_history() -> Iterator[tuple[Simulator, str]]:
    """Over a year of seeded random history, served over HTTP."""
    sim = Simulator(api_keys=[KEY], history_days=420, seed=11)
    server = start_simulator(sim)
    yield sim, server.url
    server.stop()


@pytest.mark.slow
def test_prometheus_serves_the_backfilled_days(
    long_history: tuple[Simulator, str], tmp_path: Path
) -> None:
    sim, url = long_history
    promtool = require_tool("promtool")
    require_tool("prometheus")
    today = local_today()
    since, until = today - timedelta(days=400), today - timedelta(days=2)
    output = tmp_path / "history.om"
    result = run_backfill(
        url, "--since", str(since), "--until", str(until), "--output", str(output), *JOB_LABELS
    )
    assert result.returncode == 0, result.stderr
    summary = result.stderr.strip().splitlines()
    assert len(summary) == 1, result.stderr
    assert f"399 days ({since} to {until}, UTC), {399 * 15} samples, 1 app(s)" in summary[0]

    data = tmp_path / "data"
    command = ["tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=744h"]
    blocks = subprocess.run(
        [promtool, *command, str(output), str(data)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert blocks.returncode == 0, blocks.stdout + blocks.stderr
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")

    # The default retention (15 days) would delete blocks from a year ago at start-up.
    with PrometheusServer(
        config, data, extra_args=["--storage.tsdb.retention.time=10y"]
    ) as prometheus:

        def value(expr: str, day: date) -> int:
            [result] = prometheus.query(expr, at=last_second(day))
            assert result["metric"].get("job") == "connectycube", result
            assert result["metric"].get("instance") == "exporter:19742", result
            return int(result["value"][1])

        def count(kind: str | int, start: float | None, end: float) -> int:
            return sim.count(KEY, kind, start, end)

        for day in (since, since + timedelta(days=150), until):
            start, end = midnight(day), midnight(day + timedelta(days=1))
            assert value('connectycube_messages_sent_today{app="default"}', day) == count(
                "messages", start, end
            )
            assert value('connectycube_messages_sent_yesterday{app="default"}', day) == count(
                "messages", start - 86400, start
            )
            for code, name in DIALOG_TYPES.items():
                assert value(
                    f'connectycube_dialogs_created_today{{dialog_type="{name}"}}', day
                ) == count(code, start, end)
                assert value(f'connectycube_dialogs_created{{dialog_type="{name}"}}', day) == count(
                    code, None, end
                )
        assert count("messages", midnight(since), midnight(since) + 86400) > 0

        # The all-time total between two days moves by exactly the days in between.
        first, second = since + timedelta(days=37), since + timedelta(days=333)
        before = value("connectycube_messages_sent", first)
        after = value("connectycube_messages_sent", second)
        days_between = sim.per_day(
            KEY,
            "messages",
            midnight(first + timedelta(days=1)),
            midnight(second + timedelta(days=1)),
        )
        assert len(days_between) > 250
        assert after - before == sum(days_between.values())
        assert before == count("messages", None, midnight(first + timedelta(days=1)))

        # Fifteen series, one sample a day: nothing at noon, all of them at the day's end.
        noon = midnight(second) + 12 * 3600
        assert prometheus.query('count({__name__=~"connectycube_.+"})', at=noon) == []
        [series] = prometheus.query('count({__name__=~"connectycube_.+"})', at=last_second(second))
        assert series["value"][1] == "15"


@pytest.mark.slow
def test_backfilled_series_are_the_ones_the_daemon_serves(
    long_history: tuple[Simulator, str], tmp_path: Path
) -> None:
    """Same names, same labels: live and backfilled data join on one graph."""
    _, url = long_history
    output = tmp_path / "history.om"
    result = run_backfill(url, "--since", str(local_today() - timedelta(days=3)), "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert "note: no --label job=... or instance=..." in result.stderr
    backfilled = {(name, frozenset(labels)) for name, labels in read_openmetrics(output)}
    exporter = start_exporter(url, key=KEY)
    try:
        wait_until(
            lambda: (
                exporter.value(
                    "connectycube_dialogs_created_yesterday", app="default", dialog_type="public"
                )
                is not None
            ),
            20,
            "the exporter's first poll",
        )
        live = {
            (name, labels)
            for name, labels in parse_metrics(exporter.get("/metrics").text)
            if name in COUNT_NAMES
        }
    finally:
        exporter.stop()
    assert backfilled == live
    assert len(live) == 15


@pytest.mark.slow
def test_capped_pages_yield_every_day_once(
    served: Callable[[Simulator], str], tmp_path: Path
) -> None:
    """The API caps limit at 7: every page is short, and still every day comes once."""
    sim = Simulator(api_keys=[KEY], history_days=330, seed=5, max_limit=7, shuffle_keys=True)
    url = served(sim)
    since = local_today() - timedelta(days=320)
    yesterdays = {local_today() - timedelta(days=1)}
    output = tmp_path / "out.om"
    result = run_backfill(url, "--since", str(since), "--output", str(output), *JOB_LABELS)
    yesterdays.add(local_today() - timedelta(days=1))  # should the test cross midnight
    assert result.returncode == 0, result.stderr
    samples = read_openmetrics(output)
    until = max(
        day
        for day in yesterdays
        if last_second(day) in by_stamp(samples, "connectycube_messages_sent_today")
    )
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    assert len(days) >= 320
    truth = sim.per_day(KEY, "messages", midnight(since), midnight(until + timedelta(days=1)))
    expected = {last_second(day): truth.get(day.isoformat(), 0) for day in days}
    assert by_stamp(samples, "connectycube_messages_sent_today") == expected
    quiet = 0
    for code, name in DIALOG_TYPES.items():
        truth = sim.per_day(KEY, code, midnight(since), midnight(until + timedelta(days=1)))
        assert by_stamp(samples, "connectycube_dialogs_created_today", dialog_type=name) == {
            last_second(day): truth.get(day.isoformat(), 0) for day in days
        }
        quiet += sum(1 for day in days if day.isoformat() not in truth)
    assert 0 < quiet < len(days) * len(DIALOG_TYPES)  # quiet days are explicit 0s
    # One page per 7 days with activity, not one per 100 days: the pages really were capped.
    active = sum(1 for n in expected.values() if n > 0)
    assert sim.stats()["by_path"][MESSAGES_PER_DAY_PATH] >= math.ceil(active / 7)


@pytest.mark.slow
@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kathmandu"])
def test_samples_sit_at_the_end_of_the_local_day(
    served: Callable[[Simulator], str], tmp_path: Path, zone: str
) -> None:
    """Events a minute either side of local midnight land on the right local day."""
    sim = Simulator(api_keys=[KEY], timezone=zone, random_history=False)
    url = served(sim)
    today = local_today(zone)
    since = today - timedelta(days=300)
    days = [since + timedelta(days=i) for i in range(299)]
    # Every day around a DST change, and a few ordinary ones.
    offset = ZoneInfo(zone).utcoffset
    changes = [
        day
        for day in days
        if offset(datetime.combine(day, clock_time(0)))
        != offset(datetime.combine(day + timedelta(days=1), clock_time(0)))
    ]
    picked = sorted({*changes, *(day + timedelta(days=1) for day in changes), *days[::37]})
    for n, day in enumerate(picked, start=1):
        end = midnight(day + timedelta(days=1), zone)
        sim.add_events(KEY, "messages", [end - 60] * n + [end + 60] * 100)
    sim.add_events(KEY, 3, [midnight(days[100], zone)] * 2)
    output = tmp_path / "out.om"
    result = run_backfill(
        url,
        "--since",
        str(since),
        "--until",
        str(days[-1]),
        "--output",
        str(output),
        timezone=zone,
    )
    assert result.returncode == 0, result.stderr
    samples = read_openmetrics(output)
    today_counts = by_stamp(samples, "connectycube_messages_sent_today")
    totals = by_stamp(samples, "connectycube_messages_sent")
    assert len(today_counts) == len(days)
    for day in days:
        start, end = midnight(day, zone), midnight(day + timedelta(days=1), zone)
        assert today_counts[end - 1] == sim.count(KEY, "messages", start, end), day
        assert totals[end - 1] == sim.count(KEY, "messages", None, end), day
    assert len(changes) == (0 if zone == "Asia/Kathmandu" else 2)
    for day in changes:  # 23 and 25 hour days end where the local clock says
        assert datetime.fromtimestamp(last_second(day, zone), ZoneInfo(zone)).time() == (
            clock_time(23, 59, 59)
        )
    private = by_stamp(samples, "connectycube_dialogs_created_today", dialog_type="private")
    assert private[last_second(days[100], zone)] == 2
    assert sum(private.values()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_run_leaves_no_file(
    served: Callable[[Simulator], str], tmp_path: Path, stop: signal.Signals
) -> None:
    sim = Simulator(api_keys=[KEY], history_days=400, max_limit=1)
    sim.set_faults(latency=0.05)  # a slow API: the run takes a minute
    url = served(sim)
    folder = tmp_path / "out"
    folder.mkdir()
    output = folder / "history.om"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTYCUBE_")}
    since = str(local_today() - timedelta(days=300))
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "backfill", "--since", since, "--output", str(output)],
        env={**clean, **command_env(url)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: sim.stats()["requests"] >= 40, 20, "the backfill to be paging")
        started = time.monotonic()
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert time.monotonic() - started < 5
    assert not output.exists()
    if stop == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        # Killed while paging: the temporary file is only made at the very end.
        assert sorted(os.listdir(folder)) == []
        return
    assert process.returncode == 128 + stop
    assert stderr == f"connectycube-exporter backfill: stopped by {stop.name}; nothing written\n"
    assert stdout == ""
    assert sorted(os.listdir(folder)) == []


@pytest.mark.slow
def test_failure_keeps_the_previous_file(
    served: Callable[[Simulator], str], tmp_path: Path
) -> None:
    sim = Simulator(api_keys=[KEY], history_days=30)
    url = served(sim)
    output = tmp_path / "history.om"
    output.write_text("the previous backfill\n")
    since = str(local_today() - timedelta(days=20))
    result = run_backfill(url, "--since", since, "--output", str(output), key="wrong-key")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    # Every endpoint refuses the key: whichever answered first is named.
    assert "failed, nothing written: app default: " in result.stderr
    assert "HTTP 401: Required session does not exist" in result.stderr
    assert "wrong-key" not in result.stderr
    assert output.read_text() == "the previous backfill\n"
    assert sorted(os.listdir(tmp_path)) == ["history.om"]

    # Retried like the daemon: two 503s are survived with the default two retries.
    sim.set_faults(status=503, count=2)
    result = run_backfill(url, "--since", since, "--output", "-")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# HELP connectycube_messages_sent ")
    assert result.stdout.endswith("# EOF\n")
    assert "wrote stdout: 20 days" in result.stderr


@pytest.mark.slow
def test_bad_input_from_the_real_command(tmp_path: Path) -> None:
    result = run_exporter_once(
        ["backfill", "--since", "2024-02-30", "--output", str(tmp_path / "x.om")],
        env={"CONNECTYCUBE_API_KEY": KEY},
    )
    assert result.returncode == 2
    assert result.stderr == (
        "connectycube-exporter backfill: error: argument --since: '2024-02-30' is not a "
        "valid date (see --help)\n"
    )
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_help_lists_the_subcommand_and_the_settings() -> None:
    daemon = run_exporter_once(["--help"])
    assert daemon.returncode == 0
    assert "connectycube-exporter backfill --help" in daemon.stdout
    sub = run_exporter_once(["backfill", "--help"])
    assert sub.returncode == 0
    for flag in ("--since", "--until", "--output", "--label", "--api-key-file", "--timezone"):
        assert flag in sub.stdout
