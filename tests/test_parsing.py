"""Parsing the API's answers, building its queries, and telling which day it is."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.api import (
    MESSAGES,
    InvalidAnswer,
    build_query,
    day_bounds,
    endpoint_path,
    local_day,
    parse_per_day,
    parse_total,
)

ZONES = sorted(available_timezones() - {"Factory", "localtime"})
counts = st.integers(min_value=0, max_value=2**53 - 2)  # room for the +2 below
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1))
timestamps = st.integers(min_value=946_684_800, max_value=4_102_444_800)  # 2000..2100
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)


def test_total_reads_the_documented_shape() -> None:
    assert parse_total(json.loads('{"total": 167}')) == 167
    assert parse_total({"total": 0}) == 0


@pytest.mark.parametrize(
    "text", ['{"total": 167}', '{"total": "167"}', '{"total": 167.0}', '{"total": 1.67e2}']
)
def test_total_reads_a_count_however_it_is_spelled(text: str) -> None:
    assert parse_total(json.loads(text)) == 167


def test_counts_up_to_2_to_the_53_are_exact_and_larger_ones_refused() -> None:
    assert parse_total({"total": 2**53}) == 9_007_199_254_740_992
    assert parse_total({"total": str(2**53)}) == 9_007_199_254_740_992
    for too_large in (2**53 + 1, 2**1024, str(2**64), 1e300):
        with pytest.raises(InvalidAnswer, match="2\\^53"):
            parse_total({"total": too_large})


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {},
        {"count": 5},
        {"total": -1},
        {"total": "-1"},
        {"total": 5.5},
        {"total": "5.0"},
        {"total": " 5"},
        {"total": "+5"},
        {"total": "1e3"},
        {"total": "\u0665"},  # an Arabic-Indic five: str.isdigit() says yes, the API never would
        {"total": ""},
        {"total": float("inf")},
        {"total": float("nan")},
        {"total": True},
        {"total": None},
        "167",
    ],
)
def test_total_rejects_what_the_api_never_sends(payload: object) -> None:
    with pytest.raises(InvalidAnswer):
        parse_total(payload)


@given(st.dictionaries(days, counts, max_size=60), st.randoms())
def test_per_day_takes_keys_in_any_order(by_day: dict[date, int], rnd) -> None:
    items = [(day.isoformat(), count) for day, count in by_day.items()]
    rnd.shuffle(items)
    body = json.dumps(dict(items))
    assert parse_per_day(json.loads(body)) == by_day


@pytest.mark.parametrize(
    "payload",
    [
        [["2023-02-20", 5]],
        {"not-a-date": 5},
        {"20230220": 5},
        {"2023-W01-1": 5},
        {"2023-02-30": 5},
        {"2023-02-20": -1},
        {"2023-02-20": 2.5},
        {"2023-02-20": "5x"},
        {"2023-02-20": False},
        {"2023-02-20": None},
    ],
)
def test_per_day_rejects_bad_keys_and_counts(payload: object) -> None:
    with pytest.raises(InvalidAnswer):
        parse_per_day(payload)


def test_per_day_reads_counts_however_they_are_spelled() -> None:
    answer = {"2023-02-20": "56", "2023-02-21": 78.0, "2023-02-26": 47}
    expected = {date(2023, 2, 20): 56, date(2023, 2, 21): 78, date(2023, 2, 26): 47}
    assert parse_per_day(answer) == expected


def test_per_day_empty_answer_means_no_activity() -> None:
    assert parse_per_day({}) == {}


@given(json_values)
def test_parsers_give_a_value_or_a_clear_error(payload: object) -> None:
    for parse in (parse_total, parse_per_day):
        error: InvalidAnswer | None = None
        try:
            parse(payload)
        except InvalidAnswer as exc:
            error = exc
        assert error is None or str(error)


@given(
    st.dictionaries(days, counts, max_size=5),
    timestamps,
    st.sampled_from(ZONES),
    counts,
)
def test_todays_count_is_the_key_of_the_local_day(
    others: dict[date, int], now: int, zone_name: str, todays_count: int
) -> None:
    """Answers may hold days around midnight; only the local 'today' key counts."""
    zone = ZoneInfo(zone_name)
    today = datetime.fromtimestamp(now, UTC).astimezone(zone).date()
    answer = {**others, today: todays_count}
    answer[today - timedelta(days=1)] = todays_count + 1
    answer[today + timedelta(days=1)] = todays_count + 2
    parsed = parse_per_day({day.isoformat(): n for day, n in answer.items()})
    assert parsed.get(local_day(now, zone), 0) == todays_count


@given(timestamps, st.sampled_from(ZONES))
def test_day_bounds_hold_the_moment_and_meet_the_next_day(now: int, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    day = local_day(now, zone)
    start, end = day_bounds(day, zone)
    assert start <= now < end
    assert local_day(start, zone) == day
    assert local_day(end - 1, zone) == day


def test_dialog_filter_is_spelled_with_brackets() -> None:
    assert build_query(2, 100, 200) == "start_date=100&end_date=200&types[]=2"
    assert build_query(MESSAGES, 100, None, limit=10, offset=20) == (
        "start_date=100&limit=10&offset=20"
    )
    assert build_query(MESSAGES) == ""


def test_endpoints_match_the_api_reference() -> None:
    assert endpoint_path(MESSAGES, per_day=False) == "/admin/stats/messages/sent-total"
    assert endpoint_path(MESSAGES, per_day=True) == "/admin/stats/messages/sent-per-day"
    assert endpoint_path(4, per_day=False) == "/admin/stats/dialogs/created-total"
    assert endpoint_path(4, per_day=True) == "/admin/stats/dialogs/created-per-day"
