"""``connectycube-exporter check``: the real command against the simulator over HTTP.

Expected counts come from the simulator's own ground truth (``Simulator.count`` and
``Simulator.per_day``) over windows computed here, never from the check's code. The
simulator's clock is frozen at the start of each test, so that its answers do not move
while the check runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.check import Flip, Report, Window, best_flip, summary, zone_finding
from exporter.config import AppConfig
from tests.processes import run_exporter_once, wait_until
from tests.simulator import (
    DIALOGS_TOTAL_PATH,
    PLAN_FORBIDDEN_MESSAGE,
    Simulator,
    Variant,
)

KEY = "sk-check-Hq8Vn3Zr5Tw1"
OTHER_KEY = "sk-check-other-Lm4Ks9"
TYPES = {1: "broadcast", 2: "group", 3: "private", 4: "public"}
LINE = re.compile(r"(ok  |FAIL|note) ([^:]+): (.*)")
MAX_REQUESTS = 100

Finding = tuple[str, str, str]  # level, app, text


# --------------------------------------------------------------------------- helpers


def midnight(day: date, zone: str) -> int:
    return int(datetime.combine(day, clock_time(0), tzinfo=ZoneInfo(zone)).timestamp())


def offset_text(zone: str, moment: float) -> str:
    offset = ZoneInfo(zone).utcoffset(datetime.fromtimestamp(moment, UTC))
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def busy_simulator(now: float, keys: list[str], **options: Any) -> Simulator:
    """Random history, plus a message every four minutes over the last three days.

    The steady messages make every hour busy, as for a real app in use, so that the zone
    is always found whatever quiet day the random history draws.
    """
    sim = Simulator(api_keys=keys, history_days=60, seed=7, clock=lambda: now, **options)
    steady = [now - 240 * i for i in range(1, 3 * 24 * 15)]
    for key in [*keys, *options.get("variants", {})]:
        sim.add_events(key, "messages", steady)
    return sim


def run_check(url: str, *args: str, key: str | None = KEY, **settings: str) -> Run:
    env = {"CONNECTYCUBE_API_URL": url}
    if key is not None:
        env["CONNECTYCUBE_API_KEY"] = key
    env.update({f"CONNECTYCUBE_{name.upper()}": value for name, value in settings.items()})
    started = time.monotonic()
    result = run_exporter_once(["check", *args], env=env)
    return Run(result, time.monotonic() - started)


class Run:
    """A finished ``check``: its findings, summary line and exit code."""

    def __init__(self, result: subprocess.CompletedProcess[str], seconds: float) -> None:
        self.result = result
        self.seconds = seconds
        self.code = result.returncode
        lines = result.stdout.splitlines()
        self.summary = lines[-1] if lines else ""
        self.findings: list[Finding] = []
        for line in lines[:-1]:
            match = LINE.fullmatch(line)
            assert match, f"not a finding: {line!r}\n{result.stdout}"
            level, app, text = match.groups()
            self.findings.append((level.strip(), app, text))

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"exit {self.code}\n{self.result.stdout}{self.result.stderr}"

    def levels(self, app: str = "default") -> list[str]:
        return [level for level, name, _ in self.findings if name == app]

    def text(self, start: str, app: str = "default") -> str:
        found = [text for _, name, text in self.findings if name == app and text.startswith(start)]
        assert len(found) == 1, f"{start!r}: {found}\n{self!r}"
        return found[0]

    def failures(self, app: str = "default") -> list[str]:
        return [text for level, name, text in self.findings if name == app and level == "FAIL"]


def _ints(pattern: str, text: str) -> dict[str, tuple[int, ...]]:
    return {name: tuple(int(n) for n in numbers) for name, *numbers in re.findall(pattern, text)}


# --------------------------------------------------------------------------- healthy


@pytest.mark.slow
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu"])
def test_a_healthy_api_is_consistent_and_the_counts_are_the_apis(
    served: Callable[[Simulator], str], zone: str
) -> None:
    now = time.time()
    sim = busy_simulator(now, [KEY], timezone=zone)
    run = run_check(served(sim), timezone=zone)

    assert run.code == 0, run
    assert run.result.stderr == ""
    assert set(run.levels()) == {"ok"}, run
    assert len(run.findings) == 9, run
    assert run.summary == "check: 1 app(s) checked, all consistent"
    assert run.text("key accepted")
    assert run.text("Admin API allowed for the plan")
    assert sim.stats()["requests"] <= MAX_REQUESTS
    assert run.seconds < 20

    today = datetime.fromtimestamp(now, ZoneInfo(zone)).date()
    yesterday = today - timedelta(days=1)

    def recent(kind: str | int) -> tuple[int, int]:
        days = sim.per_day(KEY, kind, midnight(yesterday, zone))
        return days.get(str(yesterday), 0), days.get(str(today), 0)

    messages = run.text("messages/sent-total answered: ")
    assert messages == f"messages/sent-total answered: {sim.count(KEY, 'messages')} all time"
    assert run.text("messages/sent-per-day answered: ") == (
        "messages/sent-per-day answered: {} yesterday, {} today".format(*recent("messages"))
    )
    totals = _ints(r"(\w+) (\d+)", run.text("dialogs/created-total answered: ").split(": ")[1])
    assert totals == {name: (sim.count(KEY, code),) for code, name in TYPES.items()}
    per_day = _ints(r"(\w+) (\d+) yesterday, (\d+) today", run.text("dialogs/created-per-day"))
    assert per_day == {name: recent(code) for code, name in TYPES.items()}

    # Seven whole past days: the growth of each total from the end of the day before them
    # to the end of yesterday.
    start, end = midnight(today - timedelta(days=7), zone), midnight(today, zone)
    agree = run.text("totals agree with per-day sums over the last 7 days")
    assert f"{today - timedelta(days=7)} to {yesterday} in {zone}" in agree
    sums = _ints(r"(\w+) (\d+)", agree.partition(f"in {zone}: ")[2])
    kinds: dict[str, str | int] = {"messages": "messages", **{v: k for k, v in TYPES.items()}}
    assert sums == {name: (sim.count(KEY, kind, start, end),) for name, kind in kinds.items()}
    assert sums["messages"][0] > 7 * 300  # a busy key: the comparison means something

    # The widest window the exporter asks, whole in one answer.
    last = yesterday
    first = last - timedelta(days=97)
    pages = run.text("messages/sent-per-day for ")
    window = sim.per_day(KEY, "messages", midnight(first, zone), midnight(today, zone))
    assert pages == (
        f"messages/sent-per-day for {first} to {last} (98 days) answered {len(window)} "
        f"date(s), {min(window)} to {max(window)} in one page, adding up to its total"
    )

    flip_utc = datetime.fromtimestamp(midnight(today, zone), UTC).strftime("%H:%M")
    assert run.text("the API cuts its days at midnight in CONNECTYCUBE_TIMEZONE") == (
        f"the API cuts its days at midnight in CONNECTYCUBE_TIMEZONE ({zone}, "
        f"{offset_text(zone, now)}): its date changed at {flip_utc} UTC; "
        "25 of the last 25 hours had messages"
    )


@pytest.mark.slow
def test_a_quiet_app_is_consistent_with_a_note_about_the_zone(
    served: Callable[[Simulator], str],
) -> None:
    sim = Simulator(api_keys=[KEY], random_history=False)
    run = run_check(served(sim))
    assert run.code == 0, run
    assert run.levels().count("note") == 1, run
    assert run.text("cannot tell the API's zone: too little activity (0 of the last 25 hours")
    assert run.text("messages/sent-total answered: ") == "messages/sent-total answered: 0 all time"
    assert run.summary == "check: 1 app(s) checked, all consistent"
    assert sim.stats()["requests"] <= MAX_REQUESTS


@pytest.mark.slow
@pytest.mark.parametrize("bounds", ["[)", "[]", "(]", "()"])
def test_no_false_alarm_whatever_the_apis_bounds_and_count_spelling(
    served: Callable[[Simulator], str], tmp_path: Path, bounds: str
) -> None:
    """One app per reading of the documentation, each with events at exact midnights."""
    variants = {
        "int": Variant.from_bounds(bounds),
        "string": Variant.from_bounds(bounds, count_format="string"),
        "float": Variant.from_bounds(bounds, count_format="float"),
        "midnight": Variant.from_bounds(bounds, midnight_events=True),
        "capped": Variant.from_bounds(bounds, page_cap=3, midnight_events=True),
        # offset is never sent: what it would count cannot matter.
        "calendar": Variant.from_bounds(bounds, offset_counts="calendar_days"),
        "strict": Variant.from_bounds(bounds, totals_need_window=True, error_shape="list"),
    }
    zone = "Europe/Berlin"
    now = time.time()
    sim = busy_simulator(
        now, [], timezone=zone, variants={f"key-{n}": v for n, v in variants.items()}
    )
    # Events on the very seconds the check's windows start and end at.
    edges = [
        midnight(datetime.fromtimestamp(now, ZoneInfo(zone)).date() - timedelta(days=d), zone)
        for d in range(9)
    ]
    for name in variants:
        sim.add_events(
            f"key-{name}", "messages", [edge + shift for edge in edges for shift in (-1, 0)]
        )
        sim.add_events(f"key-{name}", 2, edges)
    # A page cap of three costs each per-day read about seven requests instead of one: with
    # one dialog type (the one with events at the midnights) the capped app stays within the
    # budget, so that its totals are compared too.
    types = {"capped": ", dialog_types: [2]"}
    config = tmp_path / "apps.yml"
    config.write_text(
        "apps:\n"
        + "".join(
            f"  - {{name: {name}, api_key: key-{name}{types.get(name, '')}}}\n" for name in variants
        )
    )
    run = run_check(served(sim), key=None, config_file=str(config), timezone=zone)

    assert run.code == 0, run
    assert run.summary == f"check: {len(variants)} app(s) checked, all consistent"
    assert [app for _, app, _ in run.findings] == [n for n in variants for _ in range(9)]
    for name in variants:
        if name != "capped":
            assert set(run.levels(name)) == {"ok"}, (name, run)
    # The capped app's one note says how the API pages: that is what check is for.
    capped = [(level, text) for level, app, text in run.findings if app == "capped"]
    [(level, pages)] = [finding for finding in capped if finding[0] != "ok"]
    assert level == "note"
    assert "answered 3 date(s)" in pages
    assert "a cap on the page cut it short" in pages
    assert sim.stats()["requests"] <= MAX_REQUESTS * len(variants)
    assert run.seconds < 30


@pytest.mark.slow
def test_a_server_paging_a_day_at_a_time_stays_within_the_budget(
    served: Callable[[Simulator], str],
) -> None:
    """A day a page: the zone is found, the comparison runs out of requests."""
    now = time.time()
    sim = busy_simulator(now, [], variants={KEY: Variant(page_cap=1)})
    run = run_check(served(sim))
    assert run.code == 0, run
    assert sim.stats()["requests"] <= MAX_REQUESTS
    assert run.findings[-2] == (
        "note",
        "default",
        "could not compare totals with per-day sums: the budget of 100 requests is spent",
    )
    assert run.findings[-1][2].startswith("the API cuts its days at midnight in ")


@pytest.mark.slow
def test_a_failing_endpoint_is_named_and_the_rest_still_checked(
    served: Callable[[Simulator], str],
) -> None:
    now = time.time()
    sim = busy_simulator(now, [KEY])
    sim.set_faults(status=500, paths=[DIALOGS_TOTAL_PATH])
    run = run_check(served(sim), max_retries="0")
    assert run.code == 1, run
    # The per-day answers need their totals too, to be proven.
    assert run.failures() == [
        "dialogs/created-total failed: HTTP 500: simulated error",
        "dialogs/created-total failed: HTTP 500: simulated error",
        "could not compare totals with per-day sums: dialogs/created-total: HTTP 500: "
        "simulated error",
    ]
    assert run.text("messages/sent-per-day answered: ")
    assert run.text("the API cuts its days at midnight in CONNECTYCUBE_TIMEZONE (UTC,")
    assert run.summary == "check: 3 problem(s) in 1 app(s)"


# --------------------------------------------------------------------------- wrong zone


@pytest.mark.slow
@pytest.mark.parametrize(
    ("api_zone", "configured", "suggested"),
    [
        ("Europe/Berlin", "UTC", "Etc/GMT-"),
        ("America/New_York", "UTC", "Etc/GMT+"),
        ("Asia/Kolkata", "Asia/Kathmandu", "Asia/Kolkata"),
        ("UTC", "Asia/Tokyo", "UTC"),
    ],
)
def test_a_zone_other_than_the_apis_is_found_and_named(
    served: Callable[[Simulator], str], api_zone: str, configured: str, suggested: str
) -> None:
    now = time.time()
    sim = busy_simulator(now, [], timezone=configured, variants={KEY: Variant(timezone=api_zone)})
    run = run_check(served(sim), timezone=configured)

    assert run.code == 1, run
    [failure] = run.failures()
    api_offset = offset_text(api_zone, now)
    flip = datetime.fromtimestamp(
        midnight(datetime.fromtimestamp(now, ZoneInfo(api_zone)).date(), api_zone), UTC
    )
    assert failure.startswith(
        f"the API cuts its days at about 00:00 {api_offset} (its date changed at "
        f"{flip:%H:%M} UTC), but CONNECTYCUBE_TIMEZONE={configured} cuts at 00:00 "
        f"{offset_text(configured, now)}: set CONNECTYCUBE_TIMEZONE to the API's zone "
        f"(a zone at {api_offset}, for example {suggested}"
    ), run
    if suggested.startswith("Etc/GMT"):
        hours = -int(api_offset[3:6])  # Etc/GMT signs are inverted
        assert f"for example Etc/GMT{hours:+d};" in failure
    # Everything else is as for a healthy key: one finding is wrong, not all. The days cut
    # in the wrong zone cannot add up to the totals: they are not compared.
    assert run.levels() == ["ok"] * 7 + ["note", "FAIL"], run
    assert run.text("totals not compared with per-day sums: ")
    assert run.summary == "check: 1 problem(s) in 1 app(s)"
    assert sim.stats()["requests"] <= MAX_REQUESTS


@pytest.mark.slow
def test_a_whole_simulator_in_another_zone_is_found_too(
    served: Callable[[Simulator], str],
) -> None:
    """The simulator's own zone (not a key's variant) cuts the API's days."""
    now = time.time()
    sim = busy_simulator(now, [KEY], timezone="Asia/Kathmandu")
    run = run_check(served(sim), timezone="UTC")
    assert run.code == 1, run
    [failure] = run.failures()
    assert "the API cuts its days at about 00:00 UTC+05:45 (its date changed at 18:15 UTC)" in (
        failure
    )
    assert "for example Asia/Kathmandu" in failure


