"""Exact against every reading of what the API's documentation leaves open.

One simulator serves every combination of the variants (bounds, the meaning of
``offset``, a page cap, counts as strings or floats, totals that need a window, events at
exactly local midnight), one API key per combination. The real daemon, ``backfill`` and
``check`` run as processes against it over loopback, each with one app per key, and
every count they give must equal the simulator's ground truth to the unit.

The simulator's clock is frozen (``tests.truth``): every count has one true value for the
whole test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.simulator import Variant
from tests.truth import Served, serve

ZONE = "Asia/Kathmandu"  # UTC+05:45: a midnight that a UTC reading would cut wrongly
TYPES = {2: "group", 5: "meeting"}  # a busy and a rare dialog type
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


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve(VARIANTS, ZONE, tmp_path_factory.mktemp("fidelity"), TYPES)
    yield served
    served.server.stop()


def test_the_matrix_has_midnight_events_and_capped_pages(served: Served) -> None:
    """The variants really differ where it matters, or the tests below prove nothing."""
    key = next(k for k, v in VARIANTS.items() if v.midnight_events)
    midnight = served.midnight(served.today)
    assert served.total_before(key, "messages", midnight + 1) > served.total_before(
        key, "messages", midnight
    )
    assert len(VARIANTS) == 4 * 2 * 3 * 3 * 2 * 2


@pytest.mark.slow
def test_the_daemon_is_exact_under_every_variant(served: Served) -> None:
    wrong = served.wrong_live(served.poll_once(), list(VARIANTS))
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"


@pytest.mark.slow
def test_backfill_is_exact_under_every_variant(served: Served, tmp_path: Path) -> None:
    output = tmp_path / "backfill.om"
    result = served.backfill(BACKFILL_DAYS, output, "--strict")
    assert result.returncode == 0, result.stderr
    wrong = served.wrong_backfill(output.read_text(), list(VARIANTS), BACKFILL_DAYS)
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[:5]}"


@pytest.mark.slow
def test_check_is_clean_under_every_variant(served: Served) -> None:
    """``check`` raises no false alarm, whatever the reading of the documentation.

    Notes are allowed, where the design needs them: the keys whose server caps a page at
    one day run out of budget (their per-day reads cost up to 15 requests a kind), and see
    the API's midnight only to the hour (an hour holding two dates shows the earlier).
    Any key may get a zone note should its history be too quiet around midnight.
    """
    result = served.check()
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("FAIL")], result.stdout
    assert result.returncode == 0, result.stderr
    assert lines[-1] == f"check: {len(VARIANTS)} app(s) checked, all consistent"
    capped = {key for key, variant in VARIANTS.items() if variant.page_cap == 1}
    notes = [line.removeprefix("note ").split(": ", 1) for line in lines if line[:4] == "note"]
    # Pages of one entry cost a read up to 6 requests a day (docs/backfill.md).
    assert {key for key, text in notes if "budget" in text} <= capped
    # A capped key's answers may fall short of a 98-day window: check says so, in a note.
    cut = {key for key, text in notes if "a cap on the page cut it short" in text}
    assert cut <= {key for key, variant in VARIANTS.items() if variant.page_cap is not None}
    unexpected = [(key, text) for key, text in notes if key not in capped | cut]
    assert all("too little activity" in text for _, text in unexpected), unexpected
