"""A simulator with a frozen clock, serving one API key per variant, and what the daemon and
``backfill`` must give for each: the matrix tests' common rig.

The clock is frozen so that the random history does not grow while processes read it:
every count has one true value for the whole test.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from tests.processes import Exporter, Samples, parse_metrics, read_backfill, wait_until
from tests.simulator import RunningServer, Simulator, Variant, start_simulator


@dataclass(frozen=True)
class Served:
    """A running simulator, a config file of one app per key, and the ground truth."""

    sim: Simulator
    server: RunningServer
    zone: str
    today: date
    config: Path
    types: Mapping[int, str]  # the dialog types every app polls, by label

    @property
    def kinds(self) -> list[str | int]:
        return ["messages", *self.types]

    def settings(self) -> list[str]:
        url, config = self.server.url, str(self.config)
        return ["--api-url", url, "--config-file", config, "--timezone", self.zone]

    def midnight(self, day: date) -> int:
        return int(datetime.combine(day, datetime.min.time(), ZoneInfo(self.zone)).timestamp())

    def day_count(self, key: str, kind: str | int, day: date) -> int:
        start, end = self.midnight(day), self.midnight(day + timedelta(days=1))
        return self.sim.per_day(key, kind, start, end, timezone=self.zone).get(day.isoformat(), 0)

    def total_before(self, key: str, kind: str | int, moment: float | None = None) -> int:
        """The total endpoint's own figure (without the events a drifting variant deletes)."""
        return self.sim.total(key, kind, None, moment)

    def expected(self, key: str, kind: str | int, day: date, moment: float | None) -> dict:
        """(metric, labels) -> value of ``day`` as seen at ``moment`` (None: now)."""
        if kind == "messages":
            name, labels = "connectycube_messages_sent", {"app": key}
        else:
            name = "connectycube_dialogs_created"
            labels = {"app": key, "dialog_type": self.types[int(kind)]}
        tag = frozenset(labels.items())
        return {
            (name, tag): self.total_before(key, kind, moment),
            (f"{name}_today", tag): self.day_count(key, kind, day),
            (f"{name}_yesterday", tag): self.day_count(key, kind, day - timedelta(days=1)),
        }

    def poll_once(self) -> Samples:
        """The samples of ``/metrics`` once the real daemon has polled every app."""
        process = Exporter([*self.settings(), "--poll-interval-seconds", "3600"])
        try:
            wait_until(lambda: process.get("/-/ready").status_code == 200, 120, "the first polls")
            return parse_metrics(process.get("/metrics").text)
        finally:
            assert process.stop() == 0

    def backfill(self, days: int, output: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """The real ``backfill`` of the ``days`` before today, to ``output``."""
        since = (self.today - timedelta(days=days)).isoformat()
        command = [sys.executable, "-m", "exporter", "backfill", "--since", since]
        command += ["--output", str(output), "--concurrency", "32", *args, *self.settings()]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)

    def check(self) -> subprocess.CompletedProcess[str]:
        """The real ``check`` of every app."""
        command = [sys.executable, "-m", "exporter", "check", *self.settings()]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)

    def wrong_live(self, samples: Samples, keys: list[str]) -> list[str]:
        """What the daemon's ``/metrics`` gives otherwise than the truth of today."""
        wrong = []
        for key, kind in itertools.product(keys, self.kinds):
            for series, value in self.expected(key, kind, self.today, None).items():
                if samples.get(series) != value:
                    wrong.append(f"{series}: {samples.get(series)} != {value}")
            if samples.get(("connectycube_up", frozenset({"app": key}.items()))) != 1:
                wrong.append(f"{key}: not up")
        return wrong

    def wrong_backfill(self, text: str, keys: list[str], days: int) -> list[str]:
        """What a backfill of the ``days`` before today wrote otherwise than the truth."""
        series = read_backfill(text)
        wrong = []
        every = [self.today - timedelta(days=days - i) for i in range(days)]
        for key, kind, day in itertools.product(keys, self.kinds, every):
            stamp = self.midnight(day + timedelta(days=1)) - 1
            for (metric, labels), value in self.expected(key, kind, day, stamp + 1).items():
                label = dict(labels).get("dialog_type", "")
                got = series.get((metric, key, label), {}).get(stamp)
                if got != value:
                    wrong.append(f"{metric}{{{key},{label}}} at {day}: {got} != {value}")
        return wrong


def serve(
    variants: dict[str, Variant],
    zone: str,
    folder: Path,
    types: Mapping[int, str],
    history_days: int = 60,
    seed: int = 9,
) -> Served:
    """A simulator of ``variants`` (stop its ``server``) and a config file of their apps."""
    frozen = time.time()
    sim = Simulator(
        api_keys=[],
        variants=variants,
        timezone=zone,
        history_days=history_days,
        seed=seed,
        clock=lambda: frozen,
    )
    server = start_simulator(sim)
    config = folder / "apps.yml"
    apps = [{"name": key, "api_key": key, "dialog_types": list(types)} for key in variants]
    config.write_text(yaml.safe_dump({"apps": apps}))
    today = datetime.fromtimestamp(frozen, ZoneInfo(zone)).date()
    return Served(sim, server, zone, today, config, types)