# --------------------------------------------------------------------------- access


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["object", "list"])
def test_a_plan_without_the_admin_api_is_named(
    served: Callable[[Simulator], str], shape: str
) -> None:
    variant = Variant(plan_forbidden=True, error_shape=shape)  # type: ignore[arg-type]
    sim = Simulator(api_keys=[], random_history=False, variants={KEY: variant})
    run = run_check(served(sim))
    assert run.code == 1, run
    assert run.findings == [
        (
            "FAIL",
            "default",
            f"API key recognised but access refused (HTTP 403: {PLAN_FORBIDDEN_MESSAGE}): "
            "the Admin API needs the Advanced plan or higher",
        )
    ]
    assert run.summary == "check: 1 problem(s) in 1 app(s)"
    assert KEY not in run.result.stdout + run.result.stderr
    assert sim.stats()["requests"] == 1


@pytest.mark.slow
def test_an_unknown_key_names_the_setting_that_holds_it(
    served: Callable[[Simulator], str], tmp_path: Path
) -> None:
    sim = Simulator(api_keys=[OTHER_KEY], random_history=False)
    url = served(sim)
    run = run_check(url)
    assert run.code == 1, run
    assert run.findings == [
        (
            "FAIL",
            "default",
            "API key rejected (HTTP 401: Required session does not exist): check "
            "CONNECTYCUBE_API_KEY",
        )
    ]
    assert KEY not in run.result.stdout + run.result.stderr

    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    run = run_check(url, key=None, api_key_file=str(key_file))
    assert run.failures() == [
        "API key rejected (HTTP 401: Required session does not exist): check "
        f"CONNECTYCUBE_API_KEY_FILE ({key_file})"
    ]
    assert KEY not in run.result.stdout + run.result.stderr


