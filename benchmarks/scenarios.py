"""The five scenarios. Each returns its raw figures and its rows of the summary table.

Designs compared (see ``benchmarks.designs``): the exporter, the baseline (the afternoon
exporter: sequential polling loop, ``generate_latest`` per scrape) and, for the API load,
the scrape-time design (one API round per scrape).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.designs import BaselineRun, Bench, ExporterRun, ScrapeTimeRun
from benchmarks.harness import (
    PeriodicScrapers,
    Simulator,
    closed_loop,
    series_count,
    sleep_until,
)
from benchmarks.slow_clients import SlowClients, sources

REQUESTS_PER_APP = 10  # 2 + 2 x 4 dialog types, for every design
DEFAULT_CAP = 64
CAP_CEILING = 128  # the bar: the default cap reaches the 1000-app cycle with <= 128
INTERVAL = 60.0  # the exporter's default poll interval
MB = 1_000_000
MIB = 1 << 20


@dataclass(frozen=True)
class Params:
    """Sizes and durations of one run; ``FULL`` and ``QUICK`` below."""

    latency: float = 0.2
    s1_cycles: int = 3
    s2_apps: tuple[int, ...] = (10, 100, 1000)
    s2_cap_variant: tuple[int, int] = (100, 32)  # (apps, cap): the cap is a setting
    s2_keepalive_apps: int = 100  # the same cycle against an HTTP/1.1 keep-alive API
    baseline_budget: float = 30.0  # run the baseline only if its cycle fits in this
    s3_apps: tuple[int, ...] = (1, 100, 1000)
    s3_scrapers: tuple[int, ...] = (1, 20)
    s3_seconds: float = 2.0
    s3_min_scrapes: int = 200
    s3_max_seconds: float = 4.0
    s3_slow_clients: tuple[int, int] = (1000, 300)  # slowloris, silent
    s3_slow_seconds: float = 10.0
    s4_speedup: float = 15.0  # 60 s interval -> 4 s, 5 s scrape period -> 0.33 s
    s4_intervals: int = 1  # poll intervals per counting window
    s5_cycles: int = 5
    max_apps: int | None = None

    def sizes(self, sizes: tuple[int, ...]) -> list[int]:
        """``sizes`` up to ``--max-apps``; ``--max-apps`` itself when none is that small."""
        kept = [n for n in sizes if self.max_apps is None or n <= self.max_apps]
        return kept or [self.max_apps or min(sizes)]


FULL = Params()
QUICK = Params(
    latency=0.05,
    s1_cycles=2,
    s2_apps=(2, 5),
    s2_cap_variant=(5, 4),
    s2_keepalive_apps=5,
    baseline_budget=2.0,
    s3_apps=(1, 5),
    s3_scrapers=(1, 4),
    s3_seconds=0.3,
    s3_min_scrapes=10,
    s3_max_seconds=1.0,
    s3_slow_clients=(100, 30),
    s3_slow_seconds=1.0,
    s4_speedup=120.0,
    s4_intervals=1,
    s5_cycles=2,
)


@dataclass
class Row:
    """One line of the summary table; ``ratio`` is exporter / baseline."""

    measure: str
    exporter: str
    baseline: str = "-"
    ratio: float | None = None
    bar: str = "-"
    met: bool | None = None


@dataclass
class Outcome:
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)


def ratio(exporter: float | None, baseline: float | None) -> float | None:
    if exporter is None or baseline is None or baseline == 0:
        return None
    return exporter / baseline


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def millis(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def mebibytes(value: float) -> str:
    return f"{value / MIB:.1f} MiB ({value / MB:.1f} MB)"


def fresh(simulator: Simulator) -> None:
    """A quiet simulator with zeroed counters, before each measured run."""
    simulator.wait_idle()
    simulator.reset_stats()


def baseline_interval(latency: float) -> float:
    """A fixed-rate interval leaving the baseline a pause after each 1-app cycle."""
    return round(REQUESTS_PER_APP * latency + 0.25, 2)


def one_app_baseline(bench: Bench, latency: float) -> tuple[BaselineRun, float]:
    """The baseline polling one app on a quiet simulator, and its cycle interval."""
    fresh(bench.simulator)
    interval = baseline_interval(latency)
    return BaselineRun(bench, 1, interval), interval


def short_interval(latency: float) -> float:
    """An exporter poll interval a few polls fit in quickly, each well inside it."""
    return round(5 * latency, 3)


# --------------------------------------------------------------------------- 1. one cycle


def scenario_1(bench: Bench, params: Params) -> Outcome:
    """One poll cycle of 1 app with 4 dialog types: wall time and requests."""
    sim, latency, cycles = bench.simulator, params.latency, params.s1_cycles
    out = Outcome()

    fresh(bench.simulator)
    interval = short_interval(latency)
    run = ExporterRun(bench, 1, interval)
    try:
        run.wait_ready(30)
        first = run.polled_apps()["app-0"]
        cold = first["poll_duration_seconds"]
        sim.reset_stats()  # the next poll starts ~interval - cold later
        durations: list[float] = []
        seen = initial = first.get("success", 0) + first.get("failure", 0)
        deadline = time.monotonic() + cycles * interval + 10
        while len(durations) < cycles and time.monotonic() < deadline:
            app = run.polled_apps()["app-0"]
            polls = app.get("success", 0) + app.get("failure", 0)
            if polls > seen:
                durations.append(app["poll_duration_seconds"])
                seen = polls
            time.sleep(0.05)
        stats = sim.stats()  # read between polls: no request of the next one yet
        exporter = {
            "interval_s": interval,
            "cold_cycle_s": cold,
            "cycles_s": durations,
            "median_cycle_s": statistics.median(durations),
            "requests_per_cycle": stats["requests"] / max(1, seen - initial),
            "peak_in_flight": stats["peak_in_flight"],
            "measured_by": "connectycube_poll_duration_seconds after each poll",
        }
    finally:
        run.stop()

    base, b_interval = one_app_baseline(bench, latency)
    try:
        (_, cold_b), *_ = base.wait_cycles(1, 60)
        sim.reset_stats()  # in the pause after cycle 1
        found = base.wait_cycles(1 + cycles, 60 + cycles * b_interval)
        stats = sim.stats()
        warm = [duration for _, duration in found[1:]]
        baseline = {
            "interval_s": b_interval,
            "cold_cycle_s": cold_b,
            "cycles_s": warm,
            "median_cycle_s": statistics.median(warm),
            "requests_per_cycle": stats["requests"] / cycles,
            "peak_in_flight": stats["peak_in_flight"],
            "measured_by": "the baseline's own 'cycle N done in S s' line",
        }
    finally:
        base.stop()

    # The scrape-time design's "cycle" is a scrape: one API round, concurrently.
    fresh(bench.simulator)
    scraper = ScrapeTimeRun(bench, 1)
    try:
        scraper.metrics()  # first scrape: connections and imports warm
        sim.reset_stats()
        times = []
        for _ in range(cycles):
            started = time.perf_counter()
            scraper.metrics()
            times.append(time.perf_counter() - started)
        scrape_time = {
            "scrape_s": times,
            "median_scrape_s": statistics.median(times),
            "requests_per_scrape": sim.requests() / cycles,
        }
    finally:
        scraper.stop()

    bench.memo["baseline_cycle_per_app"] = baseline["median_cycle_s"]
    out.figures = {
        "latency_s": latency,
        "exporter": exporter,
        "baseline": baseline,
        "scrape_time": scrape_time,
    }
    e, b = exporter["median_cycle_s"], baseline["median_cycle_s"]
    out.rows = [
        Row(
            f"poll cycle wall time, 1 app x 4 dialog types (median of {cycles} warm cycles)",
            seconds(e),
            seconds(b),
            ratio(e, b),
            f"exporter <= 2 x latency = {seconds(2 * latency)} (baseline ~10 x)",
            e <= 2 * latency,
        ),
        Row(
            "first (cold) poll cycle, 1 app",
            seconds(cold),
            seconds(cold_b),
            ratio(cold, cold_b),
        ),
        Row(
            "API requests per cycle, 1 app",
            f"{exporter['requests_per_cycle']:g}",
            f"{baseline['requests_per_cycle']:g}",
            ratio(exporter["requests_per_cycle"], baseline["requests_per_cycle"]),
            f"same work: {REQUESTS_PER_APP} each",
            exporter["requests_per_cycle"] == baseline["requests_per_cycle"] == REQUESTS_PER_APP,
        ),
    ]
    return out


# --------------------------------------------------------------------------- 2. many apps


def exporter_cycle(
    bench: Bench, apps: int, cap: int | None, api: Simulator | None = None
) -> dict[str, Any]:
    """Start the exporter on ``apps`` apps, time its first cycle, read the simulator."""
    simulator = api or bench.simulator
    fresh(simulator)
    run = ExporterRun(bench, apps, INTERVAL, cap, api)
    try:
        cpu_at_listen = run.process.cpu_seconds()
        ready_after = run.wait_ready(2 * INTERVAL)
        cycle = run.cycle()
        stats = simulator.stats()
        cpu = run.process.cpu_seconds() - cpu_at_listen
        return {
            "apps": apps,
            "cap": cap or DEFAULT_CAP,
            "keepalive_api": simulator.keepalive,
            **cycle,
            "start_to_ready_s": round(ready_after, 3),
            "premature_ready_s": run.premature_ready,
            "requests": stats["requests"],
            "peak_in_flight": stats["peak_in_flight"],
            "cycle_cpu_s": round(cpu, 2),
            "cpu_per_request_ms": round(1000 * cpu / max(1, stats["requests"]), 3),
            "rss_bytes": run.process.memory()["VmRSS"],
            "threads": run.process.threads(),
        }
    finally:
        run.stop()


def baseline_cycle(
    bench: Bench, apps: int, timeout: float, api: Simulator | None = None, warm: bool = False
) -> dict[str, Any]:
    """The baseline's first cycle, or with ``warm`` its second (CPU without start-up)."""
    simulator = api or bench.simulator
    fresh(simulator)
    interval = baseline_interval(simulator.latency) * apps if warm else 3600
    run = BaselineRun(bench, apps, interval, api)
    try:
        cpu_before = run.process.cpu_seconds()
        if warm:
            run.wait_cycles(1, timeout)
            cpu_before = run.process.cpu_seconds()
            simulator.reset_stats()  # in the pause after cycle 1
        (_, duration) = run.wait_cycles(2 if warm else 1, timeout)[-1]
        stats = simulator.stats()
        cpu = run.process.cpu_seconds() - cpu_before
        return {
            "apps": apps,
            "keepalive_api": simulator.keepalive,
            "cycle": 2 if warm else 1,
            "cycle_s": duration,
            "requests": stats["requests"],
            "peak_in_flight": stats["peak_in_flight"],
            "cycle_cpu_s": round(cpu, 2),
            "cpu_per_request_ms": round(1000 * cpu / max(1, stats["requests"]), 3),
            "projected": False,
        }
    finally:
        run.stop()


