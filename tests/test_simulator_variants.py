"""The simulator's API variants: one server, one variant per API key, over real HTTP.

Every expected value is worked out by hand from the events a test adds; the ground truth
(``count`` / ``per_day``) is only compared against, never used to build expectations,
except for the random history, which has no hand-countable events.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.simulator import (
    API_KEY_HEADER,
    BODY_MODES,
    DIALOGS_PER_DAY_PATH,
    DIALOGS_TOTAL_PATH,
    ENDPOINTS,
    MESSAGES_PER_DAY_PATH,
    MESSAGES_TOTAL_PATH,
    PLAN_FORBIDDEN_MESSAGE,
    CountFormat,
    ErrorShape,
    RunningServer,
    Simulator,
    Variant,
    start_simulator,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "plain-key"  # plays the default variant
UNKNOWN = "no-such-key"
TOTALS = (MESSAGES_TOTAL_PATH, DIALOGS_TOTAL_PATH)
PER_DAY = (MESSAGES_PER_DAY_PATH, DIALOGS_PER_DAY_PATH)


def ts(local: str, zone: str = "UTC") -> int:
    """Unix time of a local wall-clock time such as '2024-01-10 12:00'."""
    return int(datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone)).timestamp())


NOW = ts("2024-01-10 12:00")


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Api:
    """A client of one simulator server that names the API key per request."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def get(self, key: str, path: str, params: Any = None) -> httpx.Response:
        return self.client.get(path, params=params, headers={API_KEY_HEADER: key})

    def ok(self, key: str, path: str, params: Any = None) -> Any:
        """The JSON of a 200 answer."""
        response = self.get(key, path, params)
        assert response.status_code == 200, response.text
        return response.json()


Serve = Callable[[Simulator], Api]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[RunningServer] = []
    clients: list[httpx.Client] = []

    def start(simulator: Simulator) -> Api:
        server = start_simulator(simulator, "127.0.0.1:0")
        servers.append(server)
        clients.append(httpx.Client(base_url=server.url, timeout=5))
        return Api(clients[-1])

    yield start
    for client in clients:
        client.close()
    for server in servers:
        # stop() waits out the serve loop's 0.5 s poll; not worth blocking every test on.
        threading.Thread(target=server.stop, daemon=True).start()


def explicit(
    variants: dict[str, Variant], clock: FakeClock | None = None, **options: Any
) -> Simulator:
    """A simulator with no random history, KEY on the default variant plus ``variants``."""
    return Simulator(
        api_keys=[KEY],
        variants=variants,
        random_history=False,
        clock=clock or FakeClock(),
        **options,
    )


def every_page(api: Api, key: str, path: str, **params: Any) -> dict[str, Any]:
    """Every day of a per-day endpoint, paging by days with data."""
    merged: dict[str, Any] = {}
    offset = 0
    while page := api.ok(key, path, {**params, "offset": offset}):
        merged.update(page)
        offset += len(page)
    return merged


# ----------------------------------------------------------------------------- bounds

START = ts("2024-01-05 10:00")
END = ts("2024-01-07 10:00")
MIDDLE = ts("2024-01-06 10:00")
WINDOW = {"start_date": START, "end_date": END}


@pytest.mark.parametrize(
    ("bounds", "total", "per_day"),
    [
        ("[]", 5, {"2024-01-05": 2, "2024-01-06": 1, "2024-01-07": 2}),
        ("[)", 4, {"2024-01-05": 2, "2024-01-06": 1, "2024-01-07": 1}),
        ("()", 3, {"2024-01-05": 1, "2024-01-06": 1, "2024-01-07": 1}),
        ("(]", 4, {"2024-01-05": 1, "2024-01-06": 1, "2024-01-07": 2}),
    ],
)
def test_bounds_decide_whether_events_at_start_and_end_count(
    serve: Serve, bounds: str, total: int, per_day: dict[str, int]
) -> None:
    variant = Variant.from_bounds(bounds)
    assert variant.bounds == bounds
    sim = explicit({bounds: variant})
    # Events exactly at each bound, half a second inside and outside, and a second outside.
    events = [START - 1, START - 0.5, START, START + 0.5, MIDDLE]
    events += [END - 0.5, END, END + 0.5, END + 1]
    sim.add_events(bounds, "messages", events)
    sim.add_events(bounds, 2, events)
    api = serve(sim)

    for path in TOTALS:
        assert api.ok(bounds, path, WINDOW) == {"total": total}
    for path in PER_DAY:
        assert api.ok(bounds, path, WINDOW) == per_day
    # The ground truth is [start, end) whatever the key plays.
    assert sim.count(bounds, "messages", START, END) == 4
    assert sim.per_day(bounds, 2, START, END) == {
        "2024-01-05": 2,
        "2024-01-06": 1,
        "2024-01-07": 1,
    }


