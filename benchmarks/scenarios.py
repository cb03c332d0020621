"""What is measured: each design (the exporter, the baseline) polling and being scraped.

First each design polls one app twice, for the cycle after the first. Then, for each
number of apps, it is started with a one-hour poll interval, so that it polls once: its
first cycle gives the cycle's wall time, the API requests and how many were in flight at
once, and the CPU each request cost. Then threads scrape it back to back while nothing
polls; with the fewest apps, also while slow clients hold a thousand connections to it.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO_ROOT, Process, closed_loop, python_env, wait_until
from tests.simulator import Simulator
from tests.slow_clients import SlowClients, sources

DESIGNS = ("exporter", "baseline")
KEY_PREFIX = "bench-"
REQUESTS_PER_APP = 10  # 2 + 2 x 4 dialog types, for both designs
SLOW_ADDRESSES = 26  # loopback sources of the slow clients: 50 each, under the per-address cap
CYCLE_DONE = re.compile(r"cycle (\d+) done in ([0-9.]+) s")
SECOND_POLL = re.compile(r'^connectycube_polls_total\{app="app-0",outcome="success"\} 2', re.M)
POLL_FIGURES = re.compile(
    r'^connectycube_(last_success_timestamp_seconds|poll_duration_seconds)\{app="([^"]+)"\} (\S+)$',
    re.MULTILINE,
)


@dataclass(frozen=True)
class Params:
    """Sizes and durations of one run: ``FULL`` or ``QUICK``."""

    latency: float = 0.2  # seconds the simulated API takes per request
    apps: tuple[int, ...] = (1, 100, 1000)
    baseline_budget: float = 30.0  # the baseline polls at ``latency`` if its cycle fits this
    scrapers: tuple[int, ...] = (1, 20)
    scrape_seconds: float = 2.0
    min_scrapes: int = 200
    max_scrape_seconds: float = 4.0
    slow_clients: tuple[int, int] = (1000, 300)  # slowloris, silent
    slow_seconds: float = 10.0


FULL = Params()
QUICK = Params(
    latency=0.05,
    apps=(1, 5),
    baseline_budget=2.0,
    scrapers=(1, 4),
    scrape_seconds=0.3,
    min_scrapes=10,
    max_scrape_seconds=1.0,
    slow_clients=(100, 30),
    slow_seconds=1.0,
)


@dataclass
class Bench:
    """The simulator the designs poll, the exporter's tree and a scratch folder."""

    simulator: Simulator
    api_url: str
    exporter_path: Path
    workdir: Path
    params: Params

    def start(self, design: str, apps: int, interval: float = 3600) -> Process:
        """``design`` polling ``apps`` apps (``app-0``, ... with keys ``bench-0``, ...)."""
        if design == "baseline":
            args = ["--api-url", self.api_url, "--key-prefix", KEY_PREFIX, "--apps", str(apps)]
            args += ["--interval", f"{interval:g}"]
            return Process("benchmarks.baseline", args, python_env(REPO_ROOT, {}), self.workdir)
        args = ["--listen-address", "127.0.0.1:0", "--api-url", self.api_url]
        args += ["--poll-interval-seconds", f"{interval:g}"]
        env = {}
        if apps == 1:  # as most users run it: the key in the environment
            env["CONNECTYCUBE_API_KEY"] = f"{KEY_PREFIX}0"
            args += ["--app-name", "app-0"]
        else:
            config = self.workdir / f"apps-{apps}.yml"
            lines = ["apps:"]
            for i in range(apps):
                lines += [f"  - name: app-{i}", f"    api_key: {KEY_PREFIX}{i}"]
            config.write_text("\n".join(lines) + "\n")
            args += ["--config-file", str(config)]
        # The scratch folder as working directory: no stray .env is read.
        return Process("exporter", args, python_env(self.exporter_path, env), self.workdir)

    def second_cycle(self, design: str) -> float:
        """Seconds the second poll of one app takes; run first, it also compiles bytecode.

        The exporter's first poll of an app takes two round trips (its first answer
        teaches it how many days the API puts in a page); every later one takes one.
        """
        latency = self.params.latency
        self.simulator.set_faults(latency=latency)
        process = self.start(design, 1, REQUESTS_PER_APP * latency + 0.5)
        try:
            if design == "baseline":
                return float(process.wait_for_line(CYCLE_DONE, 60, count=2)[-1][1].group(2))

            def polled_twice() -> str | None:
                text = process.http.get("/metrics").text
                return text if SECOND_POLL.search(text) else None

            text = wait_until(polled_twice, 60, "the exporter's second poll", 0.05)
            return polls(text)["app-0"]["poll_duration_seconds"]
        finally:
            process.stop()

    def measure(self, design: str, apps: int) -> dict[str, Any]:
        """Every figure of ``design`` polling ``apps`` apps: first cycle, then scrapes."""
        p, sim = self.params, self.simulator
        sequential = apps * REQUESTS_PER_APP * p.latency
        # Where the baseline's cycle would take too long, it is filled at zero latency and
        # its cycle projected from the largest one measured.
        latency = p.latency if design == "exporter" or sequential <= p.baseline_budget else 0.0
        sim.set_faults(latency=latency)
        sim.reset_stats()
        process = self.start(design, apps)
        try:
            cpu = process.cpu_seconds()
            figures = first_cycle(process, design, apps, 120 + sequential)
            requests = sim.stats()
            cpu = process.cpu_seconds() - cpu
            text = process.http.get("/metrics").text
            figures |= {
                "apps": apps,
                "api_latency_s": latency,
                "listening_after_s": round(process.listening_after, 3),
                "api_requests": requests["requests"],
                "peak_in_flight": requests["peak_in_flight"],
                "cpu_per_request_ms": round(1000 * cpu / max(1, requests["requests"]), 3),
                "rss_bytes": process.rss_bytes(),
                "series": sum(1 for line in text.splitlines() if not line.startswith("#")),
                "text_bytes": len(text.encode()),
            }
            sim.reset_stats()
            url = process.url + "/metrics"
            figures["scrapes"] = {
                str(c): closed_loop(url, c, p.scrape_seconds, p.min_scrapes, p.max_scrape_seconds)
                for c in p.scrapers
            }
            figures["api_requests_while_scraping"] = sim.stats()["requests"]
            if apps == min(p.apps):
                figures["under_slow_clients"] = under_slow_clients(process.url, p)
        finally:
            process.stop()
        return figures

    def run(self) -> dict[str, Any]:
        """Every figure of every design; progress on stderr."""
        results: dict[str, Any] = {"second_cycle_s": {}, "by_apps": {}}
        for design in DESIGNS:
            print(f"{design}, second poll of 1 app ...", file=sys.stderr, flush=True)
            results["second_cycle_s"][design] = self.second_cycle(design)
        for apps in self.params.apps:
            for design in DESIGNS:
                print(f"{design}, {apps} app(s) ...", file=sys.stderr, flush=True)
                results["by_apps"].setdefault(design, {})[apps] = self.measure(design, apps)
        return results


