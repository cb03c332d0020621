"""Tests of the API simulator, over real HTTP, and of the demo's app it builds on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from exporter import simulator as demo
from exporter.api import day_start
from exporter.server import Request
from tests.simulator import (
    API_KEY_HEADER,
    DIALOGS_PER_DAY_PATH,
    DIALOGS_TOTAL_PATH,
    MESSAGES_PER_DAY_PATH,
    MESSAGES_TOTAL_PATH,
    RunningServer,
    Simulator,
    start_simulator,
)

KEY = "key-a"
OTHER = "key-b"
REPO_ROOT = Path(__file__).resolve().parent.parent


def ts(local: str, zone: str = "UTC") -> int:
    """Unix time of a local wall-clock time such as '2024-01-10 12:00'."""
    return int(datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone)).timestamp())


NOW = ts("2024-01-10 12:00")  # a Wednesday


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def explicit_sim(clock: FakeClock | None = None, **options: Any) -> Simulator:
    """A simulator with no random history: only the events a test adds exist."""
    return Simulator(
        api_keys=(KEY, OTHER), random_history=False, clock=clock or FakeClock(), **options
    )


Serve = Callable[..., httpx.Client]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a simulator on a free port; returns an httpx client sending KEY."""
    servers: list[RunningServer] = []
    clients: list[httpx.Client] = []

    def start(simulator: Simulator, timeout: float = 5.0) -> httpx.Client:
        server = start_simulator(simulator, "127.0.0.1:0")
        servers.append(server)
        client = httpx.Client(base_url=server.url, headers={API_KEY_HEADER: KEY}, timeout=timeout)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        # stop() waits out the serve loop's 0.5 s poll; not worth blocking every test on.
        threading.Thread(target=server.stop, daemon=True).start()


