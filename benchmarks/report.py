"""The summary table: one row per measure, the exporter's figure beside the baseline's."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from benchmarks.scenarios import Params

MIB = 1 << 20


class Row(NamedTuple):
    measure: str
    exporter: str
    baseline: str
    ratio: float | None  # exporter / baseline


def ratio(exporter: float | None, baseline: float | None) -> float | None:
    if exporter is None or not baseline:
        return None
    value = exporter / baseline
    return value if math.isfinite(value) else None


def compare(measure: str, exporter: float, baseline: float, shown: Callable[[float], str]) -> Row:
    return Row(measure, shown(exporter), shown(baseline), ratio(exporter, baseline))


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def millis(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def mebibytes(value: float) -> str:
    return f"{value / MIB:.1f} MiB"


def latencies(scrapes: dict[str, Any]) -> str:
    """p50 / p99 of a scrape load, and how many scrapes failed if any did."""
    if not scrapes["scrapes"]:
        return f"every scrape failed ({scrapes['failed']})"
    cell = f"{scrapes['p50_ms']:.1f} / {scrapes['p99_ms']:.1f} ms"
    return cell + (f", {scrapes['failed']} failed" if scrapes["failed"] else "")


def poll_rows(results: dict[str, Any]) -> list[Row]:
    """Cycle time, CPU per request, concurrency, start-up and memory."""
    exporter, baseline = results["by_apps"]["exporter"], results["by_apps"]["baseline"]
    sizes = sorted(exporter)
    second = results["second_cycle_s"]
    rows = [
        compare(
            "poll cycle after the first, 1 app", second["exporter"], second["baseline"], seconds
        )
    ]
    # Where the baseline polled at zero latency, its cycle is projected linearly from the
    # largest one it polled at the simulator's latency.
    measured = max(n for n in sizes if baseline[n]["api_latency_s"])
    per_app = baseline[measured]["cycle_s"] / measured
    for n in sizes:
        e = exporter[n]
        failed = f", {e['apps_failed']} apps failed" if e["apps_failed"] else ""
        b_cycle = baseline[n]["cycle_s"] if n <= measured else per_app * n
        b_cell = seconds(b_cycle) + ("" if n <= measured else " (projected)")
        cycle = e["cycle_s"]
        rows.append(
            Row(
                f"first poll cycle, {n} app(s)",
                seconds(cycle) + failed,
                b_cell,
                ratio(cycle, b_cycle),
            )
        )

    def each_size(measure: str, key: str, shown: Callable[[float], str]) -> list[Row]:
        return [
            compare(f"{measure}, {n} app(s)", exporter[n][key], baseline[n][key], shown)
            for n in sizes
        ]

    rows += each_size("poll CPU per API request", "cpu_per_request_ms", millis)
    n = sizes[-1]
    e, b = exporter[n], baseline[n]
    rows.append(
        Row(
            f"API requests per app / most in flight at once, {n} app(s)",
            f"{e['api_requests'] / n:g} / {e['peak_in_flight']}",
            f"{b['api_requests'] / n:g} / {b['peak_in_flight']}",
            None,
        )
    )
    n = sizes[0]
    e, b = exporter[n], baseline[n]
    rows.append(
        Row(
            f"start -> listening / -> first cycle done, {n} app(s)",
            f"{seconds(e['listening_after_s'])} / {seconds(e['ready_after_s'])}",
            f"{seconds(b['listening_after_s'])} / {seconds(b['ready_after_s'])}",
            ratio(e["ready_after_s"], b["ready_after_s"]),
        )
    )
    rows += each_size("resident memory after the first cycle", "rss_bytes", mebibytes)
    return rows


def scrape_rows(results: dict[str, Any], p: Params) -> list[Row]:
    """Scrape latency and throughput, the size of a scrape, scrapes under slow clients."""
    exporter, baseline = results["by_apps"]["exporter"], results["by_apps"]["baseline"]
    sizes = sorted(exporter)
    rows = []
    for n in sizes:
        for c in p.scrapers:
            e, b = exporter[n]["scrapes"][str(c)], baseline[n]["scrapes"][str(c)]
            where = f"{n} app(s), {c} scraper(s)"
            p99 = ratio(e["p99_ms"], b["p99_ms"])
            rows.append(Row(f"/metrics p50 / p99, {where}", latencies(e), latencies(b), p99))
            rate = f"/metrics scrapes per second, {where}"
            rows.append(compare(rate, e["scrapes_per_s"], b["scrapes_per_s"], "{:g}".format))
    n = sizes[-1]
    cells = []
    for figures in (exporter[n], baseline[n]):
        gzip = figures["scrapes"][str(p.scrapers[0])]["wire_bytes_per_scrape"]
        text = figures["text_bytes"]
        cells.append(f"{figures['series']:,} / {text / 1e6:.2f} MB / {gzip / 1e3:.0f} kB")
    rows.append(
        Row(
            f"series / text bytes / bytes on the wire (gzip) per scrape, {n} app(s)",
            *cells,
            ratio(exporter[n]["series"], baseline[n]["series"]),
        )
    )
    rows.append(
        Row(
            "API requests while scraping, every size and load",
            str(sum(exporter[n]["api_requests_while_scraping"] for n in sizes)),
            str(sum(baseline[n]["api_requests_while_scraping"] for n in sizes)),
            None,
        )
    )
    e, b = exporter[sizes[0]]["under_slow_clients"], baseline[sizes[0]]["under_slow_clients"]
    slowloris, silent = p.slow_clients
    rows.append(
        Row(
            f"/metrics p50 / p99 while {slowloris:,} slowloris and {silent:,} silent clients "
            f"hold connections, {sizes[0]} app(s), 1 scraper",
            latencies(e),
            latencies(b),
            ratio(e["p99_ms"], b["p99_ms"]),
        )
    )
    return rows


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table; ratios under 0.01 with four decimals."""
    lines = ["| measure | exporter | baseline | exporter / baseline |", "|---|---|---|---|"]
    for row in rows:
        shown = "-" if row.ratio is None else f"{row.ratio:.{2 if row.ratio >= 0.01 else 4}f}"
        lines.append(f"| {row.measure} | {row.exporter} | {row.baseline} | {shown} |")
    return "\n".join(lines)


