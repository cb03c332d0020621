"""The real exporter process polling the simulator over loopback HTTP."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import OTHER_KEY, SECRET_KEY, require_tool
from tests.processes import Exporter, run_exporter_once, start_exporter
from tests.simulator import (
    MESSAGES_TOTAL_PATH,
    PLAN_FORBIDDEN_MESSAGE,
    Simulator,
    Variant,
    start_simulator,
)

pytestmark = pytest.mark.slow


def start(url: str, *args: str, key: str = SECRET_KEY) -> Exporter:
    return start_exporter(url, *args, key=key)


@pytest.fixture
def exporter(simulator: tuple[Simulator, str], history: dict[str, float]) -> Iterator[Exporter]:
    process = start(simulator[1])
    try:
        process.wait_for_value("connectycube_up", 1, app="default")
        yield process
    finally:
        process.stop()  # also when the start-up wait failed: no stray process


def test_serves_exact_counts(exporter: Exporter) -> None:
    metrics = exporter.metrics()

    def value(name: str, **labels: str) -> float:
        return metrics[(name, frozenset({"app": "default", **labels}.items()))]

    assert value("connectycube_messages_sent") == 9
    assert value("connectycube_messages_sent_today") == 4
    assert value("connectycube_messages_sent_yesterday") == 2
    assert value("connectycube_dialogs_created_yesterday", dialog_type="group") == 1
    assert value("connectycube_dialogs_created_yesterday", dialog_type="private") == 0
    expected = {"broadcast": (1, 0), "group": (3, 2), "private": (5, 5), "public": (0, 0)}
    for label, (total, today) in expected.items():
        assert value("connectycube_dialogs_created", dialog_type=label) == total
        assert value("connectycube_dialogs_created_today", dialog_type=label) == today
    assert value("connectycube_up") == 1
    assert time.time() - value("connectycube_last_success_timestamp_seconds") < 5
    assert (
        value("connectycube_api_requests_total", endpoint="messages/sent-total", outcome="success")
        >= 1
    )


def test_follows_new_activity(exporter: Exporter, simulator: tuple[Simulator, str]) -> None:
    sim, _ = simulator
    sim.add_events(SECRET_KEY, "messages", [time.time()] * 3)
    sim.add_events(SECRET_KEY, 4, [time.time()])
    exporter.wait_for_value("connectycube_messages_sent", 12, app="default")
    exporter.wait_for_value("connectycube_messages_sent_today", 7, app="default")
    exporter.wait_for_value(
        "connectycube_dialogs_created_today", 1, app="default", dialog_type="public"
    )


def test_one_poll_is_fifteen_requests_with_bracketed_types(
    exporter: Exporter, simulator: tuple[Simulator, str]
) -> None:
    sim, _ = simulator
    exporter.stop()
    sim.reset_stats()
    process = start(simulator[1], "--poll-interval-seconds", "3600")
    try:
        process.wait_for_value("connectycube_up", 1, app="default")
        stats = sim.stats()
    finally:
        process.stop()
    # Per kind: the all-time total, and the per-day answer with the total that proves it.
    assert stats["requests"] == 15
    dialog_queries = [r["query"] for r in stats["recent"] if "/dialogs/" in r["path"]]
    types = re.findall(r"types\[\]=(\d+)", "&".join(dialog_queries))
    assert sorted(types) == sorted("111222333444")
    assert all(re.fullmatch(r"[^%]*types\[\]=\d", q) for q in dialog_queries)
    for request in stats["recent"]:
        start_date, end_date = (int(v) for v in re.findall(r"_date=(\d+)", request["query"]))
        # Ends at tomorrow's UTC midnight: an inclusive end adds only tomorrow's first second.
        assert end_date % 86400 == 0
        assert end_date - 86400 < time.time() < end_date
        if start_date != 1:  # all time, in a window: the API may refuse none
            # Yesterday and today from a second before yesterday's midnight, per day and in
            # total: an exclusive start still holds an event at exactly midnight.
            assert end_date - start_date == 2 * 86400 + 1
    windows = Counter(
        r["path"].endswith("-per-day") for r in stats["recent"] if "start_date=1&" not in r["query"]
    )
    assert windows == {True: 5, False: 5}


def key_of(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset({"app": "default", **labels}.items()))


def test_api_unreachable_then_back(simulator: tuple[Simulator, str], history: dict) -> None:
    sim, _ = simulator
    server = start_simulator(sim)
    process = start(server.url)
    try:
        process.wait_for_value("connectycube_up", 1, app="default")
        server.stop()
        process.wait_for_value("connectycube_up", 0, app="default")
        # A pooled connection may see the server go as a read error rather than a refusal.
        assert re.search(
            r"(ConnectError|ReadError|RemoteProtocolError)", process.wait_for_log("poll failed")
        )
        assert process.value("connectycube_messages_sent", app="default") == 9
        errors = process.value(
            "connectycube_api_requests_total",
            app="default",
            endpoint="messages/sent-total",
            outcome="connection_error",
        )
        assert errors
        assert errors >= 1
    finally:
        assert process.stop() == 0


def test_rejected_key_is_down_and_named(simulator: tuple[Simulator, str]) -> None:
    process = start(simulator[1], key="sk-not-known-to-the-api")
    try:
        process.wait_for_value("connectycube_up", 0, app="default")
        line = process.wait_for_log("API key rejected")
        assert "app default" in line
        assert "HTTP 401" in line
        assert process.value("connectycube_messages_sent", app="default") is None
        assert process.get("/-/ready").status_code == 200  # attempted, though it failed
    finally:
        process.stop()


def test_a_plan_without_the_admin_api_is_named() -> None:
    sim = Simulator(
        api_keys=[], variants={SECRET_KEY: Variant(plan_forbidden=True)}, random_history=False
    )
    server = start_simulator(sim)
    process = start(server.url, key=SECRET_KEY)
    try:
        process.wait_for_value("connectycube_up", 0, app="default")
        line = process.wait_for_log("access refused")
        assert "API key recognised but access refused (HTTP 403: " in line
        assert "the Admin API needs the Advanced plan or higher" in line
        assert PLAN_FORBIDDEN_MESSAGE in line  # the API's own words
    finally:
        process.stop()
        server.stop()
    assert SECRET_KEY not in process.logs


@pytest.mark.parametrize("shape", ["object", "list"])
def test_an_error_inside_a_200_is_a_failed_request_with_the_apis_words(shape: str) -> None:
    sim = Simulator(
        api_keys=[], variants={SECRET_KEY: Variant(error_shape=shape)}, random_history=False
    )
    sim.set_faults(body="error_body", paths=[MESSAGES_TOTAL_PATH])
    server = start_simulator(sim)
    process = start(server.url, key=SECRET_KEY)
    try:
        process.wait_for_value("connectycube_up", 0, app="default")
        # Polls every 0.3 s: one that ran out of time on a busy machine may come first.
        process.wait_for_log(r"poll failed.*messages/sent-total: HTTP 200: simulated error")
        outcome = process.value(
            "connectycube_api_requests_total",
            app="default",
            endpoint="messages/sent-total",
            outcome="http_error",
        )
        assert outcome is not None
        assert outcome >= 1
    finally:
        process.stop()
        server.stop()


def test_dialog_type_names_follow_the_setting_and_the_config_file(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    config = tmp_path / "apps.yml"
    config.write_text(
        f"apps:\n"
        f"  - name: sdk\n    api_key: {SECRET_KEY}\n    dialog_type_names: {{2: team}}\n"
        f"  - name: docs\n    api_key: {OTHER_KEY}\n"
    )
    process = Exporter(
        ["--config-file", str(config), "--api-url", simulator[1]],
        env={"CONNECTYCUBE_DIALOG_TYPE_NAMES": "1=public,4=broadcast"},
    )
    try:
        process.wait_for_value("connectycube_up", 1, app="sdk")
        process.wait_for_value("connectycube_up", 1, app="docs")
        names = {
            app: {
                dict(labels)["dialog_type"]
                for (name, labels) in process.metrics()
                if name == "connectycube_dialogs_created" and ("app", app) in labels
            }
            for app in ("sdk", "docs")
        }
        # The setting renames 1 and 4 for every app; the file renames 2 for one app.
        assert names == {
            "sdk": {"public", "team", "private", "broadcast"},
            "docs": {"public", "group", "private", "broadcast"},
        }
        # The SDK's "public" is code 1: one dialog all time in the known history.
        assert process.value("connectycube_dialogs_created", app="sdk", dialog_type="public") == 1
    finally:
        process.stop()


def test_several_apps_from_one_config_file(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    (tmp_path / "prod.key").write_text(SECRET_KEY + "\n")
    config = tmp_path / "apps.yml"
    config.write_text(
        f"apps:\n"
        f"  - name: prod\n    api_key_file: {tmp_path / 'prod.key'}\n"
        f"  - name: staging\n    api_key: {OTHER_KEY}\n    dialog_types: [2, 5]\n"
        f"  - name: broken\n    api_key: sk-revoked\n"
    )
    process = Exporter(
        ["--config-file", str(config), "--api-url", simulator[1], "--poll-interval-seconds", "0.3"]
    )
    try:
        process.wait_for_value("connectycube_up", 1, app="prod")
        process.wait_for_value("connectycube_up", 1, app="staging")
        process.wait_for_value("connectycube_up", 0, app="broken")
        assert process.value("connectycube_messages_sent", app="prod") == 9
        assert process.value("connectycube_messages_sent", app="staging") == 17
        assert process.value("connectycube_messages_sent_today", app="staging") == 6
        labels = {
            dict(labels).get("dialog_type")
            for (name, labels) in process.metrics()
            if name == "connectycube_dialogs_created" and ("app", "staging") in labels
        }
        assert labels == {"group", "meeting"}
    finally:
        process.stop()


def test_timezone_decides_which_day_is_today(tmp_path: Path) -> None:
    zone = "Pacific/Kiritimati"  # UTC+14: its day and the UTC day differ most of the time
    sim = Simulator(api_keys=[SECRET_KEY], random_history=False, timezone=zone)
    server = start_simulator(sim)
    local_midnight = (
        datetime.now(UTC)
        .astimezone(__import__("zoneinfo").ZoneInfo(zone))
        .replace(hour=0, minute=0, second=0, microsecond=0)
        .timestamp()
    )
    sim.add_events(SECRET_KEY, "messages", [local_midnight] * 2 + [local_midnight - 1] * 5)
    process = start(server.url, "--timezone", zone)
    try:
        process.wait_for_value("connectycube_messages_sent", 7, app="default")
        assert process.value("connectycube_messages_sent_today", app="default") == 2
    finally:
        process.stop()
        server.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_exit_cleanly(simulator: tuple[Simulator, str], sig: int) -> None:
    process = start(simulator[1])
    process.wait_for_value("connectycube_up", 1, app="default")
    started = time.monotonic()
    assert process.stop(sig) == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in process.logs


def test_stops_cleanly_while_a_request_hangs(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    process = start(url, "--request-timeout-seconds", "30")
    process.wait_for_value("connectycube_up", 1, app="default")
    sim.set_faults(body="hang")
    time.sleep(0.5)
    assert process.stop() == 0
    assert "Traceback" not in process.logs


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, "CONNECTYCUBE_API_KEY or CONNECTYCUBE_API_KEY_FILE: an API key is required"),
        (
            ["--poll-interval-seconds", "often"],
            {"CONNECTYCUBE_API_KEY": SECRET_KEY},
            "CONNECTYCUBE_POLL_INTERVAL_SECONDS (--poll-interval-seconds)",
        ),
        (
            [],
            {"CONNECTYCUBE_API_KEY": SECRET_KEY, "CONNECTYCUBE_TIMEZONE": "Nowhere/City"},
            "unknown IANA time zone 'Nowhere/City'",
        ),
        (
            [],
            {"CONNECTYCUBE_API_KEY_FILE": "/nonexistent/key"},
            "CONNECTYCUBE_API_KEY_FILE (/nonexistent/key): cannot read the file",
        ),
        (["--config-file", "apps.yml"], {}, "CONNECTYCUBE_CONFIG_FILE (apps.yml): invalid YAML"),
    ],
)
def test_bad_configuration_exits_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    (tmp_path / "apps.yml").write_text("apps: [\n")
    result = run_exporter_once(args, env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET_KEY not in result.stderr + result.stdout


def test_port_in_use_is_a_clear_error(simulator: tuple[Simulator, str]) -> None:
    taken = start_simulator(Simulator())
    try:
        result = run_exporter_once(
            ["--api-url", simulator[1], "--listen-address", f"127.0.0.1:{taken.port}"],
            {"CONNECTYCUBE_API_KEY": SECRET_KEY},
        )
    finally:
        taken.stop()
    assert result.returncode == 1
    assert "CONNECTYCUBE_LISTEN_ADDRESS: cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_key_never_shows(simulator: tuple[Simulator, str], history: dict) -> None:
    sim, url = simulator
    process = start(url, "--log-level", "debug")
    try:
        process.wait_for_value("connectycube_up", 1, app="default")
        for fault in ({"status": 401}, {"status": 500}, {"body": "garbage"}, {"latency": 2}):
            sim.set_faults(**fault)
            process.wait_for_value("connectycube_up", 0, app="default")
            sim.set_faults()
            process.wait_for_value("connectycube_up", 1, app="default")
        pages = [process.get(path).text for path in ("/metrics", "/", "/-/ready", "/nope")]
    finally:
        process.stop()
    assert any("DEBUG" in line for line in process.lines)
    for text in [process.logs, *pages]:
        assert SECRET_KEY not in text


def test_json_logs_are_one_object_per_line(simulator: tuple[Simulator, str]) -> None:
    process = start(simulator[1], "--log-format", "json", key="sk-unknown")
    try:
        process.wait_for_log('"level": "WARNING"')
    finally:
        process.stop()

    entries = [json.loads(line) for line in process.lines]
    assert any("API key rejected" in entry["message"] for entry in entries)


def test_demo_needs_no_account_and_looks_alive() -> None:
    process = Exporter(["--demo", "--poll-interval-seconds", "1"])
    try:
        process.wait_for_value("connectycube_up", 1, app="default")
        assert process.value("connectycube_messages_sent", app="default") > 0
        assert process.get("/-/ready").status_code == 200
        # Messages every day, even in the first minutes of one.
        assert process.value("connectycube_messages_sent_yesterday", app="default") > 0
        assert process.value("connectycube_messages_sent_today", app="default") > 0
    finally:
        assert process.stop() == 0


def test_promtool_accepts_the_metrics(exporter: Exporter) -> None:
    promtool = require_tool("promtool")
    text = exporter.get("/metrics").text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_console_script_and_module_agree() -> None:
    script = Path(sys.executable).parent / "connectycube-exporter"
    assert script.exists(), "install the project (pip install -e .) to get the command"
    by_script = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    by_module = run_exporter_once(["--help"])
    assert by_module.returncode == 0
    assert by_script.stdout == by_module.stdout.replace("__main__.py", "connectycube-exporter")
    for flag in (
        "--poll-interval-seconds",
        "--api-key-file",
        "--config-file",
        "--timezone",
        "--listen-address",
        "--dialog-types",
        "--demo",
        "CONNECTYCUBE_LOG_LEVEL",
    ):
        assert flag in by_script.stdout