def first_cycle(process: Process, design: str, apps: int, timeout: float) -> dict[str, Any]:
    """The first poll of every app: its wall time, and when the design had data to serve.

    The baseline says so itself. The exporter is ready when ``/-/ready`` answers 200 (every
    app polled); its cycle runs from the first poll's start to the last one's end, as its
    ``connectycube_last_success_timestamp_seconds`` and ``connectycube_poll_duration_seconds``
    tell of each app.
    """
    if design == "baseline":
        at, match = process.wait_for_line(CYCLE_DONE, timeout)[0]
        return {
            "cycle_s": float(match.group(2)),
            "apps_failed": sum(1 for _, line in process.lines if "poll failed" in line),
            "ready_after_s": round(at - process.started, 3),
        }

    def ready() -> bool:
        process.check_alive()
        return process.http.get("/-/ready").status_code == 200

    # Often at first (the start-up figure needs it), then not to slow a long cycle down.
    wait_until(ready, timeout, "the exporter's /-/ready", 0.01 if apps == 1 else 0.1)
    ready_after = time.monotonic() - process.started
    found = polls(process.http.get("/metrics").text).values()
    succeeded = [app for app in found if "last_success_timestamp_seconds" in app]
    ends = [app["last_success_timestamp_seconds"] for app in succeeded]
    starts = [
        app["last_success_timestamp_seconds"] - app["poll_duration_seconds"] for app in succeeded
    ]
    return {
        "cycle_s": round(max(ends) - min(starts), 4) if ends else None,
        "apps_failed": apps - len(ends),
        "ready_after_s": round(ready_after, 3),
    }


def polls(text: str) -> dict[str, dict[str, float]]:
    """Each app's last success and last poll duration, from the exporter's /metrics."""
    found: dict[str, dict[str, float]] = {}
    for name, app, value in POLL_FIGURES.findall(text):
        found.setdefault(app, {})[name] = float(value)
    return found


def under_slow_clients(url: str, p: Params) -> dict[str, Any]:
    """One scraper while slow clients hold connections, connecting again when dropped.

    Slowloris clients trickle a header line every 2 s, never finishing; silent ones send
    nothing. They come from ``SLOW_ADDRESSES`` loopback addresses.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    slowloris, silent = p.slow_clients
    addresses = sources(SLOW_ADDRESSES)
    with SlowClients(
        host, int(port), slowloris=slowloris, silent=silent, source_addresses=addresses
    ) as clients:
        time.sleep(1.5)  # each connects within its first second
        held = clients.stats()["open"]
        scrapes = closed_loop(
            url + "/metrics", 1, p.slow_seconds, p.min_scrapes, 2 * p.slow_seconds
        )
        return {**scrapes, "slow_clients_open_at_start": held, "slow_clients": clients.stats()}