class Goal(NamedTuple):
    """A ratio the exporter is held to, against what it should come close to."""

    measure: str
    exporter: str
    against: str
    ratio: float | None
    goal: str
    met: bool | None


HTTPS_OVER_HTTP_MAX = 1.25  # CPU per API request
SCRAPE_RATE_MIN = 0.7  # of ThreadingHTTPServer's scrapes per second
SCRAPE_P99_MAX = 2.0  # times ThreadingHTTPServer's


def goal_rows(results: dict[str, Any], p: Params) -> list[Goal]:
    """The later cycle's CPU over HTTPS against plain HTTP; small scrapes on new
    connections against ``ThreadingHTTPServer``: rate and p99. Each the best round."""
    cycle = results["later_cycle"]["best"]
    https, plain = cycle["https"]["cpu_per_request_ms"], cycle["http"]["cpu_per_request_ms"]
    over_tls = ratio(https, plain)
    scrapes = results["new_connection_scrapes"]["best"]
    e, r = scrapes["exporter"], scrapes["reference"]
    rate, p99 = ratio(e["scrapes_per_s"], r["scrapes_per_s"]), ratio(e["p99_ms"], r["p99_ms"])
    where = f"1 app, {p.fresh_scrapers} scrapers, a new connection each"

    def met(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else ok(value)

    return [
        Goal(
            f"poll CPU per API request, a later cycle of {p.transport_apps} app(s): "
            "HTTPS / plain HTTP",
            millis(https),
            millis(plain),
            over_tls,
            f"<= {HTTPS_OVER_HTTP_MAX:g}",
            met(over_tls, lambda v: v <= HTTPS_OVER_HTTP_MAX),
        ),
        Goal(
            f"/metrics scrapes per second, {where}: exporter / ThreadingHTTPServer",
            f"{e['scrapes_per_s']:g}",
            f"{r['scrapes_per_s']:g}",
            rate,
            f">= {SCRAPE_RATE_MIN:g}",
            met(rate, lambda v: v >= SCRAPE_RATE_MIN),
        ),
        Goal(
            f"/metrics p50 / p99, {where}: exporter / ThreadingHTTPServer (p99)",
            latencies(e),
            latencies(r),
            p99,
            f"<= {SCRAPE_P99_MAX:g}",
            met(p99, lambda v: v <= SCRAPE_P99_MAX),
        ),
    ]


def goal_table(goals: list[Goal]) -> str:
    lines = ["| goal | exporter | against | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for g in goals:
        shown = "-" if g.ratio is None else f"{g.ratio:.2f}"
        met = {True: "yes", False: "no", None: "-"}[g.met]
        lines.append(f"| {g.measure} | {g.exporter} | {g.against} | {shown} | {g.goal} | {met} |")
    return "\n".join(lines)