@pytest.mark.parametrize("bounds", ["[]", "(]"])
def test_an_inclusive_end_still_stops_at_now(serve: Serve, bounds: str) -> None:
    clock = FakeClock()
    sim = explicit({bounds: Variant.from_bounds(bounds)}, clock)
    sim.add_events(bounds, "messages", [NOW - 60, NOW + 60])
    api = serve(sim)
    window = {"start_date": NOW - 3600, "end_date": NOW + 60}
    assert api.ok(bounds, MESSAGES_TOTAL_PATH, window) == {"total": 1}
    clock.now = NOW + 60
    assert api.ok(bounds, MESSAGES_TOTAL_PATH, window) == {"total": 2}
    assert api.ok(bounds, MESSAGES_PER_DAY_PATH, window) == {"2024-01-10": 2}


def test_bounds_of_one_server_differ_per_key(serve: Serve) -> None:
    sim = explicit({bounds: Variant.from_bounds(bounds) for bounds in ("[]", "()")})
    for key in (KEY, "[]", "()"):
        sim.add_events(key, "messages", [START, MIDDLE, END])
    api = serve(sim)
    totals = {key: api.ok(key, MESSAGES_TOTAL_PATH, WINDOW) for key in (KEY, "[]", "()")}
    assert totals == {KEY: {"total": 2}, "[]": {"total": 3}, "()": {"total": 1}}


# ----------------------------------------------------------------------------- offsets

# A sparse week: nothing on 2024-01-01, 01-04, 01-05, 01-06 and 01-08.
SPARSE = {"2024-01-02": 1, "2024-01-03": 2, "2024-01-07": 3, "2024-01-09": 4}
FROM_JAN_1 = {"start_date": ts("2024-01-01 00:00")}


def add_sparse(sim: Simulator, key: str) -> None:
    for day, n in SPARSE.items():
        sim.add_events(key, "messages", [ts(f"{day} 09:00")] * n)


def test_offset_counts_days_with_data(serve: Serve) -> None:
    sim = explicit({})
    add_sparse(sim, KEY)
    api = serve(sim)

    def page(offset: int, limit: int) -> dict[str, int]:
        return api.ok(KEY, MESSAGES_PER_DAY_PATH, {**FROM_JAN_1, "offset": offset, "limit": limit})

    assert page(0, 2) == {"2024-01-02": 1, "2024-01-03": 2}
    assert page(1, 2) == {"2024-01-03": 2, "2024-01-07": 3}
    assert page(2, 2) == {"2024-01-07": 3, "2024-01-09": 4}
    assert page(4, 2) == {}


def test_offset_counts_calendar_days(serve: Serve) -> None:
    sim = explicit({"cal": Variant(offset_counts="calendar_days")})
    add_sparse(sim, "cal")
    api = serve(sim)

    def page(offset: int, limit: int, window: dict[str, int] = FROM_JAN_1) -> dict[str, int]:
        return api.ok("cal", MESSAGES_PER_DAY_PATH, {**window, "offset": offset, "limit": limit})

    # Day 0 is 2024-01-01, the day of start_date, though nothing happened on it.
    assert page(0, 2) == {"2024-01-02": 1}
    assert page(0, 3) == {"2024-01-02": 1, "2024-01-03": 2}
    assert page(3, 3) == {}  # 01-04 .. 01-06: quiet days, yet the pages go on
    assert page(6, 3) == {"2024-01-07": 3, "2024-01-09": 4}
    assert page(8, 1) == {"2024-01-09": 4}
    assert page(9, 100) == {}
    # Day 0 is the day of start_date even when start_date is late in that day.
    assert page(1, 1, {"start_date": ts("2024-01-02 23:00")}) == {"2024-01-03": 2}
    # Without start_date, day 0 is the first day with data: 2024-01-02.
    assert page(5, 1, {}) == {"2024-01-07": 3}
    assert page(0, 2, {}) == {"2024-01-02": 1, "2024-01-03": 2}


