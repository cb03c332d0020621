"""A hostile API and network: every fault, retries, Retry-After, deadlines and caps.

Each test runs the real exporter process against the simulator over loopback HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest
import yaml

from exporter.config import load_apps, load_settings
from tests.conftest import OTHER_KEY, SECRET_KEY
from tests.processes import Exporter, start_exporter, wait_until
from tests.simulator import Simulator, start_simulator

pytestmark = pytest.mark.slow

APP = {"app": "default"}
# A poll every 2 s, a 1.8 s deadline and 0.4 s per attempt: the first retry always fits
# (0.4 s attempt + at most 0.5 s backoff + 0.4 s retry), whatever the jitter draws.
DEADLINE_SECONDS = 1.8
TIMING = (
    "--poll-interval-seconds",
    "2",
    "--poll-timeout-seconds",
    str(DEADLINE_SECONDS),
    "--request-timeout-seconds",
    "0.4",
)


@pytest.fixture
def exporter(simulator: tuple[Simulator, str], history: dict[str, float]) -> Iterator[Exporter]:
    process = start_exporter(simulator[1], *TIMING, key=SECRET_KEY)
    try:
        process.wait_for_value("connectycube_up", 1, **APP)
        yield process
    finally:
        process.stop()  # also when the start-up wait failed: no stray process


def requests_per_call(sim: Simulator, since: float, until: float) -> Counter[tuple[str, str]]:
    """How often each (endpoint, query) was asked for in a time window."""
    return Counter(
        (r["path"], r["query"]) for r in sim.stats()["recent"] if since <= r["time"] < until
    )


def first_request_time(sim: Simulator) -> float:
    return min(r["time"] for r in sim.stats()["recent"])


def counts(exporter: Exporter) -> dict:
    return {
        key: value
        for key, value in exporter.metrics().items()
        if key[0].startswith(("connectycube_messages", "connectycube_dialogs"))
    }


def errors(exporter: Exporter, outcome: str) -> float:
    return sum(
        value
        for (name, labels), value in exporter.metrics().items()
        if name == "connectycube_api_requests_total" and ("outcome", outcome) in labels
    )


# fault, outcome counted, words in the log line, retried
FAULTS = [
    pytest.param({"status": 429}, "http_error", "HTTP 429", True, id="429"),
    pytest.param({"status": 500}, "http_error", "HTTP 500: simulated error", True, id="500"),
    pytest.param({"status": 502}, "http_error", "HTTP 502", True, id="502"),
    pytest.param({"status": 503}, "http_error", "HTTP 503", True, id="503"),
    pytest.param({"status": 504}, "http_error", "HTTP 504", True, id="504"),
    pytest.param({"status": 400}, "http_error", "HTTP 400", False, id="400"),
    pytest.param({"status": 404}, "http_error", "HTTP 404", False, id="404"),
    pytest.param({"status": 422}, "http_error", "HTTP 422", False, id="422"),
    pytest.param({"body": "reset"}, "connection_error", "RemoteProtocolError", True, id="reset"),
    pytest.param({"body": "hang"}, "timeout", "timed out", True, id="never-answers"),
    pytest.param({"body": "trickle"}, "timeout", "timed out", True, id="trickle"),
    pytest.param(
        {"body": "huge", "huge_mb": 50},
        "invalid_response",
        "answer is larger than 1048576 bytes",
        False,
        id="50MB-body",
    ),
    pytest.param({"body": "garbage"}, "invalid_response", "answer is not JSON", False, id="html"),
    pytest.param(
        {"body": "truncated"}, "invalid_response", "answer is not JSON", False, id="truncated"
    ),
    pytest.param(
        {"body": "wrong_shape"},
        "invalid_response",
        'expected an object with "total"',
        False,
        id="wrong-shape",
    ),
    pytest.param({"body": "negative"}, "invalid_response", "is negative", False, id="negative"),
    pytest.param({"body": "float"}, "invalid_response", "is not an integer", False, id="float"),
    pytest.param(
        {"body": "bad_date_key"},
        "invalid_response",
        "messages/sent-per-day: a key is not a YYYY-MM-DD date",
        False,
        id="date-key",
    ),
]


@pytest.mark.parametrize(("fault", "outcome", "logged", "retried"), FAULTS)
def test_fault(
    exporter: Exporter,
    simulator: tuple[Simulator, str],
    fault: dict,
    outcome: str,
    logged: str,
    retried: bool,
) -> None:
    sim, _ = simulator
    before = counts(exporter)
    last_success = exporter.value("connectycube_last_success_timestamp_seconds", **APP)
    sim.reset_stats()
    sim.set_faults(**fault)

    exporter.wait_for_value("connectycube_up", 0, **APP)
    line = exporter.wait_for_log(r"app default: poll failed, \d+ of 10 requests failed")
    assert logged in line
    assert errors(exporter, outcome) > 0
    assert counts(exporter) == before  # the last good values stay
    assert exporter.value("connectycube_last_success_timestamp_seconds", **APP) == last_success

    # The first failing poll: transient failures are retried, at most twice; others never.
    start = first_request_time(sim)
    asked = requests_per_call(sim, start, start + DEADLINE_SECONDS)
    assert len(asked) == 15  # the all-time totals, the per-day windows and their totals
    if retried:
        assert max(asked.values()) >= 2
        assert max(asked.values()) <= 3
    else:
        assert set(asked.values()) == {1}

    sim.set_faults()
    exporter.wait_for_value("connectycube_up", 1, timeout=15, **APP)
    exporter.wait_for_log("app default: poll succeeded again")
    assert exporter.value("connectycube_last_success_timestamp_seconds", **APP) > last_success
    assert exporter.process.poll() is None


def test_connection_refused_then_back(simulator: tuple[Simulator, str], history: dict) -> None:
    sim, _ = simulator
    server = start_simulator(sim)
    port = server.port
    process = start_exporter(server.url, *TIMING, key=SECRET_KEY)
    try:
        process.wait_for_value("connectycube_up", 1, **APP)
        server.stop()
        process.wait_for_value("connectycube_up", 0, **APP)
        process.wait_for_log("poll failed")
        assert errors(process, "connection_error") > 0
        assert process.value("connectycube_messages_sent", **APP) == 9
        server = start_simulator(sim, f"127.0.0.1:{port}")
        process.wait_for_value("connectycube_up", 1, timeout=15, **APP)
    finally:
        process.stop()
        server.stop()


def test_empty_per_day_answer_is_zero_not_a_failure(
    exporter: Exporter, simulator: tuple[Simulator, str]
) -> None:
    sim, _ = simulator
    sim.set_faults(body="empty")
    exporter.wait_for_value("connectycube_messages_sent_today", 0, **APP)
    assert exporter.value("connectycube_up", **APP) == 1
    assert exporter.value("connectycube_messages_sent", **APP) == 9


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_holds_every_request_to_the_app(
    exporter: Exporter, simulator: tuple[Simulator, str], form: str
) -> None:
    sim, _ = simulator
    # The date is set now, up to a poll interval before the 429 is answered: the pause
    # must still outlast the next poll's deadline (2 s + 1.8 s) whichever form it takes.
    pause = 7.0
    value = "7" if form == "seconds" else formatdate(time.time() + pause + 1, usegmt=True)
    sim.reset_stats()
    sim.set_faults(status=429, retry_after=value, count=1)
    exporter.wait_for_value("connectycube_up", 0, **APP)
    [limited] = [r for r in sim.stats()["recent"] if r["time"] == first_request_time(sim)]
    asked_at = limited["time"]
    # Requests of that poll already on the wire may still arrive; nothing after them.
    exporter.wait_for_value("connectycube_up", 1, timeout=15, **APP)
    later = sorted(r["time"] for r in sim.stats()["recent"] if r["time"] > asked_at + 0.2)
    assert later
    # Seconds count from the answer; a date names its moment (to the second).
    hold_until = asked_at + pause if form == "seconds" else parsedate_to_datetime(value).timestamp()
    assert later[0] >= hold_until - 0.1
    assert errors(exporter, "rate_limited") > 0  # polls in the pause sent nothing


def test_rejected_key_is_said_once_not_every_poll(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    process = start_exporter(url, key="sk-revoked-key")
    try:
        process.wait_for_value("connectycube_polls_total", 5, timeout=10, outcome="failure", **APP)
        stats = sim.stats()
    finally:
        process.stop()
    rejected = [line for line in process.lines if "API key rejected" in line]
    assert len(rejected) == 1
    assert "app default" in rejected[0]
    assert "HTTP 401" in rejected[0]
    assert "poll failed" not in process.logs
    # Never retried: fifteen requests a poll.
    assert stats["requests"] % 15 == 0


def test_slow_api_never_piles_up_requests(simulator: tuple[Simulator, str], history: dict) -> None:
    sim, url = simulator
    process = start_exporter(
        url,
        "--poll-interval-seconds",
        "0.5",
        "--poll-timeout-seconds",
        "0.45",
        "--request-timeout-seconds",
        "30",
        key=SECRET_KEY,
    )
    try:
        process.wait_for_value("connectycube_up", 1, **APP)
        proc = Path(f"/proc/{process.process.pid}")
        fds_before = len(list((proc / "fd").iterdir()))
        sim.set_faults(latency=5)
        process.wait_for_value("connectycube_polls_total", 4, timeout=15, outcome="failure", **APP)
        assert "timed out after" in process.wait_for_log("poll failed")
        # Each poll gives up at its deadline; a request already on the wire runs to its end
        # and holds its slot till then: the connections never outnumber the 64 slots.
        assert len(list((proc / "fd").iterdir())) <= fds_before + 64
        assert len(list((proc / "task").iterdir())) < 20
        assert "maximum number of running instances" not in process.logs
    finally:
        sim.set_faults()
        process.stop()


def test_requests_in_flight_are_capped_across_apps(tmp_path: Path) -> None:
    sim = Simulator(key_prefix="sk-app-", random_history=False)
    server = start_simulator(sim)
    config = tmp_path / "apps.yml"
    config.write_text(
        "apps:\n" + "".join(f"  - name: app{i}\n    api_key: sk-app-{i}\n" for i in range(6))
    )
    sim.set_faults(latency=0.2)
    process = start_exporter(
        server.url,
        "--config-file",
        str(config),
        "--max-concurrent-requests",
        "4",
        # 6 apps x 15 requests x 0.2 s / 4 at once: 4.5 s a cycle.
        "--poll-interval-seconds",
        "10",
        "--request-timeout-seconds",
        "2",
    )
    try:
        for i in range(6):
            process.wait_for_value("connectycube_up", 1, timeout=20, app=f"app{i}")
        assert sim.stats()["peak_in_flight"] == 4
    finally:
        process.stop()
        sim.set_faults()
        server.stop()


def test_stale_counts_leave_a_gap(simulator: tuple[Simulator, str], history: dict) -> None:
    sim, url = simulator
    process = start_exporter(url, "--max-staleness-seconds", "1.5", key=SECRET_KEY)
    try:
        process.wait_for_value("connectycube_messages_sent", 9, **APP)
        sim.set_faults(status=500)
        process.wait_for_value("connectycube_up", 0, **APP)
        assert process.value("connectycube_messages_sent", **APP) == 9  # a blip: still shown
        process.wait_for_value("connectycube_messages_sent", None, timeout=5, **APP)
        assert process.value("connectycube_messages_sent_today", **APP) is None
        assert process.value("connectycube_up", **APP) == 0
        sim.set_faults()
        process.wait_for_value("connectycube_messages_sent", 9, **APP)
    finally:
        process.stop()


def write_apps(path: Path, apps: dict[str, str]) -> None:
    path.write_text(
        "apps:\n" + "".join(f"  - name: {name}\n    api_key: {key}\n" for name, key in apps.items())
    )


def test_sighup_reloads_apps_and_keeps_unchanged_ones(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    _sim, url = simulator
    config = tmp_path / "apps.yml"
    write_apps(config, {"prod": SECRET_KEY, "staging": "sk-not-yet-valid"})
    process = start_exporter(url, "--config-file", str(config))
    try:
        process.wait_for_value("connectycube_up", 1, app="prod")
        process.wait_for_value("connectycube_up", 0, app="staging")
        polls_before = process.value("connectycube_polls_total", app="prod", outcome="success")

        # staging's key rotated, qa added; prod unchanged.
        write_apps(config, {"prod": SECRET_KEY, "staging": OTHER_KEY, "qa": OTHER_KEY})
        process.process.send_signal(signal.SIGHUP)
        process.wait_for_log("reloaded: polling 3 app")
        process.wait_for_value("connectycube_up", 1, app="staging")
        process.wait_for_value("connectycube_messages_sent", 17, app="qa")
        # prod kept its values and its counters: nothing was dropped or restarted.
        assert process.value("connectycube_messages_sent", app="prod") == 9
        assert process.value("connectycube_polls_total", app="prod", outcome="success") >= (
            polls_before
        )

        write_apps(config, {"prod": SECRET_KEY})
        process.process.send_signal(signal.SIGHUP)
        process.wait_for_log("reloaded: polling 1 app")
        assert exported_apps(process) == {"prod"}
    finally:
        assert process.stop() == 0


def test_sighup_with_an_invalid_file_keeps_the_running_config(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    _sim, url = simulator
    config = tmp_path / "apps.yml"
    write_apps(config, {"prod": SECRET_KEY})
    process = start_exporter(url, "--config-file", str(config))
    try:
        process.wait_for_value("connectycube_up", 1, app="prod")
        config.write_text("apps:\n  - name: prod\n    api_key: [\n")
        process.process.send_signal(signal.SIGHUP)
        line = process.wait_for_log("reload failed")
        assert "the running configuration stays" in line
        assert "CONNECTYCUBE_CONFIG_FILE" in line
        assert SECRET_KEY not in process.logs
        polls = process.value("connectycube_polls_total", app="prod", outcome="success")
        process.wait_for_value(
            "connectycube_polls_total", polls + 2, timeout=5, app="prod", outcome="success"
        )
        assert process.value("connectycube_up", app="prod") == 1
    finally:
        assert process.stop() == 0


def write_yaml_apps(path: Path, apps: list[dict[str, object]]) -> None:
    """A config file of these entries, written whole at once (as a config reloader would)."""
    partial = path.with_suffix(".new")
    partial.write_text(yaml.safe_dump({"apps": apps}))
    os.replace(partial, path)


@pytest.fixture
def silent_api() -> Iterator[str]:
    """The URL of an API that takes connections and never answers: polls of apps sent there
    wait, costing nothing, until their deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def many_apps(count: int, url: str, prefix: str = "app") -> list[dict[str, object]]:
    return [
        {"name": f"{prefix}-{i}", "api_key": f"key-{i}", "api_url": url, "dialog_types": [2]}
        for i in range(count)
    ]


