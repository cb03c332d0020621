"""What is measured: each design (the exporter, the baseline) polling and being scraped.

The API is polled over HTTPS, as the real one is, with keep-alive. First each design polls
one app twice, for the cycle after the first. Then, for each number of apps, it is started
with a one-hour poll interval, so that it polls once: its first cycle gives the cycle's
wall time, the API requests and how many were in flight at once, and the CPU each request
cost. Then threads scrape it back to back while nothing polls; with the fewest apps, also
while slow clients hold a thousand connections to it.

Then the exporter alone, against what it should come close to: its CPU per request in a
later poll cycle over HTTPS beside plain HTTP, and small scrapes on a new connection each
beside ``ThreadingHTTPServer`` serving the same bytes (``benchmarks.reference``); each pair
in turns, the best of several rounds of each.
"""

from __future__ import annotations

import http.client
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from benchmarks.api import Listeners
from benchmarks.harness import (
    PROMETHEUS_HEADERS,
    REPO_ROOT,
    Process,
    closed_loop,
    python_env,
    wait_until,
)
from tests.slow_clients import SlowClients, sources

T = TypeVar("T")

DESIGNS = ("exporter", "baseline")
TRANSPORTS = ("http", "https")
KEY_PREFIX = "bench-"
# A poll's requests with 4 dialog types: 2 + 2 x 4 for the baseline; the exporter's, which
# proves each per-day answer against a total, are 3 + 3 x 4 but go in one round trip too.
REQUESTS_PER_APP = 10
SLOW_ADDRESSES = 26  # loopback sources of the slow clients: 50 each, under the per-address cap
CYCLE_DONE = re.compile(r"cycle (\d+) done in ([0-9.]+) s")
SECOND_POLL = re.compile(r'^connectycube_polls_total\{app="app-0",outcome="success"\} 2', re.M)
POLLS_OK = re.compile(r'^connectycube_polls_total\{app="[^"]+",outcome="success"\} (\S+)$', re.M)
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
    rounds: int = 3  # of each pair below, in turns; the best counts
    transport_apps: int = 300
    transport_interval: float = 50.0  # the first cycle must end before the second starts
    fresh_scrapers: int = 20  # each scrape on a new connection
    fresh_seconds: float = 3.0


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
    rounds=2,
    transport_apps=5,
    transport_interval=3.0,
    fresh_scrapers=4,
    fresh_seconds=0.5,
)