def test_calendar_days_are_counted_in_the_key_zone(serve: Serve) -> None:
    zone = "Asia/Kathmandu"  # UTC+05:45
    sim = explicit({"ktm": Variant(offset_counts="calendar_days", timezone=zone)})
    # 2024-01-01 20:00 UTC is 2024-01-02 01:45 in Kathmandu: calendar day 1 there.
    sim.add_events("ktm", "messages", [ts("2024-01-01 20:00")])
    api = serve(sim)
    window = {"start_date": ts("2024-01-01 00:00", zone)}
    assert api.ok("ktm", MESSAGES_PER_DAY_PATH, {**window, "offset": 0, "limit": 1}) == {}
    assert api.ok("ktm", MESSAGES_PER_DAY_PATH, {**window, "offset": 1, "limit": 1}) == {
        "2024-01-02": 1
    }


# ----------------------------------------------------------------------------- page cap


def test_page_cap_limits_every_answer(serve: Serve) -> None:
    sim = explicit({"capped": Variant(page_cap=4)})
    expected = {}
    for i in range(10):
        day = date(2024, 1, 1) + timedelta(days=i)
        sim.add_events("capped", "messages", [ts(f"{day} 12:00")] * (i + 1))
        expected[day.isoformat()] = i + 1
    api = serve(sim)

    assert len(api.ok("capped", MESSAGES_PER_DAY_PATH)) == 4
    assert len(api.ok("capped", MESSAGES_PER_DAY_PATH, {"limit": 100})) == 4
    assert len(api.ok("capped", MESSAGES_PER_DAY_PATH, {"limit": 3})) == 3
    assert api.ok("capped", MESSAGES_PER_DAY_PATH, {"limit": 100, "offset": 8}) == {
        "2024-01-09": 9,
        "2024-01-10": 10,
    }
    assert every_page(api, "capped", MESSAGES_PER_DAY_PATH, limit=100) == expected


def test_page_cap_of_calendar_days_caps_the_entries(serve: Serve) -> None:
    sim = explicit({"cal": Variant(offset_counts="calendar_days", page_cap=2)})
    add_sparse(sim, "cal")
    api = serve(sim)
    params = {**FROM_JAN_1, "limit": 100}
    assert api.ok("cal", MESSAGES_PER_DAY_PATH, params) == {"2024-01-02": 1, "2024-01-03": 2}
    assert api.ok("cal", MESSAGES_PER_DAY_PATH, {**params, "offset": 6}) == {
        "2024-01-07": 3,
        "2024-01-09": 4,
    }
    assert api.ok("cal", MESSAGES_PER_DAY_PATH, {**params, "limit": 2}) == {"2024-01-02": 1}


def test_max_limit_is_the_default_page_cap() -> None:
    sim = Simulator(api_keys=[KEY], random_history=False, max_limit=5)
    assert sim.variant_of(KEY) == Variant(page_cap=5)
    with pytest.raises(ValueError, match="not both"):
        Simulator(max_limit=5, variant=Variant(page_cap=3), random_history=False)


# ----------------------------------------------------------------------------- count formats