@pytest.mark.slow
def test_every_app_of_the_config_file_is_reported_in_order(
    served: Callable[[Simulator], str], tmp_path: Path
) -> None:
    now = time.time()
    sim = busy_simulator(now, [KEY], variants={OTHER_KEY: Variant(plan_forbidden=True)})
    sim.set_faults(latency=0.02, keys=[KEY])  # the first app finishes last
    url = served(sim)
    config = tmp_path / "apps.yml"
    config.write_text(
        f"apps:\n  - {{name: prod, api_key: {KEY}, dialog_types: [2, 3]}}\n"
        f"  - {{name: staging, api_key: {OTHER_KEY}}}\n"
        "  - {name: gone, api_key: any-key, api_url: 'http://127.0.0.1:9'}\n"
    )
    run = run_check(url, key=None, config_file=str(config))

    assert run.code == 1, run
    assert [app for _, app, _ in run.findings] == ["prod"] * 9 + ["staging", "gone"]
    assert set(run.levels("prod")) == {"ok"}, run
    assert "group" in run.text("dialogs/created-total answered", "prod")
    assert "broadcast" not in run.text("dialogs/created-total answered", "prod")
    assert run.failures("staging") == [
        f"API key recognised but access refused (HTTP 403: {PLAN_FORBIDDEN_MESSAGE}): "
        "the Admin API needs the Advanced plan or higher"
    ]
    [gone] = run.failures("gone")
    assert gone.startswith("the API did not answer the first request: messages/sent-total: ")
    assert gone.endswith(": check CONNECTYCUBE_API_URL or the api_url of app 'gone'")
    assert run.summary == "check: 2 problem(s) in 2 app(s)"
    for key in (KEY, OTHER_KEY, "any-key"):
        assert key not in run.result.stdout + run.result.stderr