def scenario_2(bench: Bench, params: Params) -> Outcome:
    """10, 100, 1000 apps: cycle time and requests in flight, at the default cap."""
    latency, out = params.latency, Outcome()
    sizes = params.sizes(params.s2_apps)
    exporter = [exporter_cycle(bench, n, None) for n in sizes]
    variant_apps, variant_cap = params.s2_cap_variant
    variant = None
    if params.max_apps is None or variant_apps <= params.max_apps:
        variant = exporter_cycle(bench, variant_apps, variant_cap)

    # The baseline, where its cycle fits the budget; beyond, projected from the largest.
    per_app = bench.memo.get("baseline_cycle_per_app", REQUESTS_PER_APP * latency)
    baseline: dict[int, dict[str, Any]] = {}
    for n in sizes:
        if n * per_app <= params.baseline_budget:
            baseline[n] = baseline_cycle(bench, n, 3 * params.baseline_budget + 30)
            per_app = baseline[n]["cycle_s"] / n
    if not baseline:  # nothing fits: measure one app to project from
        one = baseline_cycle(bench, 1, 60)
        per_app = one["cycle_s"]
    measured_from = max(baseline) if baseline else 1
    for n in sizes:
        if n not in baseline:
            baseline[n] = {
                "apps": n,
                "cycle_s": per_app * n,
                "projected": True,
                "projected_from_apps": measured_from,
            }
    # The same cycle against the same simulator served with keep-alive, as a real API is.
    keepalive: dict[str, Any] | None = None
    ka_apps = params.s2_keepalive_apps
    if ka_apps and (params.max_apps is None or ka_apps <= params.max_apps):
        api = Simulator(latency, keepalive=True)
        try:
            keepalive = {
                "exporter": exporter_cycle(bench, ka_apps, None, api),
                "baseline_1_app": baseline_cycle(bench, 1, 60, api, warm=True),
            }
        finally:
            api.stop()

    out.figures = {
        "latency_s": latency,
        "interval_s": INTERVAL,
        "exporter": exporter,
        "exporter_cap_variant": variant,
        "keepalive_api": keepalive,
        "baseline": [baseline[n] for n in sizes],
        "cycle_measured_by": (
            "exporter: first poll start to last poll end over all apps, from each app's "
            "connectycube_last_success_timestamp_seconds - connectycube_poll_duration_seconds; "
            "baseline: its 'cycle N done in S s' line"
        ),
    }

    for figures in exporter:
        n = figures["apps"]
        b = baseline[n]
        shown = seconds(b["cycle_s"]) + (" (projected)" if b["projected"] else "")
        ok = figures["apps_failed"] == 0 and figures["apps_succeeded"] == n
        cycle = figures["cycle_s"]
        out.rows.append(
            Row(
                f"cycle over {n} apps (first poll start -> last poll end)",
                seconds(cycle) + ("" if ok else f", {figures['apps_failed']} apps failed"),
                shown,
                ratio(cycle, b["cycle_s"]),
                f"< {INTERVAL:g} s interval, every app polled",
                ok and cycle is not None and cycle < INTERVAL,
            )
        )
    largest = exporter[-1]
    out.rows.append(
        Row(
            f"peak API requests in flight, {largest['apps']} apps, default cap",
            f"{largest['peak_in_flight']}",
            f"{baseline[largest['apps']].get('peak_in_flight', 1)}",
            None,
            f"<= cap {DEFAULT_CAP} (<= {CAP_CEILING})",
            largest["peak_in_flight"] <= min(DEFAULT_CAP, CAP_CEILING),
        )
    )
    out.rows.append(
        Row(
            f"API requests in the {largest['apps']}-app cycle",
            f"{largest['requests']}",
            "-",
            None,
            f"= {REQUESTS_PER_APP} x apps",
            largest["requests"] == REQUESTS_PER_APP * largest["apps"],
        )
    )
    if keepalive is not None:
        out.rows += keepalive_rows(keepalive, exporter, max(sizes), latency)
    if variant is not None:
        ideal = variant_apps * REQUESTS_PER_APP * latency / variant_cap
        out.rows.append(
            Row(
                f"--max-concurrent-requests {variant_cap}, {variant_apps} apps: peak in flight"
                f" / cycle (ideal {seconds(ideal)})",
                f"{variant['peak_in_flight']} / {seconds(variant['cycle_s'])}",
                "-",
                None,
                f"peak <= {variant_cap}",
                variant["peak_in_flight"] <= variant_cap,
            )
        )
    return out