@pytest.mark.parametrize(
    ("count_format", "total_text", "per_day_text"),
    [
        ("int", '{"total": 5}', '{"2024-01-09": 3, "2024-01-10": 2}'),
        ("string", '{"total": "5"}', '{"2024-01-09": "3", "2024-01-10": "2"}'),
        ("float", '{"total": 5.0}', '{"2024-01-09": 3.0, "2024-01-10": 2.0}'),
    ],
)
def test_count_formats(
    serve: Serve, count_format: CountFormat, total_text: str, per_day_text: str
) -> None:
    sim = explicit({count_format: Variant(count_format=count_format)})
    events = [ts("2024-01-09 10:00")] * 3 + [ts("2024-01-10 10:00")] * 2
    sim.add_events(count_format, "messages", events)
    sim.add_events(count_format, 3, events)
    api = serve(sim)
    # The raw text, since 5 == 5.0 once parsed.
    for path in TOTALS:
        assert api.get(count_format, path).text == total_text
    for path in PER_DAY:
        assert api.get(count_format, path).text == per_day_text


# ----------------------------------------------------------------------------- errors


def test_totals_need_a_window(serve: Serve) -> None:
    sim = explicit({"strict": Variant(totals_need_window=True)})
    sim.add_events("strict", "messages", [MIDDLE])
    api = serve(sim)
    for path in TOTALS:
        for params in ({}, {"start_date": START}, {"end_date": END}):
            response = api.get("strict", path, params)
            assert response.status_code == 422
            assert response.json() == {"errors": {"base": ["start_date and end_date are required"]}}
        assert api.get("strict", path, WINDOW).status_code == 200
        assert api.get(KEY, path).status_code == 200  # the default variant needs none
    assert api.ok("strict", MESSAGES_TOTAL_PATH, WINDOW) == {"total": 1}
    assert api.ok("strict", MESSAGES_PER_DAY_PATH) == {"2024-01-06": 1}


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_plan_forbidden_is_403_and_unknown_keys_401(serve: Serve, path: str) -> None:
    sim = explicit({"basic-plan": Variant(plan_forbidden=True)})
    api = serve(sim)
    forbidden = api.get("basic-plan", path, {"limit": "not-even-checked"})
    assert forbidden.status_code == 403
    assert forbidden.json() == {"errors": {"base": [PLAN_FORBIDDEN_MESSAGE]}}
    assert "Advanced plan" in PLAN_FORBIDDEN_MESSAGE
    unknown = api.get(UNKNOWN, path)
    assert unknown.status_code == 401
    assert unknown.json() == {"errors": {"base": ["Required session does not exist"]}}
    assert api.get(KEY, path).status_code == 200
    assert sim.is_valid_key("basic-plan")


@pytest.mark.parametrize(
    ("shape", "body"),
    [
        ("object", lambda message: {"errors": {"base": [message]}}),
        ("list", lambda message: {"errors": [message]}),
    ],
)
def test_error_shapes(serve: Serve, shape: ErrorShape, body: Callable[[str], Any]) -> None:
    sim = explicit(
        {
            shape: Variant(error_shape=shape),
            "forbidden": Variant(error_shape=shape, plan_forbidden=True),
            "strict": Variant(error_shape=shape, totals_need_window=True),
        },
        variant=Variant(error_shape=shape),
    )
    api = serve(sim)

    def error(key: str, status: int, path: str = MESSAGES_TOTAL_PATH, params: Any = None) -> Any:
        response = api.get(key, path, params)
        assert response.status_code == status
        return response.json()

    assert error(shape, 422, MESSAGES_PER_DAY_PATH, {"limit": "ten"}) == body(
        "limit must be an integer"
    )
    assert error("forbidden", 403) == body(PLAN_FORBIDDEN_MESSAGE)
    assert error("strict", 422) == body("start_date and end_date are required")
    # Keys outside ``variants`` play the default variant, unknown ones too.
    assert error(UNKNOWN, 401) == body("Required session does not exist")
    assert error(shape, 404, "/admin/stats/calls/made-total") == body(
        "no such endpoint: /admin/stats/calls/made-total"
    )
    post = api.client.post(MESSAGES_TOTAL_PATH, headers={API_KEY_HEADER: shape})
    assert (post.status_code, post.json()) == (405, body("method not allowed"))
    sim.set_faults(status=503, keys=[shape])
    assert error(shape, 503) == body("simulated error")