def assert_error_body(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["errors"]
    assert list(body["errors"]) == ["base"]
    assert [type(message) for message in body["errors"]["base"]] == [str]


def all_pages(client: httpx.Client, path: str, **params: Any) -> list[dict[str, int]]:
    """Every non-empty page of a per-day endpoint, following offset by the page size."""
    pages = []
    offset = 0
    while page := client.get(path, params={**params, "offset": offset}).json():
        pages.append(page)
        offset += len(page)
    return pages


# ----------------------------------------------------------------------------- auth


@pytest.mark.parametrize("path", [MESSAGES_TOTAL_PATH, DIALOGS_PER_DAY_PATH])
def test_missing_or_unknown_key_is_401(serve: Serve, path: str) -> None:
    client = serve(explicit_sim())
    assert_error_body(httpx.get(f"{client.base_url}{path}"), 401)
    assert_error_body(client.get(path, headers={API_KEY_HEADER: "nope"}), 401)
    assert client.get(path, headers={API_KEY_HEADER: OTHER}).status_code == 200


def test_key_prefix_accepts_any_key_with_it(serve: Serve) -> None:
    client = serve(Simulator(api_keys=(), key_prefix="tenant-", random_history=False))
    assert client.get(MESSAGES_TOTAL_PATH, headers={API_KEY_HEADER: "tenant-42"}).json() == {
        "total": 0
    }
    assert client.get(MESSAGES_TOTAL_PATH, headers={API_KEY_HEADER: "other-42"}).status_code == 401


def test_each_key_has_its_own_data(serve: Serve) -> None:
    sim = explicit_sim()
    sim.add_events(KEY, "messages", [NOW - 10] * 4)
    sim.add_events(OTHER, "messages", [NOW - 10])
    client = serve(sim)
    assert client.get(MESSAGES_TOTAL_PATH).json() == {"total": 4}
    other = client.get(MESSAGES_TOTAL_PATH, headers={API_KEY_HEADER: OTHER})
    assert other.json() == {"total": 1}


# ----------------------------------------------------------------------------- data


def test_totals_and_per_day_from_explicit_events(serve: Serve) -> None:
    sim = explicit_sim()
    yesterday = [ts("2024-01-09 08:00"), ts("2024-01-09 09:00"), ts("2024-01-09 23:59:59")]
    today = [ts("2024-01-10 00:00"), ts("2024-01-10 11:59")]
    later_today = [ts("2024-01-10 13:00")]
    sim.add_events(KEY, "messages", yesterday + today + later_today)
    sim.add_events(KEY, 2, [ts("2024-01-08 10:00"), ts("2024-01-08 11:00")])
    sim.add_events(KEY, 3, [ts("2024-01-10 10:00")])
    client = serve(sim)

    assert client.get(MESSAGES_TOTAL_PATH).json() == {"total": 5}
    assert client.get(MESSAGES_PER_DAY_PATH).json() == {"2024-01-09": 3, "2024-01-10": 2}
    assert client.get(DIALOGS_TOTAL_PATH).json() == {"total": 3}
    assert client.get(DIALOGS_PER_DAY_PATH).json() == {"2024-01-08": 2, "2024-01-10": 1}
    assert sim.count(KEY, "messages") == 5
    assert sim.count(KEY, "dialogs") == 3
    assert sim.per_day(KEY, 2) == {"2024-01-08": 2}


def test_window_is_start_inclusive_end_exclusive(serve: Serve) -> None:
    sim = explicit_sim()
    t0 = ts("2024-01-05 10:00")
    sim.add_events(KEY, "messages", [t0, t0 + 10, t0 + 20])
    client = serve(sim)

    def total(**params: int) -> int:
        return int(client.get(MESSAGES_TOTAL_PATH, params=params).json()["total"])

    assert total(start_date=t0 + 10, end_date=t0 + 20) == 1
    assert total(start_date=t0) == 3
    assert total(start_date=t0 + 1) == 2
    assert total(end_date=t0) == 0
    assert total(end_date=t0 + 1) == 1
    assert total(start_date=t0 + 21) == 0
    assert total(start_date=t0 + 20, end_date=t0 + 10) == 0
    per_day = client.get(MESSAGES_PER_DAY_PATH, params={"start_date": t0 + 10}).json()
    assert per_day == {"2024-01-05": 2}


def test_events_exist_only_once_the_clock_reaches_them(serve: Serve) -> None:
    clock = FakeClock()
    sim = explicit_sim(clock)
    sim.add_events(KEY, "messages", [NOW, NOW + 60])
    client = serve(sim)
    far_future = {"end_date": NOW + 3600}
    assert client.get(MESSAGES_TOTAL_PATH, params=far_future).json() == {"total": 1}
    clock.now = NOW + 59
    assert client.get(MESSAGES_TOTAL_PATH).json() == {"total": 1}
    clock.now = NOW + 60
    assert client.get(MESSAGES_TOTAL_PATH, params=far_future).json() == {"total": 2}


def test_types_filter_and_bare_types_is_ignored(serve: Serve) -> None:
    sim = explicit_sim()
    sim.add_events(KEY, 2, [NOW - 100] * 2)
    sim.add_events(KEY, 3, [NOW - 100])
    sim.add_events(KEY, 5, [NOW - 100] * 4)
    sim.add_events(KEY, 9, [NOW - 100])
    client = serve(sim)

    def total(params: list[tuple[str, Any]]) -> int:
        return int(client.get(DIALOGS_TOTAL_PATH, params=params).json()["total"])

    assert total([]) == 8
    assert total([("types[]", 2), ("types[]", 3)]) == 3
    assert total([("types[]", 9)]) == 1
    assert total([("types[]", 4)]) == 0
    assert total([("types", 2)]) == 8
    assert total([("types", "group")]) == 8
    per_day = client.get(DIALOGS_PER_DAY_PATH, params=[("types[]", 5)]).json()
    assert per_day == {"2024-01-10": 4}
    # Dialog types mean nothing to the message endpoints.
    assert client.get(MESSAGES_TOTAL_PATH, params=[("types[]", 2)]).json() == {"total": 0}


@pytest.mark.parametrize(
    ("path", "query"),
    [
        (MESSAGES_TOTAL_PATH, "start_date=yesterday"),
        (MESSAGES_TOTAL_PATH, "end_date=1.5"),
        (MESSAGES_PER_DAY_PATH, "limit=ten"),
        (MESSAGES_PER_DAY_PATH, "offset="),
        (MESSAGES_PER_DAY_PATH, "limit=0"),
        (DIALOGS_TOTAL_PATH, "types[]=group"),
        (DIALOGS_PER_DAY_PATH, "types%5B%5D=2&types%5B%5D=x"),
    ],
)
def test_non_integer_parameters_are_422(serve: Serve, path: str, query: str) -> None:
    client = serve(explicit_sim())
    assert_error_body(client.get(f"{path}?{query}"), 422)


def test_unknown_path_is_404_and_other_methods_405(serve: Serve) -> None:
    client = serve(explicit_sim())
    assert_error_body(client.get("/admin/stats/calls/made-total"), 404)
    assert_error_body(client.post(MESSAGES_TOTAL_PATH), 405)


# ----------------------------------------------------------------------------- paging


def days_with_events(sim: Simulator, first: date, days: int) -> dict[str, int]:
    """Add 1-3 messages at noon on each of ``days`` days; returns the expected per-day map."""
    expected = {}
    for i in range(days):
        day = first + timedelta(days=i)
        expected[day.isoformat()] = i % 3 + 1
        sim.add_events(KEY, "messages", [ts(f"{day} 12:00")] * (i % 3 + 1))
    return expected


def test_paging_returns_every_day_exactly_once(serve: Serve) -> None:
    sim = explicit_sim()
    expected = days_with_events(sim, date(2023, 5, 5), 250)
    client = serve(sim)

    first_page = client.get(MESSAGES_PER_DAY_PATH).json()
    assert list(first_page) == list(expected)[:100]
    pages = all_pages(client, MESSAGES_PER_DAY_PATH, limit=100)
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [day for page in pages for day in page] == list(expected)
    assert {day: n for page in pages for day, n in page.items()} == expected
    small = client.get(MESSAGES_PER_DAY_PATH, params={"limit": 7, "offset": 245}).json()
    assert small == dict(list(expected.items())[245:])


def test_max_limit_caps_the_page_size(serve: Serve) -> None:
    sim = explicit_sim(max_limit=30)
    expected = days_with_events(sim, date(2023, 5, 5), 100)
    client = serve(sim)
    pages = all_pages(client, MESSAGES_PER_DAY_PATH, limit=100)
    assert [len(page) for page in pages] == [30, 30, 30, 10]
    assert [day for page in pages for day in page] == list(expected)


def test_shuffle_keys_changes_order_not_content(serve: Serve) -> None:
    sim = explicit_sim(shuffle_keys=True)
    expected = days_with_events(sim, date(2023, 11, 1), 50)
    client = serve(sim)
    answers = [client.get(MESSAGES_PER_DAY_PATH).json() for _ in range(3)]
    assert all(answer == expected for answer in answers)
    assert any(list(answer) != list(expected) for answer in answers)


# ----------------------------------------------------------------------------- time zones


def test_per_day_keys_use_the_local_date(serve: Serve) -> None:
    events = [ts("2024-01-10 03:00"), ts("2024-01-10 05:30")]  # 22:00 and 00:30 in New York
    new_york = explicit_sim(timezone="America/New_York")
    utc = explicit_sim()
    for sim in (new_york, utc):
        sim.add_events(KEY, "messages", events)
    assert serve(new_york).get(MESSAGES_PER_DAY_PATH).json() == {
        "2024-01-09": 1,
        "2024-01-10": 1,
    }
    assert serve(utc).get(MESSAGES_PER_DAY_PATH).json() == {"2024-01-10": 2}


def test_history_fills_a_23_hour_dst_day(serve: Serve) -> None:
    zone = "America/New_York"
    sim = Simulator(
        api_keys=(KEY,), timezone=zone, history_days=30, clock=FakeClock(ts("2024-03-20 12:00"))
    )
    client = serve(sim)
    start, next_start = ts("2024-03-10 00:00", zone), ts("2024-03-11 00:00", zone)
    assert next_start - start == 23 * 3600

    day_count = client.get(MESSAGES_PER_DAY_PATH).json()["2024-03-10"]
    assert day_count > 100

    def total(end: int) -> int:
        params = {"start_date": start, "end_date": end}
        return int(client.get(MESSAGES_TOTAL_PATH, params=params).json()["total"])

    assert total(start + 23 * 3600) == day_count
    assert total(start + 22 * 3600) < day_count
    assert total(start + 12 * 3600) < day_count


# ----------------------------------------------------------------------------- random history


def test_today_grows_as_the_clock_moves(serve: Serve) -> None:
    clock = FakeClock(ts("2024-01-10 00:00"))
    sim = Simulator(api_keys=(KEY,), clock=clock)
    client = serve(sim)

    start = ts("2024-01-10 00:00")

    def today_count() -> int:
        per_day = client.get(MESSAGES_PER_DAY_PATH, params={"start_date": start}).json()
        return int(per_day.get("2024-01-10", 0))

    assert today_count() == 0
    clock.now = ts("2024-01-11 00:00")
    full_day = today_count()
    assert full_day > 100
    clock.now = ts("2024-01-10 12:00")
    # Events sit at (i + 0.5) / n of the day, so half the day holds ceil(n / 2) of them.
    assert today_count() == (full_day + 1) // 2
    totals = []
    for hour in (6, 12, 18):
        clock.now = start + hour * 3600
        totals.append(client.get(MESSAGES_TOTAL_PATH).json()["total"])
    assert totals == sorted(totals)
    assert totals[0] < totals[-1]


def test_random_history_is_deterministic_per_seed_and_key() -> None:
    def history(seed: int, key: str) -> dict[str, int]:
        sim = Simulator(api_keys=("a", "b"), seed=seed, history_days=400, clock=FakeClock())
        return sim.per_day(key, "messages")

    first = history(7, "a")
    assert first == history(7, "a")
    assert first != history(7, "b")
    assert first != history(8, "a")
    # Messages never have a quiet day: every day of the history, today included, is there.
    first_day = date(2024, 1, 10) - timedelta(days=400)
    assert [date.fromisoformat(day) for day in first] == [
        first_day + timedelta(days=i) for i in range(401)
    ]


def test_random_history_looks_like_an_app() -> None:
    sim = Simulator(api_keys=(KEY,), seed=3, clock=FakeClock())
    messages = sim.per_day(KEY, "messages", end=ts("2024-01-10 00:00"))
    weekday = [n for day, n in messages.items() if date.fromisoformat(day).weekday() < 5]
    weekend = [n for day, n in messages.items() if date.fromisoformat(day).weekday() >= 5]
    assert sum(weekend) / len(weekend) < 0.8 * sum(weekday) / len(weekday)
    assert 100 < sum(weekday) / len(weekday) < 5000
    assert sim.count(KEY, "dialogs") < sim.count(KEY, "messages") / 3
    assert sim.count(KEY, 5) < sim.count(KEY, 3)
    assert sim.count(KEY, 42) == 0  # only the five known types have history


def test_http_answers_match_the_ground_truth(serve: Serve) -> None:
    sim = Simulator(api_keys=(KEY,), seed=11, timezone="Europe/Berlin", clock=FakeClock())
    client = serve(sim)
    window = {"start_date": ts("2023-03-01 00:00"), "end_date": ts("2023-11-15 07:30")}
    pages = all_pages(client, DIALOGS_PER_DAY_PATH, **window)
    merged = {day: n for page in pages for day, n in page.items()}
    total = client.get(DIALOGS_TOTAL_PATH, params=window).json()["total"]
    assert sum(merged.values()) == total
    assert merged == sim.per_day(KEY, "dialogs", window["start_date"], window["end_date"])


# ----------------------------------------------------------------------------- faults


def test_status_fault_with_retry_after(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    sim.set_faults(status=503, retry_after="7")
    response = client.get(MESSAGES_TOTAL_PATH)
    assert_error_body(response, 503)
    assert response.json() == {"errors": {"base": ["simulated error"]}}
    assert response.headers["Retry-After"] == "7"
    sim.set_faults()
    assert client.get(MESSAGES_TOTAL_PATH).status_code == 200


def test_count_limited_fault_clears_itself(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    sim.set_faults(status=500, count=2)
    codes = [client.get(MESSAGES_TOTAL_PATH).status_code for _ in range(3)]
    assert codes == [500, 500, 200]


def test_faults_can_target_paths_and_keys(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    sim.set_faults(status=500, paths=[DIALOGS_TOTAL_PATH], keys=[OTHER])
    assert client.get(DIALOGS_TOTAL_PATH).status_code == 200
    assert client.get(MESSAGES_TOTAL_PATH, headers={API_KEY_HEADER: OTHER}).status_code == 200
    assert client.get(DIALOGS_TOTAL_PATH, headers={API_KEY_HEADER: OTHER}).status_code == 500


@pytest.mark.parametrize(
    ("mode", "total", "per_day"),
    [
        ("wrong_shape", {"count": 5}, [{"date": "2024-01-10", "count": 2}]),
        ("negative", {"total": -5}, {"2024-01-10": -5}),
        ("float", {"total": 5.5}, {"2024-01-10": 2.5}),
        ("bad_date_key", {"total": 2}, {"2024-01-10": 2, "not-a-date": 1}),
        ("empty", {"total": 2}, {}),
    ],
)
def test_value_faults_reshape_answers(serve: Serve, mode: str, total: Any, per_day: Any) -> None:
    sim = explicit_sim()
    sim.add_events(KEY, "messages", [NOW - 60] * 2)
    client = serve(sim)
    sim.set_faults(body=mode)
    assert client.get(MESSAGES_TOTAL_PATH).json() == total
    assert client.get(MESSAGES_PER_DAY_PATH).json() == per_day


@pytest.mark.parametrize("mode", ["garbage", "truncated"])
def test_unparseable_bodies(serve: Serve, mode: str) -> None:
    sim = explicit_sim()
    client = serve(sim)
    sim.set_faults(body=mode)
    for path in (MESSAGES_TOTAL_PATH, DIALOGS_PER_DAY_PATH):
        response = client.get(path)
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            response.json()


def test_huge_body_is_valid_json_of_the_asked_size(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    sim.set_faults(body="huge", huge_mb=1)
    response = client.get(MESSAGES_TOTAL_PATH)
    assert len(response.content) == 1024 * 1024
    assert response.json() == {"total": 167}

    sim.set_faults(body="huge")  # 50 MB: read the start only
    with client.stream("GET", MESSAGES_PER_DAY_PATH) as streamed:
        assert "Content-Length" not in streamed.headers
        received = b""
        for chunk in streamed.iter_raw():
            received += chunk
            if len(received) > 1024 * 1024:
                break
    assert received.startswith(b'{"2023-02-20": 56')


def test_trickle_sends_a_byte_at_a_time(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    sim.set_faults(body="trickle")
    started = time.monotonic()
    with client.stream("GET", MESSAGES_TOTAL_PATH) as response:
        assert response.status_code == 200
        assert next(response.iter_raw()) == b"{"
    assert time.monotonic() - started < 1.0


def wait_until_idle(sim: Simulator, in_flight: int = 0) -> int:
    """Wait up to 2 s for ``in_flight`` API requests; returns the last count seen."""
    deadline = time.monotonic() + 2
    while (current := sim.stats()["in_flight"]) != in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(current)


def test_hang_holds_requests_until_faults_change(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim, timeout=0.3)
    sim.set_faults(body="hang", count=1)
    with pytest.raises(httpx.ReadTimeout):
        client.get(MESSAGES_TOTAL_PATH)
    # count=1 was used up, so others get through while the first one is still held.
    assert client.get(MESSAGES_TOTAL_PATH).json() == {"total": 0}
    assert sim.stats()["in_flight"] == 1
    sim.set_faults()
    assert wait_until_idle(sim) == 0


def test_stopping_a_server_releases_only_its_own_held_requests(serve: Serve) -> None:
    sim = explicit_sim()
    kept = serve(sim)
    stopped = start_simulator(sim)
    sim.set_faults(body="hang")
    held = threading.Thread(
        target=lambda: httpx.get(
            f"{stopped.url}{MESSAGES_TOTAL_PATH}", headers={API_KEY_HEADER: KEY}, timeout=5
        )
    )
    held.start()
    assert wait_until_idle(sim, in_flight=1) == 1
    stopped.stop()
    held.join()
    assert wait_until_idle(sim) == 0
    # The other server still honours faults that wait.
    sim.set_faults(latency=0.2)
    started = time.monotonic()
    assert kept.get(MESSAGES_TOTAL_PATH).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_reset_drops_the_connection_mid_body(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    sim.set_faults(body="reset")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(MESSAGES_PER_DAY_PATH)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"body": "nope"}, "body must be one of"),
        ({"status": 99}, "status must be"),
        ({"count": 0}, "count must be"),
        ({"latency": -1}, "latency must be"),
        ({"paths": ["/admin/stats/unknown"]}, "paths must be among"),
    ],
)
def test_set_faults_rejects_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        explicit_sim().set_faults(**options)


def test_set_faults_rejects_a_bare_string_and_unknown_options() -> None:
    sim = explicit_sim()
    with pytest.raises(TypeError):
        sim.set_faults(keys=KEY)
    with pytest.raises(TypeError):
        sim.set_faults(colour="red")  # type: ignore[call-arg]


# ----------------------------------------------------------------------------- control + stats


def test_control_endpoints(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    post = client.post

    assert post("/_sim/faults", json={"status": 429, "retry_after": "1", "count": 1}).json() == {
        "ok": True
    }
    assert client.get("/_sim/faults").json()["status"] == 429
    assert client.get(MESSAGES_TOTAL_PATH).status_code == 429
    assert client.get(MESSAGES_TOTAL_PATH).status_code == 200
    assert_error_body(post("/_sim/faults", json={"body": "nope"}), 400)
    assert_error_body(post("/_sim/faults", content=b"[1, 2]"), 400)

    events = {"api_key": KEY, "kind": "messages", "timestamps": [NOW - 1, NOW - 2]}
    assert post("/_sim/events", json=events).json() == {"added": 2}
    assert post("/_sim/events", json={"api_key": KEY, "kind": 4, "count": 3}).json() == {"added": 3}
    assert_error_body(post("/_sim/events", json={"api_key": "nope", "kind": 4, "count": 1}), 400)
    assert client.get(MESSAGES_TOTAL_PATH).json() == {"total": 2}
    assert client.get(DIALOGS_TOTAL_PATH, params=[("types[]", 4)]).json() == {"total": 3}

    stats = client.get("/_sim/stats").json()
    assert stats["requests"] == 4
    assert stats["by_path"] == {MESSAGES_TOTAL_PATH: 3, DIALOGS_TOTAL_PATH: 1}
    assert post("/_sim/stats/reset").json() == {"ok": True}
    assert client.get("/_sim/stats").json()["requests"] == 0

    post("/_sim/faults", json={"status": 500})
    assert post("/_sim/reset").json() == {"ok": True}
    assert client.get(MESSAGES_TOTAL_PATH).json() == {"total": 0}
    assert_error_body(client.get("/_sim/reset"), 405)


def test_stats_record_recent_requests(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    client.get(MESSAGES_PER_DAY_PATH, params={"limit": 5})
    client.get(DIALOGS_TOTAL_PATH, headers={API_KEY_HEADER: "nope"})
    client.get("/not/an/api/path")
    recent = sim.stats()["recent"]
    assert [{k: r[k] for k in ("path", "query", "key_ok")} for r in recent] == [
        {"path": MESSAGES_PER_DAY_PATH, "query": "limit=5", "key_ok": True},
        {"path": DIALOGS_TOTAL_PATH, "query": "", "key_ok": False},
    ]
    assert recent[0]["time"] <= recent[1]["time"] <= time.time()
    sim.reset_stats()
    assert sim.stats() == {
        "requests": 0,
        "by_path": {},
        "in_flight": 0,
        "peak_in_flight": 0,
        "recent": [],
    }


def test_latency_and_peak_in_flight(serve: Serve) -> None:
    sim = explicit_sim()
    client = serve(sim)
    sim.set_faults(latency=0.3)
    codes: list[int] = []
    threads = [
        threading.Thread(target=lambda: codes.append(client.get(MESSAGES_TOTAL_PATH).status_code))
        for _ in range(5)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= 0.3
    assert codes == [200] * 5
    # A request leaves in_flight once its body is sent and closed, which may come just
    # after the client has read it.
    assert wait_until_idle(sim) == 0
    stats = sim.stats()
    assert stats["peak_in_flight"] == 5
    assert stats["requests"] == 5


def test_ground_truth_refuses_unknown_keys_and_kinds() -> None:
    sim = explicit_sim()
    with pytest.raises(ValueError, match="unknown API key"):
        sim.count("nope", "messages")
    with pytest.raises(ValueError, match="kind must be"):
        sim.add_events(KEY, "calls", [NOW])
    with pytest.raises(ValueError, match="bad timestamp"):
        sim.add_events(KEY, "messages", [float("nan")])


# ----------------------------------------------------------------------------- the demo's app


def test_demo_app_answers_the_documented_api() -> None:
    """``exporter.simulator``'s own app, as ``--demo`` serves it: no rig around it."""
    app = demo.Simulator(["demo-key"], "Europe/Berlin")
    zone = ZoneInfo("Europe/Berlin")
    today = datetime.now(zone).date()
    midnight = day_start(today, zone)

    def get(path: str, query: str = "", key: str = "demo-key") -> tuple[int, Any]:
        request = Request("GET", path, {API_KEY_HEADER.lower(): key}, query=query)
        response = asyncio.run(app(request))
        assert ("Content-Type", "application/json") in response.headers
        return response.status, json.loads(response.body)

    assert get(MESSAGES_TOTAL_PATH, key="wrong") == (
        401,
        {"errors": {"base": ["Required session does not exist"]}},
    )
    assert get("/admin/stats/calls/made-total")[0] == 404
    assert get(MESSAGES_PER_DAY_PATH, "limit=0")[0] == 422
    assert get(DIALOGS_TOTAL_PATH, "types[]=group")[0] == 422
    # Every day of the history has messages, today too from its first second on.
    status, days = get(MESSAGES_PER_DAY_PATH, f"limit=500&start_date={midnight - 400 * 86400}")
    assert status == 200
    assert len(days) == 401
    assert min(days.values()) > 0
    assert list(days)[-1] == today.isoformat()
    # Pages of ``limit`` days with data, and totals that agree with them.
    window = f"end_date={midnight}"
    pages = [get(MESSAGES_PER_DAY_PATH, f"{window}&limit=150&offset={n}")[1] for n in (0, 150, 300)]
    assert [len(page) for page in pages] == [150, 150, 100]
    merged = {day: n for page in pages for day, n in page.items()}
    assert get(MESSAGES_TOTAL_PATH, window)[1] == {"total": sum(merged.values())}
    by_type = [get(DIALOGS_TOTAL_PATH, f"{window}&types[]={t}")[1]["total"] for t in range(1, 6)]
    assert get(DIALOGS_TOTAL_PATH, window)[1] == {"total": sum(by_type)}
    assert 0 < sum(by_type) < sum(merged.values()) / 3


# ----------------------------------------------------------------------------- CLI


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.simulator", "--listen", "127.0.0.1:0", "--seed", "5"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline().strip()
        prefix = "simulator listening on "
        assert line.startswith(prefix), line
        response = httpx.get(
            f"{line.removeprefix(prefix)}{MESSAGES_TOTAL_PATH}",
            headers={API_KEY_HEADER: "demo-key"},
            timeout=5,
        )
        assert response.json()["total"] > 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr.read() == ""
    finally:
        process.kill()
        process.wait()