def keepalive_rows(
    keepalive: dict[str, Any], exporter: list[dict[str, Any]], largest: int, latency: float
) -> list[Row]:
    """Scenario 2's rows for the keep-alive API, with the projection to ``largest`` apps."""
    e, b = keepalive["exporter"], keepalive["baseline_1_app"]
    n = e["apps"]
    same = next((f for f in exporter if f["apps"] == n), None)
    ok = e["apps_failed"] == 0 and e["apps_succeeded"] == n
    rows = [
        Row(
            f"cycle over {n} apps, keep-alive API (same simulator over HTTP/1.1)",
            seconds(e["cycle_s"]) + ("" if ok else f", {e['apps_failed']} apps failed"),
            seconds(b["cycle_s"] * n) + " (projected)",
            ratio(e["cycle_s"], b["cycle_s"] * n),
            f"< {INTERVAL:g} s interval, every app polled",
            ok and e["cycle_s"] is not None and e["cycle_s"] < INTERVAL,
        ),
        Row(
            "CPU per API request: new connection each / keep-alive API"
            + (f" ({n} apps)" if same else ""),
            (f"{same['cpu_per_request_ms']:.1f} / " if same else "")
            + f"{e['cpu_per_request_ms']:.1f} ms",
            f"- / {b['cpu_per_request_ms']:.1f} ms",
            ratio(e["cpu_per_request_ms"], b["cpu_per_request_ms"]),
        ),
    ]
    if largest > n and e["cycle_s"]:
        # CPU-bound: each request costs the event loop the same, so the cycle grows with
        # the number of requests, never below the latency-bound ideal.
        ideal = largest * REQUESTS_PER_APP * latency / DEFAULT_CAP
        projected = max(ideal, e["cycle_s"] * largest / n)
        rows.append(
            Row(
                f"cycle over {largest} apps, keep-alive API (projected from {n} apps)",
                seconds(projected) + " (projected)",
                seconds(b["cycle_s"] * largest) + " (projected)",
                ratio(projected, b["cycle_s"] * largest),
                f"< {INTERVAL:g} s interval",
                projected < INTERVAL,
            )
        )
    return rows