def test_error_body_fault_is_a_200_in_the_key_shape(serve: Serve) -> None:
    assert "error_body" in BODY_MODES
    sim = explicit({"listy": Variant(error_shape="list")})
    api = serve(sim)
    assert api.client.post("/_sim/faults", json={"body": "error_body"}).json() == {"ok": True}
    for path in sorted(ENDPOINTS):
        assert api.ok(KEY, path) == {"errors": {"base": ["simulated error"]}}
        assert api.ok("listy", path) == {"errors": ["simulated error"]}
    # Like the other value faults it comes after auth: a bad key is still 401.
    assert api.get(UNKNOWN, MESSAGES_TOTAL_PATH).status_code == 401
    sim.set_faults()
    assert api.ok(KEY, MESSAGES_TOTAL_PATH) == {"total": 0}


# ----------------------------------------------------------------------------- time zones


def test_per_day_keys_are_cut_in_the_key_zone(serve: Serve) -> None:
    zone = "Asia/Kathmandu"  # UTC+05:45
    sim = explicit({"ktm": Variant(timezone=zone)})
    # 20:00 UTC on the 9th is 01:45 on the 10th in Kathmandu; 12:00 UTC is the same day.
    events = [ts("2024-01-09 20:00"), ts("2024-01-10 06:00")]
    for key in (KEY, "ktm"):
        sim.add_events(key, "messages", events)
        sim.add_events(key, 4, events)
    api = serve(sim)
    for path in PER_DAY:
        assert api.ok(KEY, path) == {"2024-01-09": 1, "2024-01-10": 1}
        assert api.ok("ktm", path) == {"2024-01-10": 2}
    assert api.ok("ktm", MESSAGES_TOTAL_PATH) == {"total": 2}
    # The ground truth cuts days in whatever zone it is asked, for any key.
    assert sim.per_day("ktm", "messages") == {"2024-01-09": 1, "2024-01-10": 1}
    assert sim.per_day(KEY, 4, timezone=zone) == {"2024-01-10": 2}


def test_history_in_a_key_zone_matches_the_ground_truth(serve: Serve) -> None:
    zone = "Asia/Kathmandu"
    sim = Simulator(
        api_keys=[KEY],
        variants={"ktm": Variant(timezone=zone)},
        history_days=60,
        seed=4,
        clock=FakeClock(),
    )
    api = serve(sim)
    start, end = ts("2023-12-01 07:30"), ts("2024-01-09 22:10")
    window = {"start_date": start, "end_date": end}
    merged = every_page(api, "ktm", MESSAGES_PER_DAY_PATH, **window)
    assert sum(merged.values()) == api.ok("ktm", MESSAGES_TOTAL_PATH, window)["total"]
    assert merged == sim.per_day("ktm", "messages", start, end, timezone=zone)
    # Each whole Kathmandu day holds what count() finds between its two local midnights.
    for day in ("2023-12-02", "2023-12-25", "2024-01-09"):
        following = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        expected = sim.count(
            "ktm", "messages", ts(f"{day} 00:00", zone), ts(f"{following} 00:00", zone)
        )
        assert merged[day] == expected
    # The first and last days are cut by the window.
    assert merged["2023-12-01"] == sim.count("ktm", "messages", start, ts("2023-12-02 00:00", zone))
    assert merged["2024-01-10"] == sim.count("ktm", "messages", ts("2024-01-10 00:00", zone), end)


# ----------------------------------------------------------------------------- history


