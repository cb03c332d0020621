"""Starting the three designs under test, and reading their progress.

* ``ExporterRun``: ``python -m exporter`` from ``--exporter-path``; one app via
  ``CONNECTYCUBE_API_KEY``, several via a generated YAML config file.
* ``BaselineRun``: ``python -m benchmarks.baseline``, the afternoon exporter.
* ``ScrapeTimeRun``: ``python -m benchmarks.scrape_time``, one API round per scrape.

All of them label apps ``app-0``, ``app-1``, ... and use the simulator keys
``bench-0``, ``bench-1``, ...
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import (
    CYCLE_DONE,
    KEY_PREFIX,
    REPO_ROOT,
    BenchmarkError,
    Process,
    Simulator,
    parse_samples,
    python_env,
    wait_until,
)

CAP_FLAG = "--max-concurrent-requests"


@dataclass
class Bench:
    """What every scenario needs: the simulator, the exporter's tree and a scratch folder."""

    simulator: Simulator
    exporter_path: Path
    workdir: Path
    exporter_flags: frozenset[str] = frozenset()
    memo: dict[Any, Any] = field(default_factory=dict)  # figures one scenario lends another

    @classmethod
    def create(cls, simulator: Simulator, exporter_path: Path, workdir: Path) -> Bench:
        """Also runs ``python -m exporter --help`` and one short exporter: it learns which
        flags the tree has (an older checkout may lack some) and leaves the bytecode
        compiled and cached, so that start-up figures do not include compiling."""
        help_text = subprocess.run(
            [sys.executable, "-P", "-m", "exporter", "--help"],
            env=python_env(exporter_path),
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
        flags = frozenset(word.rstrip(",") for word in help_text.split() if word.startswith("--"))
        if "--listen-address" not in flags:
            raise BenchmarkError(f"{exporter_path}: `python -m exporter --help` failed")
        subprocess.run(
            [sys.executable, "-P", "-c", "import benchmarks.baseline, benchmarks.scrape_time"],
            env=python_env(REPO_ROOT),
            timeout=60,
            check=True,
        )
        bench = cls(simulator, exporter_path, workdir, flags)
        # One real start too: the scheduler and the event loop import more once running.
        warm = ExporterRun(bench, 1, 60)
        try:
            warm.wait_ready(30)
        finally:
            warm.stop()
        return bench

    def apps_config(self, apps: int) -> Path:
        """A YAML config file listing ``apps`` apps with distinct keys."""
        path = self.workdir / f"apps-{apps}.yml"
        if not path.exists():
            lines = ["apps:"]
            for i in range(apps):
                lines += [f"  - name: app-{i}", f"    api_key: {KEY_PREFIX}{i}"]
            path.write_text("\n".join(lines) + "\n")
        return path


class ExporterRun:
    """The exporter polling ``apps`` apps of the simulator every ``interval`` seconds."""

    def __init__(
        self,
        bench: Bench,
        apps: int,
        interval: float,
        cap: int | None = None,
        api: Simulator | None = None,
    ) -> None:
        """``api``: another simulator to poll than ``bench.simulator``."""
        self.apps = apps
        args = [
            "--listen-address",
            "127.0.0.1:0",
            "--api-url",
            (api or bench.simulator).url,
            "--poll-interval-seconds",
            f"{interval:g}",
        ]
        env = {}
        if apps == 1:
            env["CONNECTYCUBE_API_KEY"] = f"{KEY_PREFIX}0"
            args += ["--app-name", "app-0"]
        else:
            args += ["--config-file", str(bench.apps_config(apps))]
        if cap is not None:
            if CAP_FLAG not in bench.exporter_flags:
                raise BenchmarkError(f"this exporter has no {CAP_FLAG}")
            args += [CAP_FLAG, str(cap)]
        argv = [sys.executable, "-P", "-m", "exporter", *args]
        # The scratch folder as working directory: no stray .env is read.
        self.process = Process(
            "exporter", argv, python_env(bench.exporter_path, env), bench.workdir
        )
        self.url, self.listening_after = self.process.listening_url()
        self._http = httpx.Client(base_url=self.url, timeout=30)
        # Seconds from start at which /-/ready said 200 before every app was polled.
        self.premature_ready: float | None = None

    def is_ready(self) -> bool:
        self.process.check_alive()
        response = self._http.get("/-/ready")
        if response.status_code == 404:  # a tree without the probe: every app polled once
            return self.all_polled()
        return response.status_code == 200

    def all_polled(self) -> bool:
        """/metrics shows a finished poll (successful or not) for every app."""
        apps = self.polled_apps()
        return sum(1 for a in apps.values() if a.get("success", 0) + a.get("failure", 0)) >= (
            self.apps
        )

    def wait_ready(self, timeout: float) -> float:
        """Seconds from process start until /-/ready answers 200 with every app polled.

        Asks every 10 ms for the first two seconds (start-up figures need it), then
        every 100 ms, so that a long first cycle is not slowed by the asking. A 200 is
        checked against /metrics: one that comes before the polls is noted in
        ``premature_ready`` (with the time it came) and waiting goes on.
        """
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self.is_ready():
                if self.all_polled():
                    return time.monotonic() - self.process.started
                if self.premature_ready is None:
                    self.premature_ready = now - self.process.started
            if now > deadline:
                raise BenchmarkError(f"exporter not ready after {timeout:g}s:\n{self.process.logs}")
            if self.premature_ready is not None:
                time.sleep(0.5)  # /metrics of many apps is a big page to read
            else:
                time.sleep(0.01 if now - self.process.started < 2 else 0.1)

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        response.raise_for_status()
        return response.text

    def polled_apps(self) -> dict[str, dict[str, float]]:
        """Per app: successful/failed polls, last success and last poll duration."""
        apps: dict[str, dict[str, float]] = {}
        names = (
            "connectycube_polls_total",
            "connectycube_last_success_timestamp_seconds",
            "connectycube_poll_duration_seconds",
        )
        for name, labels, value in parse_samples(self.metrics(), names):
            app = apps.setdefault(labels.get("app", ""), {})
            if name == "connectycube_polls_total":
                app[labels.get("outcome", "")] = value
            else:
                app[name.removeprefix("connectycube_")] = value
        return apps

    def cycle(self) -> dict[str, Any]:
        """The first cycle over every app, from the exporter's own figures.

        Each app's poll started at ``last_success - poll_duration`` and ended at
        ``last_success``; the cycle is the first start to the last end.
        """
        # /-/ready said every app was polled; /metrics must show all of them too.
        apps = wait_until(
            lambda: (found := self.polled_apps()) and len(found) >= self.apps and found,
            5,
            f"every app's poll figures on /metrics (apps: {self.apps})",
            0.1,
        )
        ends = [a["last_success_timestamp_seconds"] for a in apps.values() if "success" in a]
        starts = [
            a["last_success_timestamp_seconds"] - a["poll_duration_seconds"]
            for a in apps.values()
            if "success" in a
        ]
        return {
            "apps_succeeded": len(ends),
            "apps_failed": sum(1 for a in apps.values() if a.get("failure")),
            "cycle_s": round(max(ends) - min(starts), 4) if ends else None,
            "slowest_app_poll_s": round(max(a["poll_duration_seconds"] for a in apps.values()), 4),
        }

    def stop(self) -> None:
        self._http.close()
        self.process.stop(wait=False)


class _ComparedDesign:
    """What the two designs compared with the exporter have in common."""

    url: str
    process: Process

    def metrics(self) -> str:
        response = httpx.get(self.url + "/metrics", timeout=30)
        response.raise_for_status()
        return response.text

    def stop(self) -> None:
        self.process.stop()


class BaselineRun(_ComparedDesign):
    """The afternoon exporter; it reports each finished cycle on stderr."""

    def __init__(
        self, bench: Bench, apps: int, interval: float, api: Simulator | None = None
    ) -> None:
        self.apps = apps
        argv = [
            sys.executable,
            "-P",
            "-m",
            "benchmarks.baseline",
            "--api-url",
            (api or bench.simulator).url,
            "--key-prefix",
            KEY_PREFIX,
            "--apps",
            str(apps),
            "--interval",
            f"{interval:g}",
        ]
        self.process = Process("baseline", argv, python_env(REPO_ROOT), bench.workdir)
        self.url, self.listening_after = self.process.listening_url()

    def wait_cycles(self, count: int, timeout: float) -> list[tuple[float, float]]:
        """(arrival time, seconds) of the first ``count`` finished cycles."""
        found = self.process.wait_for_line(CYCLE_DONE, timeout, count)
        return [(at, float(match.group(2))) for at, match in found]


class ScrapeTimeRun(_ComparedDesign):
    """The scrape-time design: nothing happens until someone scrapes."""

    def __init__(self, bench: Bench, apps: int) -> None:
        self.apps = apps
        argv = [
            sys.executable,
            "-P",
            "-m",
            "benchmarks.scrape_time",
            "--api-url",
            bench.simulator.url,
            "--key-prefix",
            KEY_PREFIX,
            "--apps",
            str(apps),
        ]
        self.process = Process("scrape-time", argv, python_env(REPO_ROOT), bench.workdir)
        self.url, self.listening_after = self.process.listening_url()