# --------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_a_configuration_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_exporter_once(["check"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "connectycube-exporter check: configuration error: CONNECTYCUBE_API_KEY or "
        "CONNECTYCUBE_API_KEY_FILE: an API key is required\n"
    )
    result = run_exporter_once(
        ["check", "--timezone", "Mars/Olympus"], {"CONNECTYCUBE_API_KEY": KEY}
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "configuration error: CONNECTYCUBE_TIMEZONE" in result.stderr


@pytest.mark.slow
def test_help_documents_the_findings_and_exit_codes() -> None:
    daemon = run_exporter_once(["--help"])
    assert "connectycube-exporter check --help" in daemon.stdout
    result = run_exporter_once(["check", "--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for part in (
        "ok APP:",
        "FAIL APP:",
        "note APP:",
        "check: N app(s) checked, all consistent",
        "0 all consistent",
        "1 a finding failed",
        "2 bad input or configuration",
        "at most 100 API requests",
        "--timezone",
        "--config-file",
    ):
        assert part in text, part


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_check(served: Callable[[Simulator], str], stop: signal.Signals) -> None:
    sim = Simulator(api_keys=[KEY], random_history=False)
    sim.set_faults(latency=0.3)  # a slow API
    url = served(sim)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTYCUBE_")}
    env = {**clean, "CONNECTYCUBE_API_URL": url, "CONNECTYCUBE_API_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "check"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: sim.stats()["requests"] >= 3, 20, "the check to be asking")
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + stop
    assert stderr == f"connectycube-exporter check: stopped by {stop.name}\n"
    assert stdout == ""


# --------------------------------------------------------------------------- the analysis


DAY = date(2024, 6, 2)
MIDNIGHT_UTC = int(datetime(2024, 6, 2, tzinfo=UTC).timestamp())


def _windows(flip_at: int, busy: Callable[[int], bool] = lambda _: True) -> list[Window]:
    """Hour windows over the 25 hours before 06:00 UTC on DAY; the API's day starts at flip_at."""
    end = MIDNIGHT_UTC + 6 * 3600
    windows = []
    for start in range(end - 25 * 3600, end, 3600):
        last = start + 3599
        days = {
            DAY - timedelta(days=1) if start < flip_at else DAY,
            DAY if last >= flip_at else None,
        }
        days.discard(None)
        windows.append(Window(start, last, frozenset(days) if busy(start) else frozenset()))
    return windows


def test_the_flip_gives_the_offset_from_the_apis_date() -> None:
    # Kiritimati (UTC+14) and Honolulu (UTC-10) both start a day at 10:00 UTC: the date
    # the API gives tells them apart.
    early = Flip(DAY, MIDNIGHT_UTC - 14 * 3600 - 1, MIDNIGHT_UTC - 14 * 3600)
    assert early.candidates == [MIDNIGHT_UTC - 14 * 3600]
    assert early.offset(early.candidates[0]) == 14 * 3600
    late = Flip(DAY, MIDNIGHT_UTC + 10 * 3600 - 1, MIDNIGHT_UTC + 10 * 3600)
    assert late.offset(late.candidates[0]) == -10 * 3600
    # A wide range keeps only quarter hours at offsets zones have.
    wide = Flip(DAY, MIDNIGHT_UTC - 30 * 3600, MIDNIGHT_UTC + 30 * 3600)
    assert len(wide.candidates) == 26 * 4 + 1


def test_zone_verdicts_on_made_up_windows() -> None:
    now = MIDNIGHT_UTC + 6 * 3600 + 60
    utc = ZoneInfo("UTC")
    agreeing = _windows(MIDNIGHT_UTC)
    # Hour windows alone leave the flip anywhere in two hours: a note, not an ok.
    level, text = zone_finding(agreeing, utc, now)
    assert level == "note", text
    assert "between 23:00 and 01:00 UTC" in text
    # The narrow windows either side of 00:00 pin it.
    probes = [
        Window(MIDNIGHT_UTC - 900, MIDNIGHT_UTC - 1, frozenset({DAY - timedelta(days=1)})),
        Window(MIDNIGHT_UTC, MIDNIGHT_UTC + 899, frozenset({DAY})),
    ]
    level, text = zone_finding([*agreeing, *probes], utc, now)
    assert (level, text) == (
        "ok",
        "the API cuts its days at midnight in CONNECTYCUBE_TIMEZONE (UTC, UTC+00:00): its "
        "date changed at 00:00 UTC; 25 of the last 25 hours had messages",
    )
    # Berlin in summer: the flip at 22:00 UTC, inside the hour scan.
    berlin = _windows(MIDNIGHT_UTC - 2 * 3600)
    found = best_flip(berlin)
    assert found is not None
    level, text = zone_finding(berlin, utc, now)
    assert level == "FAIL"
    assert text.startswith("the API cuts its days at 00:00 somewhere from UTC+01:15 to UTC+02:45")
    # Quiet: nothing to tell.
    quiet = _windows(MIDNIGHT_UTC, busy=lambda _: False)
    assert zone_finding(quiet, utc, now)[0] == "note"
    # One busy hour dated a day the zone disagrees with, no flip: the window is shown.
    lonely = _windows(MIDNIGHT_UTC - 3600, busy=lambda start: start == MIDNIGHT_UTC - 3600)
    level, text = zone_finding(lonely, utc, now)
    assert (level, text) == (
        "FAIL",
        "the API dated the messages of 2024-06-01 23:00 to 00:00 UTC as 2024-06-02, but "
        "CONNECTYCUBE_TIMEZONE=UTC puts them on 2024-06-01: set CONNECTYCUBE_TIMEZONE to "
        "the API's zone",
    )


def test_summary_counts_problems_not_notes() -> None:
    def report(*levels: str) -> Report:
        result = Report(AppConfig("a", None, "", ()))  # type: ignore[arg-type]
        for level in levels:
            result.add(level, "x")  # type: ignore[arg-type]
        return result

    assert (
        summary([report("ok", "note"), report("ok")]) == "check: 2 app(s) checked, all consistent"
    )
    assert summary([report("FAIL", "FAIL"), report("note"), report("ok", "FAIL")]) == (
        "check: 3 problem(s) in 2 app(s)"
    )


def test_a_finding_is_always_one_line() -> None:
    result = Report(AppConfig("a", None, "", ()))  # type: ignore[arg-type]
    result.add("FAIL", "HTTP 500: first\nFAIL b: forged\r")
    assert result.lines() == ["FAIL a: HTTP 500: first FAIL b: forged "]