# --------------------------------------------------------------------------- 3. scrape cost


def warm_up(bench: Bench, design: str, apps: int) -> ExporterRun | BaselineRun:
    """A design holding ``apps`` apps' data, filled at zero API latency, polling no more.

    Records its footprint after warm-up in ``bench.memo`` for scenario 5.
    """
    fresh(bench.simulator)
    run: ExporterRun | BaselineRun
    if design == "exporter":
        run = ExporterRun(bench, apps, 3600)
        cpu_at_listen = run.process.cpu_seconds()
        ready_after = run.wait_ready(300)
    else:
        run = BaselineRun(bench, apps, 3600)
        cpu_at_listen = run.process.cpu_seconds()
        (at, _), *_ = run.wait_cycles(1, 300)
        ready_after = at - run.process.started
    try:
        cycle_cpu = run.process.cpu_seconds() - cpu_at_listen
        text = run.metrics()  # warm the scrape path once
        bench.memo[("warm", design, apps)] = {
            "apps": apps,
            "start_to_data_s": round(ready_after, 3),
            "premature_ready_s": getattr(run, "premature_ready", None),
            "first_cycle_cpu_s": round(cycle_cpu, 3),
            "cpu_per_app_s": round(cycle_cpu / apps, 6),
            "rss_bytes": run.process.memory()["VmRSS"],
            "series": series_count(text),
            "text_bytes": len(text.encode()),
            "latency_s": 0.0,
        }
    except BaseException:
        run.stop()
        raise
    return run