def midnight_sim(clock: FakeClock, zone: str = "UTC") -> Simulator:
    """Random history; every bounds variant with midnight events, and KEY without."""
    return Simulator(
        api_keys=[KEY],
        variants={
            b: Variant.from_bounds(b, midnight_events=True) for b in ("[]", "[)", "()", "(]")
        },
        timezone=zone,
        history_days=40,
        seed=9,
        clock=clock,
    )


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu", "America/New_York"])
def test_midnight_events_sit_at_each_local_midnight(serve: Serve, zone: str) -> None:
    sim = midnight_sim(FakeClock(), zone)
    api = serve(sim)
    for back in range(35):
        day = date(2024, 1, 10) - timedelta(days=back)
        midnight = ts(f"{day} 00:00", zone)
        at = {"start_date": midnight, "end_date": midnight}
        # Days hold at most a few thousand events: the next one is seconds away.
        assert sim.count("[)", "messages", midnight, midnight + 1) == 1
        assert sim.count("[)", "messages", midnight - 1, midnight) == 0
        assert sim.count(KEY, "messages", midnight - 1, midnight + 1) == 0
        assert api.ok("[]", MESSAGES_TOTAL_PATH, at) == {"total": 1}
        assert api.ok("[]", MESSAGES_PER_DAY_PATH, at) == {day.isoformat(): 1}
        assert api.ok("[)", MESSAGES_TOTAL_PATH, {**at, "end_date": midnight + 1}) == {"total": 1}
        assert api.ok("()", MESSAGES_TOTAL_PATH, {**at, "end_date": midnight + 1}) == {"total": 0}
        assert api.ok("(]", MESSAGES_TOTAL_PATH, {**at, "start_date": midnight - 1}) == {"total": 1}


def test_midnight_events_agree_with_the_ground_truth(serve: Serve) -> None:
    sim = midnight_sim(FakeClock())
    api = serve(sim)
    first, last = ts("2023-12-15 00:00"), ts("2024-01-05 00:00")
    window = {"start_date": first, "end_date": last}
    truth = sim.per_day("[]", "messages", first, last)
    assert list(truth) == [(date(2023, 12, 15) + timedelta(days=i)).isoformat() for i in range(21)]
    # "[]" also holds the event at the closing midnight; "()" loses the opening one.
    assert every_page(api, "[]", MESSAGES_PER_DAY_PATH, **window) == {**truth, "2024-01-05": 1}
    assert api.ok("[]", MESSAGES_TOTAL_PATH, window) == {"total": sum(truth.values()) + 1}
    truth = sim.per_day("()", "messages", first, last)
    assert every_page(api, "()", MESSAGES_PER_DAY_PATH, **window) == {
        **truth,
        "2023-12-15": truth["2023-12-15"] - 1,
    }
    assert api.ok("()", MESSAGES_TOTAL_PATH, window) == {"total": sum(truth.values()) - 1}


def test_midnight_events_grow_through_the_day(serve: Serve) -> None:
    clock = FakeClock(ts("2024-01-10 00:00"))
    sim = midnight_sim(clock)
    api = serve(sim)
    today = {"start_date": ts("2024-01-10 00:00")}

    def today_count(key: str) -> int:
        return int(api.ok(key, MESSAGES_PER_DAY_PATH, today).get("2024-01-10", 0))

    assert (today_count("[)"), today_count(KEY)) == (1, 0)  # the midnight event exists
    clock.now = ts("2024-01-11 00:00")
    full_day = today_count("[)")
    assert full_day > 100
    clock.now = ts("2024-01-10 12:00")
    # Event i of n sits at i / n of the day; i / n <= 1/2 holds for i = 0 .. n // 2.
    assert today_count("[)") == full_day // 2 + 1


def test_messages_are_never_quiet_but_dialogs_are(serve: Serve) -> None:
    keys = ["app-1", "app-2", "app-3"]
    sim = Simulator(api_keys=keys, history_days=400, seed=1, clock=FakeClock())
    api = serve(sim)
    every_day = [
        (date(2024, 1, 10) - timedelta(days=back)).isoformat() for back in range(400, -1, -1)
    ]
    for key in keys:
        messages = every_page(api, key, MESSAGES_PER_DAY_PATH)
        assert list(messages) == every_day
        assert min(messages.values()) > 0
        for dialog_type in range(1, 6):
            dialogs = every_page(api, key, DIALOGS_PER_DAY_PATH, **{"types[]": dialog_type})
            assert set(dialogs) < set(every_day)  # some days had no new dialog of this type


def test_demo_setup_is_lively() -> None:
    """The demo's simulator: messages every day, counted more as the day goes on."""
    clock = FakeClock(ts("2024-01-10 00:00", "Europe/Berlin"))
    sim = Simulator(api_keys=["demo-key"], timezone="Europe/Berlin", clock=clock)
    counts = []
    for hour in (1, 8, 16, 23):
        clock.now = ts(f"2024-01-10 {hour:02d}:00", "Europe/Berlin")
        counts.append(sim.per_day("demo-key", "messages")["2024-01-10"])
    assert counts == sorted(counts)
    assert counts[0] < counts[-1]
    assert len(sim.per_day("demo-key", "messages")) == 401


