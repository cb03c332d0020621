"""The wall clock of a running exporter stepped either way (Debian's faketime): polls keep
their interval, and counts age by the time that really passed."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SECRET_KEY, require_tool
from tests.processes import Exporter, wait_until
from tests.simulator import Simulator

pytestmark = pytest.mark.slow

APP = {"app": "default"}
TEN_MINUTES = 600


class WallClock:
    """The offset of a process's wall clock, which faketime reads from a file on every
    call (its monotonic clock is left alone)."""

    def __init__(self, directory: Path) -> None:
        tool = require_tool("faketime", package="faketime")
        # The library the faketime command preloads, used without the command's FAKETIME
        # variable, which would win over the file (and without its fork in between).
        preload = subprocess.run(
            [tool, "-f", "+0", "printenv", "LD_PRELOAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self._file = directory / "faketime-offset"
        self.set(0)
        self.env = {
            "LD_PRELOAD": preload,
            "FAKETIME_TIMESTAMP_FILE": str(self._file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def set(self, seconds: int) -> None:
        """From now on the clock reads ``seconds`` off the real time."""
        partial = self._file.with_suffix(".new")
        partial.write_text(f"{seconds:+d}\n")
        os.replace(partial, self._file)  # never a half-written offset


@pytest.fixture
def wall_clock(tmp_path: Path) -> WallClock:
    return WallClock(tmp_path)


def start(url: str, wall_clock: WallClock, *flags: str) -> Exporter:
    env = {"CONNECTYCUBE_API_KEY": SECRET_KEY, **wall_clock.env}
    timing = ["--poll-interval-seconds", "1", "--request-timeout-seconds", "0.8"]
    return Exporter(["--api-url", url, *timing, *flags], env=env)


def polls(exporter: Exporter) -> float:
    return sum(
        value
        for (name, labels), value in exporter.metrics().items()
        if name == "connectycube_polls_total" and ("app", "default") in labels
    )


def failures(exporter: Exporter) -> float:
    return exporter.value("connectycube_polls_total", outcome="failure", **APP) or 0


@pytest.fixture
def running(
    simulator: tuple[Simulator, str], history: dict[str, float], wall_clock: WallClock
) -> Iterator[Exporter]:
    process = start(simulator[1], wall_clock, "--max-staleness-seconds", "10")
    try:
        process.wait_for_value("connectycube_up", 1, **APP)
        yield process
    finally:
        process.stop()


def test_polls_keep_their_interval_when_the_wall_clock_steps(
    running: Exporter, wall_clock: WallClock
) -> None:
    for offset in (-TEN_MINUTES, +TEN_MINUTES):  # ten minutes back, then twenty forward
        wanted = polls(running) + 3
        wall_clock.set(offset)
        stepped = time.monotonic()
        wait_until(lambda n=wanted: polls(running) >= n, 15, f"3 polls after a step to {offset}")
        # Three polls a second apart, not a burst: the first may come at once, the others
        # on schedule.
        assert time.monotonic() - stepped >= 1.5
    assert running.process.poll() is None


def test_counts_age_by_the_time_really_passed(
    running: Exporter, simulator: tuple[Simulator, str], wall_clock: WallClock
) -> None:
    sim, _ = simulator
    running.wait_for_value("connectycube_messages_sent", 9, **APP)
    sim.set_faults(status=500)  # from now on, no poll succeeds: the counts only age
    running.wait_for_value("connectycube_up", 0, **APP)
    last_success = running.value("connectycube_last_success_timestamp_seconds", **APP)
    assert last_success is not None

    # Ten minutes forward: a count fetched a moment ago is still a moment old.
    failed = failures(running)
    wall_clock.set(+TEN_MINUTES)
    wait_until(lambda: failures(running) > failed, 10, "a poll after the step")
    assert running.value("connectycube_messages_sent", **APP) == 9
    moved = running.value("connectycube_last_success_timestamp_seconds", **APP)
    assert moved == pytest.approx(last_success + TEN_MINUTES, abs=1)

    # Ten minutes back from the real time: the count still goes stale 10 s after it was
    # fetched, and the last success is never later than the exporter's own clock.
    wall_clock.set(-TEN_MINUTES)
    running.wait_for_value("connectycube_messages_sent", None, timeout=30, **APP)
    moved = running.value("connectycube_last_success_timestamp_seconds", **APP)
    assert moved == pytest.approx(last_success - TEN_MINUTES, abs=1)
    assert moved < time.time() - TEN_MINUTES

    sim.set_faults()
    running.wait_for_value("connectycube_messages_sent", 9, timeout=15, **APP)