def scenario_3(bench: Bench, params: Params) -> Outcome:
    """/metrics latency and throughput by number of apps and of concurrent scrapers."""
    out = Outcome()
    sizes = params.sizes(params.s3_apps)
    results: dict[str, dict[int, dict[int, dict[str, Any]]]] = {}
    info: dict[str, dict[int, dict[str, Any]]] = {}
    slow: dict[str, dict[str, Any]] = {}
    bench.simulator.set_latency(0.0)  # only the stored data matters here: fill fast
    try:
        for design in ("exporter", "baseline"):
            results[design], info[design] = {}, {}
            for n in sizes:
                run = warm_up(bench, design, n)
                try:
                    info[design][n] = bench.memo[("warm", design, n)]
                    results[design][n] = {
                        c: closed_loop(
                            run.url + "/metrics",
                            c,
                            params.s3_seconds,
                            params.s3_min_scrapes,
                            params.s3_max_seconds,
                        ).figures()
                        for c in params.s3_scrapers
                    }
                    info[design][n]["rss_after_load_bytes"] = run.process.memory()["VmRSS"]
                    if n == sizes[0]:
                        slow[design] = under_slow_clients(run.url, params)
                finally:
                    run.stop()
    finally:
        bench.simulator.set_latency(params.latency)

    out.figures = {
        "headers": "Prometheus's Accept (OpenMetrics preferred) and Accept-Encoding: gzip",
        "load": "closed loop: N threads, each scraping back to back with a keep-alive client",
        "designs": {
            d: {str(n): {"warm": info[d][n], "by_scrapers": results[d][n]} for n in sizes}
            for d in results
        },
        "under_slow_clients": {"apps": sizes[0], **slow},
    }
    for n in sizes:
        for c in params.s3_scrapers:
            e, b = results["exporter"][n][c], results["baseline"][n][c]
            out.rows.append(
                Row(
                    f"/metrics p50 / p99, {n} apps, {c} scraper(s)",
                    f"{millis(e['p50_ms'])} / {millis(e['p99_ms'])}",
                    f"{millis(b['p50_ms'])} / {millis(b['p99_ms'])}",
                    ratio(e["p99_ms"], b["p99_ms"]),
                )
            )
            out.rows.append(
                Row(
                    f"/metrics throughput, {n} apps, {c} scraper(s)",
                    f"{e['scrapes_per_s']:.0f}/s",
                    f"{b['scrapes_per_s']:.0f}/s",
                    ratio(e["scrapes_per_s"], b["scrapes_per_s"]),
                )
            )
    small, large = min(sizes), max(sizes)
    if large > small:
        for c in params.s3_scrapers:
            e = results["exporter"][large][c]["p99_ms"] / results["exporter"][small][c]["p99_ms"]
            b = results["baseline"][large][c]["p99_ms"] / results["baseline"][small][c]["p99_ms"]
            out.rows.append(
                Row(
                    f"p99 growth {small} -> {large} apps, {c} scraper(s)",
                    f"x{e:.1f}",
                    f"x{b:.1f}",
                    ratio(e, b),
                    "exporter <= x3",
                    e <= 3,
                )
            )
        for c in params.s3_scrapers:
            r = ratio(
                results["exporter"][large][c]["p99_ms"], results["baseline"][large][c]["p99_ms"]
            )
            out.rows.append(
                Row(
                    f"p99 at {large} apps vs baseline, {c} scraper(s)",
                    millis(results["exporter"][large][c]["p99_ms"]),
                    millis(results["baseline"][large][c]["p99_ms"]),
                    r,
                    "well ahead: ratio <= 0.5",
                    r is not None and r <= 0.5,
                )
            )
    e, b = slow["exporter"], slow["baseline"]
    slowloris, silent = params.s3_slow_clients
    out.rows.append(
        Row(
            f"/metrics p50 / p99 under {slowloris:,} slowloris + {silent} silent clients "
            f"(from {SLOW_ADDRESSES} addresses), {sizes[0]} app(s), 1 scraper",
            under_load_cell(e),
            under_load_cell(b),
            ratio(e["p99_ms"], b["p99_ms"]) if e["scrapes"] and b["scrapes"] else None,
            "no failed scrape, p99 < 1 s",
            e["errors"] == 0 and e["scrapes"] > 0 and e["p99_ms"] < 1000,
        )
    )
    out.rows.append(
        Row(
            f"series per scrape, {large} apps",
            f"{info['exporter'][large]['series']}",
            f"{info['baseline'][large]['series']}",
            ratio(info["exporter"][large]["series"], info["baseline"][large]["series"]),
            "(the exporter serves more: yesterday, health, request counters)",
        )
    )
    return out