# ----------------------------------------------------------------------------- the class


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"page_cap": 0}, "page_cap must be"),
        ({"page_cap": 2.5}, "page_cap must be"),
        ({"offset_counts": "pages"}, "offset_counts must be one of"),
        ({"count_format": "hex"}, "count_format must be one of"),
        ({"error_shape": "string"}, "error_shape must be one of"),
        ({"start_inclusive": "yes"}, "start_inclusive must be"),
    ],
)
def test_variant_rejects_bad_fields(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Variant(**options)


def test_variant_helpers_and_lookup() -> None:
    assert Variant() == Variant.from_bounds("[)")
    assert Variant(start_inclusive=False, end_inclusive=True).bounds == "(]"
    assert Variant.from_bounds("[]", page_cap=3) == Variant(end_inclusive=True, page_cap=3)
    with pytest.raises(ValueError, match="bounds must be one of"):
        Variant.from_bounds("[[")
    special = Variant(count_format="string")
    default = Variant(error_shape="list")
    sim = Simulator(
        api_keys=[KEY], variants={"special": special}, variant=default, random_history=False
    )
    assert (sim.variant_of("special"), sim.variant_of(KEY), sim.variant_of(UNKNOWN)) == (
        special,
        default,
        default,
    )
    assert sim.is_valid_key("special")
    assert not sim.is_valid_key(UNKNOWN)
    with pytest.raises(ValueError, match="Variant instances"):
        Simulator(variants={"k": {"page_cap": 3}}, random_history=False)  # type: ignore[dict-item]


# ----------------------------------------------------------------------------- CLI


def run_cli(*flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.simulator", "--listen", "127.0.0.1:0", *flags],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("cap_flag", ["--page-cap", "--max-limit"])
def test_cli_variant_flags(cap_flag: str) -> None:
    process = run_cli(
        "--bounds",
        "[]",
        "--offset-counts",
        "calendar_days",
        cap_flag,
        "2",
        "--count-format",
        "string",
        "--totals-need-window",
        "--error-shape",
        "list",
        "--key-timezone",
        "Asia/Kathmandu",
        "--midnight-events",
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline().strip()
        prefix = "simulator listening on "
        assert line.startswith(prefix), line
        with httpx.Client(
            base_url=line.removeprefix(prefix), headers={API_KEY_HEADER: "demo-key"}, timeout=5
        ) as client:
            missing = client.get(MESSAGES_TOTAL_PATH)
            assert (missing.status_code, missing.json()) == (
                422,
                {"errors": ["start_date and end_date are required"]},
            )
            midnight = math.floor(datetime.now(ZoneInfo("UTC")).timestamp() / 86400) * 86400
            window = {"start_date": midnight - 5 * 86400, "end_date": midnight}
            total = client.get(MESSAGES_TOTAL_PATH, params=window).json()["total"]
            assert isinstance(total, str)
            assert int(total) > 0
            # Six Kathmandu days with messages in the window, two calendar days per page.
            page = client.get(MESSAGES_PER_DAY_PATH, params={**window, "limit": 100}).json()
            assert len(page) == 2
            assert all(isinstance(n, str) and int(n) > 0 for n in page.values())
            # "[]" and --midnight-events: the closing UTC midnight's event is counted.
            at = {"start_date": midnight, "end_date": midnight}
            assert client.get(MESSAGES_TOTAL_PATH, params=at).json() == {"total": "1"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(
    "flags",
    [["--key-timezone", "Mars/Olympus_Mons"], ["--page-cap", "0"], ["--bounds", "[["]],
)
def test_cli_refuses_bad_variant_flags(flags: list[str]) -> None:
    process = run_cli(*flags)
    try:
        assert process.wait(timeout=10) == 2
    finally:
        process.kill()
        process.wait()