def exported_apps(process: Exporter, up: bool = False) -> set[str]:
    """The apps /metrics shows; with ``up``, only those whose last poll succeeded."""
    return {
        dict(labels)["app"]
        for (name, labels), value in process.metrics().items()
        if name == "connectycube_up" and (value == 1 or not up)
    }


def test_the_last_sighup_wins(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path, silent_api: str
) -> None:
    _sim, url = simulator
    config = tmp_path / "apps.yml"
    small = [{"name": "prod", "api_key": SECRET_KEY}, {"name": "qa", "api_key": OTHER_KEY}]
    write_yaml_apps(config, small[:1])
    process = start_exporter(url, "--config-file", str(config), "--poll-interval-seconds", "60")
    try:
        process.wait_for_value("connectycube_up", 1, app="prod")
        # A big file, slow to read, then 50 ms later the small one: the small one must be
        # the one in force at the end, however long the big one takes to read.
        big = tmp_path / "big.yml"
        write_yaml_apps(big, many_apps(4000, silent_api))
        started = time.monotonic()
        load_apps(load_settings({"config_file": big}))
        reading = time.monotonic() - started  # what reading it takes on this machine now
        os.replace(big, config)
        process.process.send_signal(signal.SIGHUP)
        time.sleep(0.05)
        write_yaml_apps(config, small)
        process.process.send_signal(signal.SIGHUP)
        process.wait_for_log("reloaded: polling 2 app", timeout=30)
        # Were the big file applied after all, it would be within a read or two.
        time.sleep(max(3 * reading, 3))
        assert "polling 4000 app" not in process.logs.split("reloaded: polling 2 app")[-1]
        assert exported_apps(process) == {"prod", "qa"}

        # The same file again: nothing changes, nothing is polled again.
        polls = process.value("connectycube_polls_total", app="prod", outcome="success")
        process.process.send_signal(signal.SIGHUP)
        process.wait_for_log("reloaded: no change, polling the same 2 app", timeout=30)
        assert process.value("connectycube_polls_total", app="prod", outcome="success") == polls
    finally:
        assert process.stop() == 0