SLOW_ADDRESSES = 26  # loopback sources: 50 connections each, under the per-address cap


def under_slow_clients(url: str, params: Params) -> dict[str, Any]:
    """Closed-loop scrapes (1 scraper) while slow clients hold connections to the design.

    The slow clients (``benchmarks.slow_clients``) trickle a header line every 2 s or
    send nothing, and connect again when dropped; they start within their first second.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    slowloris, silent = params.s3_slow_clients
    clients = SlowClients(
        host,
        int(port),
        slowloris=slowloris,
        silent=silent,
        source_addresses=sources(SLOW_ADDRESSES),
    )
    with clients:
        time.sleep(1.5)
        held = clients.stats()["open"]
        result = closed_loop(
            url + "/metrics",
            1,
            params.s3_slow_seconds,
            params.s3_min_scrapes,
            2 * params.s3_slow_seconds,
        ).figures()
        stats = clients.stats()
    return {
        **result,
        "slow_clients": {
            "slowloris": slowloris,
            "silent": silent,
            "source_addresses": SLOW_ADDRESSES,
            "open_when_scraping_began": held,
            **stats,
        },
    }


def under_load_cell(figures: dict[str, Any]) -> str:
    if not figures["scrapes"]:
        return f"every scrape failed ({figures['errors']})"
    cell = f"{millis(figures['p50_ms'])} / {millis(figures['p99_ms'])}"
    return cell + (f", {figures['errors']} failed" if figures["errors"] else "")


# --------------------------------------------------------------------------- 4. upstream load


def count_requests(
    bench: Bench,
    url: str,
    loads: dict[str, tuple[int, float]],
    window: float,
    first_window: Callable[[], float],
) -> dict[str, dict[str, Any]]:
    """API requests the simulator saw in one window per Prometheus load.

    ``first_window()`` is the monotonic time to open the first window at: a point in the
    poll schedule far from any cycle's requests, so each window holds whole cycles.
    """
    counted = {}
    start = first_window()
    for name, (replicas, period) in loads.items():
        scrapers = PeriodicScrapers(url, replicas, period)
        try:
            sleep_until(start)
            before = bench.simulator.requests()
            sleep_until(start + window)
            after = bench.simulator.requests()
        finally:
            scrapers.stop()
        counted[name] = {
            "replicas": replicas,
            "period_s": period,
            "requests": after - before,
            "scrapes": scrapers.scrapes,
            "scrape_errors": scrapers.errors,
        }
        start += window
        if start < time.monotonic():  # a slow stop: skip to the same phase later
            start += window * (1 + (time.monotonic() - start) // window)
    return counted


def scenario_4(bench: Bench, params: Params) -> Outcome:
    """API requests per minute under light and heavy scraping, for all three designs."""
    speedup, windows = params.s4_speedup, params.s4_intervals
    interval = INTERVAL / speedup
    window = windows * interval
    loads = {
        "1 replica / 60 s": (1, 60 / speedup),
        "2 replicas / 5 s": (2, 5 / speedup),
    }
    per_minute = windows  # a window spans `windows` compressed minutes
    figures: dict[str, Any] = {
        "time_compression": speedup,
        "poll_interval_s": interval,
        "window_s": window,
        "loads": {name: {"replicas": r, "period_s": p} for name, (r, p) in loads.items()},
        "note": (
            f"time runs {speedup:g}x faster: poll interval {INTERVAL:g} s -> {interval:g} s, "
            "scrape periods likewise; requests are per minute of the real schedule"
        ),
    }

    fresh(bench.simulator)
    run = ExporterRun(bench, 1, interval)
    try:
        run.wait_ready(30)
        app = run.polled_apps()["app-0"]
        # First poll start on the wall clock, moved to the monotonic clock.
        first = app["last_success_timestamp_seconds"] - app["poll_duration_seconds"]
        origin = time.monotonic() - (time.time() - first)
        figures["exporter"] = count_requests(
            bench, run.url + "/metrics", loads, window, lambda: next_phase(origin, interval)
        )
    finally:
        run.stop()

    fresh(bench.simulator)
    b_interval = max(interval, baseline_interval(params.latency))
    base = BaselineRun(bench, 1, b_interval)
    try:
        (at, duration), *_ = base.wait_cycles(1, 60)
        origin = at - duration
        b_window = windows * b_interval
        figures["baseline"] = count_requests(
            bench, base.url + "/metrics", loads, b_window, lambda: next_phase(origin, b_interval)
        )
        # Its cycle does not get faster with the clock: where it needs a longer interval,
        # its windows span as many of its intervals, each standing for one real minute.
        figures["baseline_interval_s"] = b_interval
    finally:
        base.stop()

    fresh(bench.simulator)
    scraper = ScrapeTimeRun(bench, 1)
    try:
        figures["scrape_time"] = count_requests(
            bench, scraper.url + "/metrics", loads, window, lambda: time.monotonic() + 0.2
        )
    finally:
        scraper.stop()

    out = Outcome(figures)
    rate = {
        design: {name: figures[design][name]["requests"] / per_minute for name in loads}
        for design in ("exporter", "baseline", "scrape_time")
    }
    light, heavy = loads
    for name in loads:
        e, b = rate["exporter"][name], rate["baseline"][name]
        out.rows.append(
            Row(
                f"API requests per minute, 1 app, Prometheus {name}",
                f"{e:g}",
                f"{b:g}",
                ratio(e, b),
                "exporter: same as 1 replica / 60 s" if name == heavy else "-",
                e == rate["exporter"][light] if name == heavy else None,
            )
        )
    e, s = rate["exporter"][heavy], rate["scrape_time"][heavy]
    out.rows.append(
        Row(
            f"API requests per minute, Prometheus {heavy}: vs the scrape-time design "
            f"(its figure in the baseline column; {rate['scrape_time'][light]:g} at {light})",
            f"{e:g}",
            f"{s:g}",
            ratio(e, s),
            "exporter: nothing extra",
            e == rate["exporter"][light],
        )
    )
    return out


def next_phase(origin: float, interval: float, phase: float = 0.7) -> float:
    """The next moment ``phase`` of the way through an interval of a schedule from ``origin``.

    A cycle's requests all start in its first part (one round trip for the exporter, the
    sequential cycle for the baseline), so a window opened there cuts no cycle in two.
    """
    now = time.monotonic() + 0.05
    k = max(0, int((now - origin - phase * interval) // interval) + 1)
    return origin + (k + phase) * interval


# --------------------------------------------------------------------------- 5. footprint


def scenario_5(bench: Bench, params: Params) -> Outcome:
    """Resident memory, CPU per poll cycle per app, and start-up time."""
    latency, cycles, out = params.latency, params.s5_cycles, Outcome()
    interval = short_interval(latency)

    fresh(bench.simulator)
    run = ExporterRun(bench, 1, interval)
    try:
        ready_after = run.wait_ready(30)
        # Half-way between polls, with nobody scraping: only the schedule runs.
        sleep_until(run.process.started + ready_after + interval / 2)
        cpu0 = run.process.cpu_seconds()
        time.sleep(cycles * interval)
        cpu1 = run.process.cpu_seconds()
        exporter_small = {
            "start_to_listening_s": round(run.listening_after, 3),
            "start_to_ready_s": round(ready_after, 3),
            "premature_ready_s": run.premature_ready,
            "cpu_per_cycle_s": round((cpu1 - cpu0) / cycles, 4),
            "cycles": cycles,
            "rss_bytes": run.process.memory()["VmRSS"],
            "threads": run.process.threads(),
        }
    finally:
        run.stop()

    base, b_interval = one_app_baseline(bench, latency)
    try:
        (at, _), *_ = base.wait_cycles(1, 60)
        cpu0 = base.process.cpu_seconds()
        base.wait_cycles(1 + cycles, 60 + cycles * b_interval)
        cpu1 = base.process.cpu_seconds()
        baseline_small = {
            "start_to_listening_s": round(base.listening_after, 3),
            "start_to_data_s": round(at - base.process.started, 3),
            "cpu_per_cycle_s": round((cpu1 - cpu0) / cycles, 4),
            "cycles": cycles,
            "rss_bytes": base.process.memory()["VmRSS"],
            "threads": base.process.threads(),
        }
    finally:
        base.stop()

    # The large size: from scenario 3's warm processes when it ran, else warmed here.
    large = max(params.sizes(params.s3_apps))
    big = {}
    for design in ("exporter", "baseline"):
        if ("warm", design, large) not in bench.memo:
            bench.simulator.set_latency(0.0)
            try:
                warm_up(bench, design, large).stop()
            finally:
                bench.simulator.set_latency(latency)
        big[design] = bench.memo[("warm", design, large)]

    out.figures = {
        "latency_s": latency,
        "exporter_1_app": exporter_small,
        "baseline_1_app": baseline_small,
        f"exporter_{large}_apps": big["exporter"],
        f"baseline_{large}_apps": big["baseline"],
        "measured_by": (
            "RSS: VmRSS of /proc/PID/status; CPU: utime+stime of /proc/PID/stat; 1 app: "
            f"over {cycles} poll cycles at {latency:g} s latency, nobody scraping; {large} "
            "apps: the first cycle, filled at zero latency, from the 'listening' line on"
        ),
    }
    e_rss, b_rss = exporter_small["rss_bytes"], baseline_small["rss_bytes"]
    api_part = exporter_small["start_to_ready_s"] - exporter_small["start_to_listening_s"]
    out.rows = [
        Row(
            "resident memory after warm-up, 1 app",
            mebibytes(e_rss),
            mebibytes(b_rss),
            ratio(e_rss, b_rss),
            "exporter < 50 MB (50e6 bytes)",
            e_rss < 50 * MB,
        ),
        Row(
            f"resident memory after warm-up, {large} apps",
            mebibytes(big["exporter"]["rss_bytes"]),
            mebibytes(big["baseline"]["rss_bytes"]),
            ratio(big["exporter"]["rss_bytes"], big["baseline"]["rss_bytes"]),
        ),
        Row(
            "CPU per poll cycle per app, 1 app",
            millis(exporter_small["cpu_per_cycle_s"] * 1000),
            millis(baseline_small["cpu_per_cycle_s"] * 1000),
            ratio(exporter_small["cpu_per_cycle_s"], baseline_small["cpu_per_cycle_s"]),
        ),
        Row(
            f"CPU per poll cycle per app, {large} apps (first cycle)",
            millis(big["exporter"]["cpu_per_app_s"] * 1000),
            millis(big["baseline"]["cpu_per_app_s"] * 1000),
            ratio(big["exporter"]["cpu_per_app_s"], big["baseline"]["cpu_per_app_s"]),
        ),
        Row(
            "start -> listening (imports, settings)",
            seconds(exporter_small["start_to_listening_s"]),
            seconds(baseline_small["start_to_listening_s"]),
            ratio(exporter_small["start_to_listening_s"], baseline_small["start_to_listening_s"]),
        ),
        Row(
            "start -> ready with data, 1 app (exporter: /-/ready; baseline: first cycle done)",
            seconds(exporter_small["start_to_ready_s"]),
            seconds(baseline_small["start_to_data_s"]),
            ratio(exporter_small["start_to_ready_s"], baseline_small["start_to_data_s"]),
            f"API part ({seconds(api_part)}) >= start-up before it",
            api_part >= exporter_small["start_to_listening_s"],
        ),
    ]
    return out


SCENARIOS: dict[int, tuple[str, Callable[[Bench, Params], Outcome]]] = {
    1: ("One poll cycle, 1 app, 4 dialog types", scenario_1),
    2: ("Many apps: cycle time and requests in flight", scenario_2),
    3: ("Scrape cost", scenario_3),
    4: ("Upstream load against scrape rate", scenario_4),
    5: ("Footprint", scenario_5),
}
