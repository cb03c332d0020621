"""Every day proven: pages cut by calendar days, quiet days left out, totals that drift.

An API may cap a per-day answer at a few calendar days, leave quiet days out, and count
``offset`` and its bounds in any way the documentation allows. One simulator per zone serves
every combination, one API key each (``tests.truth``); the real ``backfill``, daemon and
``check`` run as processes against it over loopback, and every day and total they give must
equal the simulator's truth to the unit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.simulator import Variant
from tests.truth import Served, serve

TYPES = {5: "meeting"}  # with messages: busy every day, and quiet on many
TYPE_NAME = TYPES[5]
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


@pytest.fixture(scope="module", params=ZONES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("windows")
    served = serve(VARIANTS, request.param, folder, TYPES, history_days=DAYS + 10, seed=17)
    yield served
    served.server.stop()


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
    result = served.backfill(DAYS, output, "--strict")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, "a consistent API prints no warning"
    wrong = served.wrong_backfill(output.read_text(), list(VARIANTS), DAYS)
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"


@pytest.mark.slow
def test_the_daemon_is_exact_with_pages_of_one_day_or_two_entries(served: Served) -> None:
    wrong = served.wrong_live(served.poll_once(), list(VARIANTS))
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
    folder = tmp_path_factory.mktemp("drift")
    served = serve(variants, "America/New_York", folder, TYPES, history_days=DAYS + 10, seed=17)
    yield served
    served.server.stop()


@pytest.mark.slow
def test_days_the_endpoints_disagree_on_are_written_and_reported_once(
    drifting: Served, tmp_path: Path
) -> None:
    output = tmp_path / "history.om"
    result = drifting.backfill(DAYS, output)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "warning" in line]
    first = drifting.today - timedelta(days=DAYS + 1)  # the day before --since is read too
    drifted = [
        first + timedelta(days=i)
        for i in range(DAYS + 1)
        if (first + timedelta(days=i)).toordinal() % DRIFT_EVERY == 0
    ]
    for key, kind in itertools.product(("drift-whole", "drift-cut"), drifting.kinds):
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
    keys = ["drift-whole", "drift-cut"]
    wrong = drifting.wrong_backfill(output.read_text(), keys, DAYS)
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"

    output.write_text("earlier\n")
    strict = drifting.backfill(DAYS, output, "--strict")
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
    served = serve(variants, "Asia/Kolkata", tmp_path, TYPES, history_days=DAYS + 10, seed=17)
    try:
        result = served.check()
    finally:
        served.server.stop()
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