def old_key_readings(process: Exporter) -> set[str]:
    """What /metrics shows of app x that only a successful poll can tell."""
    shown = {name for (name, labels) in process.metrics() if ("app", "x") in labels}
    read = ("connectycube_messages", "connectycube_dialogs", "connectycube_last_success")
    return {name for name in shown if name.startswith(read)}


def test_a_changed_app_shows_nothing_of_its_old_key(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    _sim, url = simulator
    config = tmp_path / "apps.yml"
    write_apps(config, {"x": SECRET_KEY})
    process = start_exporter(
        url,
        "--config-file",
        str(config),
        "--poll-interval-seconds",
        "2",
        "--max-staleness-seconds",
        "600",
    )
    try:
        process.wait_for_value("connectycube_messages_sent", 9, app="x")
        write_apps(config, {"x": "sk-rejected-key"})
        process.process.send_signal(signal.SIGHUP)
        process.wait_for_log("reloaded: polling 1 app")
        # At once, and after the new key's first poll too: nothing read with the old key.
        assert not old_key_readings(process)
        process.wait_for_log("app x: API key rejected")
        assert not old_key_readings(process)
        assert process.value("connectycube_up", app="x") == 0
    finally:
        assert process.stop() == 0


def test_a_removed_app_gives_back_its_request_slots_at_once(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    sim, url = simulator
    config = tmp_path / "apps.yml"
    prod = {"name": "prod", "api_key": SECRET_KEY}
    write_yaml_apps(config, [prod])
    flags = ["--config-file", str(config), "--max-concurrent-requests", "1"]
    timing = ["--poll-interval-seconds", "60", "--request-timeout-seconds", "3"]
    process = start_exporter(url, *flags, *timing)
    try:
        process.wait_for_value("connectycube_up", 1, app="prod")
        # "slow" is added, and its requests hang, holding the one request slot.
        sim.set_faults(body="hang", keys=[OTHER_KEY])
        write_yaml_apps(config, [prod, {"name": "slow", "api_key": OTHER_KEY}])
        process.process.send_signal(signal.SIGHUP)
        wait_until(lambda: sim.stats()["in_flight"] == 1, 10, "slow's request to hang")
        # slow removed, prod changed (so polled at once): prod's poll must get the slot once
        # slow's request on the wire ends (3 s at most), not when slow's poll would have
        # (its retries and other requests, up to its 54 s deadline).
        write_yaml_apps(config, [{**prod, "dialog_types": [2]}])
        process.process.send_signal(signal.SIGHUP)
        process.wait_for_log("reloaded: polling 1 app")
        process.wait_for_value(
            "connectycube_polls_total", 2, timeout=15, app="prod", outcome="success"
        )
        assert "no request slot free" not in process.logs
    finally:
        sim.set_faults()
        assert process.stop() == 0


def test_a_storm_of_reloads_never_starves_the_live_apps(tmp_path: Path) -> None:
    sim = Simulator(key_prefix="key-", random_history=False)
    server = start_simulator(sim)
    sim.set_faults(latency=0.1)
    apps = {name: many_apps(200, server.url, prefix=name) for name in ("a", "b")}
    config = tmp_path / "apps.yml"
    write_yaml_apps(config, apps["a"])
    process = start_exporter(
        server.url,
        "--config-file",
        str(config),
        "--max-concurrent-requests",
        "16",
        "--poll-interval-seconds",
        "30",
        "--request-timeout-seconds",
        "5",
    )
    try:
        # Eleven SIGHUPs, alternating the two files, ending on b.
        for turn in range(11):
            write_yaml_apps(config, apps["b" if turn % 2 == 0 else "a"])
            process.process.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        sim.reset_stats()
        # 200 polls of 4 requests, 16 at a time, 0.1 s each: 5 s, well within the deadline.
        live = {f"b-{i}" for i in range(200)}
        wait_until(lambda: exported_apps(process, up=True) == live, 60, "every live app up")
        # Every request slot at work, and never more requests than slots: none lost with the
        # polls cancelled on the way, none given back before its request ended. (The
        # simulator counts a request until it has closed its body, a moment after the client
        # has read it and begun the next: one more may show.)
        assert 16 <= sim.stats()["peak_in_flight"] <= 17
        assert exported_apps(process) == live
        assert "no request slot free" not in process.logs
        assert "poll failed" not in process.logs
    finally:
        process.stop()
        sim.set_faults()
        server.stop()


def holds_sighup(pid: int) -> bool:
    """Whether the process blocks SIGHUP now, so that one sent waits (Linux's /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    blocked = next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:"))
    return bool(int(blocked, 16) & 1 << (signal.SIGHUP - 1))


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_a_sighup_during_start_is_read_once_started(
    tmp_path: Path, silent_api: str, delay: float
) -> None:
    config = tmp_path / "apps.yml"
    write_yaml_apps(config, many_apps(1000, silent_api))
    new_file = tmp_path / "next.yml"
    write_yaml_apps(new_file, many_apps(1001, silent_api))

    def hang_up(process: subprocess.Popen[str]) -> None:
        # A config reloader: a new file, and a SIGHUP, at some moment of the start. Only
        # once SIGHUP is held: nothing can hold it before Python runs the exporter's first
        # line, tens of milliseconds after exec on an idle machine, more on a busy one.
        sent_at = time.monotonic() + delay
        wait_until(lambda: holds_sighup(process.pid), 10, "SIGHUP held from the start")
        time.sleep(max(0.0, sent_at - time.monotonic()))
        os.replace(new_file, config)
        process.send_signal(signal.SIGHUP)

    process = Exporter(["--config-file", str(config)], started=hang_up)
    try:
        # Read once the first apps are polled: the new file is the one in force, whether
        # the start read it already ("no change") or not.
        process.wait_for_log(r"reloaded: (polling|no change, polling the same) 1001 app", 30)
        assert len(exported_apps(process)) == 1001
    finally:
        assert process.stop() == 0