@dataclass
class Bench:
    """The API the designs poll, the exporter's tree and a scratch folder."""

    api: Listeners
    exporter_path: Path
    workdir: Path
    params: Params

    def start(
        self, design: str, apps: int, interval: float = 3600, transport: str = "https"
    ) -> Process:
        """``design`` polling ``apps`` apps (``app-0``, ... with keys ``bench-0``, ...)."""
        api_url = self.api.url(transport)
        env = {"SSL_CERT_FILE": str(self.api.ca_file)}  # trusted by httpx, as by OpenSSL
        if design == "baseline":
            args = ["--api-url", api_url, "--key-prefix", KEY_PREFIX, "--apps", str(apps)]
            args += ["--interval", f"{interval:g}"]
            return Process("benchmarks.baseline", args, python_env(REPO_ROOT, env), self.workdir)
        args = ["--listen-address", "127.0.0.1:0", "--api-url", api_url]
        args += ["--poll-interval-seconds", f"{interval:g}"]
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

        The exporter asks everything of a poll at once: one round trip from an API that
        answers whole pages, as this one does.
        """
        latency = self.params.latency
        self.api.api.latency = latency
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
        p, sim = self.params, self.api.api
        sequential = apps * REQUESTS_PER_APP * p.latency
        # Where the baseline's cycle would take too long, it is filled at zero latency and
        # its cycle projected from the largest one measured.
        latency = p.latency if design == "exporter" or sequential <= p.baseline_budget else 0.0
        sim.latency = latency
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
        rounds = range(self.params.rounds)
        print("exporter, a later cycle over HTTP and HTTPS ...", file=sys.stderr, flush=True)
        results["later_cycle"] = best_of(
            [{t: self.later_cycle(t) for t in TRANSPORTS} for _ in rounds],
            lambda run: -run["cpu_per_request_ms"],
        )
        print("exporter and reference, scrapes on new connections ...", file=sys.stderr, flush=True)
        results["new_connection_scrapes"] = self.new_connection_scrapes()
        return results

    def later_cycle(self, transport: str) -> dict[str, Any]:
        """The exporter's CPU per request in its second poll cycle of ``transport_apps`` apps.

        From ``/-/ready`` (the first cycle done) until the API has answered the second cycle
        and heard nothing more for a moment: the wait between the two costs next to nothing.
        """
        p, api = self.params, self.api.api
        api.latency = p.latency
        process = self.start("exporter", p.transport_apps, p.transport_interval, transport)
        try:
            first = first_cycle(process, "exporter", p.transport_apps, 300)
            overran = api.stats()["in_flight"] > 0  # the second cycle began before /-/ready
            api.reset_stats()
            cpu = process.cpu_seconds()
            wait_until(lambda: api.stats()["requests"], p.transport_interval + 60, "cycle 2")
            seen: list[int] = []

            def answered() -> bool:
                stats = api.stats()
                seen.append(-1 if stats["in_flight"] else stats["requests"])
                return len(seen) > 1 and seen[-1] == seen[-2] >= 0

            wait_until(answered, 300, "the end of cycle 2", 0.25)
            cpu = process.cpu_seconds() - cpu
            stats = api.stats()
            text = process.http.get("/metrics").text
        finally:
            process.stop()
        return {
            "api_url": self.api.url(transport),
            "apps": p.transport_apps,
            "api_requests": stats["requests"],
            "peak_in_flight": stats["peak_in_flight"],
            "cpu_per_request_ms": round(1000 * cpu / max(1, stats["requests"]), 3),
            "first_cycle_s": first["cycle_s"],
            "polls_failed": 2 * p.transport_apps - sum(map(float, POLLS_OK.findall(text))),
            "first_cycle_overran": overran,
        }

    def new_connection_scrapes(self) -> dict[str, Any]:
        """One app's /metrics, a new connection each scrape, from the exporter and from
        ``ThreadingHTTPServer`` holding the very bytes the exporter answered with."""
        p = self.params
        self.api.api.latency = 0.0
        exporter = self.start("exporter", 1)
        reference = None
        try:
            first_cycle(exporter, "exporter", 1, 60)
            parts = urlsplit(exporter.url)
            connection = http.client.HTTPConnection(parts.netloc, timeout=60)
            try:
                connection.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
                answer = connection.getresponse()
                body = answer.read()
                headers = [
                    f"{name}:{answer.headers[name]}"
                    for name in ("Content-Type", "Content-Encoding")
                    if name in answer.headers
                ]
            finally:
                connection.close()
            (self.workdir / "metrics.body").write_bytes(body)
            args = ["--body", str(self.workdir / "metrics.body")]
            args += [a for h in headers for a in ("--header", h)]
            reference = Process(
                "benchmarks.reference", args, python_env(REPO_ROOT, {}), self.workdir
            )
            servers = {"exporter": exporter, "reference": reference}

            def scrapes(server: Process) -> dict[str, Any]:
                cpu = server.cpu_seconds()
                url, n, seconds = server.url + "/metrics", p.fresh_scrapers, p.fresh_seconds
                figures = closed_loop(url, n, seconds, 0, seconds, new_connections=True)
                cpu = server.cpu_seconds() - cpu
                return figures | {"cpu_per_scrape_ms": round(1000 * cpu / figures["scrapes"], 3)}

            runs = [
                {name: scrapes(server) for name, server in servers.items()} for _ in range(p.rounds)
            ]
        finally:
            exporter.stop()
            if reference is not None:
                reference.stop()
        return {"body_bytes": len(body), **best_of(runs, lambda run: run["scrapes_per_s"])}


def best_of(rounds: list[dict[str, T]], score: Callable[[T], float]) -> dict[str, Any]:
    """Of each contender, its best round by ``score``; every round is kept beside."""
    return {
        "best": {name: max((r[name] for r in rounds), key=score) for name in rounds[0]},
        "rounds": rounds,
    }


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
