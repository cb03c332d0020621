"""The benchmark's quick mode runs end to end, so that it never rots.

Speed is the benchmark's business: this test only checks that every measure was taken
and came out as a number, and that the goals' ratios are what they say they are (the API
over HTTPS beside plain HTTP, the exporter beside a server of the same bytes, the best
round of each), never how good they are.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def numbers(value: Any) -> list[float]:
    """Every number in a JSON value, however deeply nested."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return []


@pytest.mark.slow
def test_quick_benchmark_measures_everything(tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    results = json.loads(output.read_text())
    figures = results["figures"]
    assert set(figures["second_cycle_s"]) == {"exporter", "baseline"}
    assert set(figures["by_apps"]) == {"exporter", "baseline"}
    for design, by_apps in figures["by_apps"].items():
        assert set(by_apps) == {"1", "5"}, design
        for apps, measured in by_apps.items():
            assert measured["apps_failed"] == 0, (design, apps)
            found = numbers(measured)
            assert all(math.isfinite(n) for n in found), (design, apps, measured)
            assert measured["scrapes"], (design, apps)
    assert all(math.isfinite(n) for n in numbers(figures["second_cycle_s"]))
    assert results["rows"]
    for row in results["rows"]:
        assert row["exporter"] not in ("", "-"), row
        assert row["baseline"] not in ("", "-"), row
    assert results["run"]["cores"] >= 1
    assert results["run"]["python"]

    assert results["run"]["api_transport"] == "HTTPS (TLSv1.3), HTTP/1.1 keep-alive"
    check_goals(results)

    lines = result.stdout.splitlines()
    assert lines[0] == "| measure | exporter | baseline | exporter / baseline |"
    assert lines[1] == "|---|---|---|---|"
    goals = lines.index("| goal | exporter | against | ratio | goal | met |")
    assert (
        len([line for line in lines[:goals] if line.startswith("| ")]) == len(results["rows"]) + 1
    )
    assert len([line for line in lines[goals:] if line.startswith("| ")]) == 1 + 3
    assert any(line.startswith("Machine: ") for line in lines)


def check_goals(results: dict[str, Any]) -> None:
    """Each goal's ratio is the best round of one side over the best of the other, and each
    side measured what it is named after."""
    cycle = results["figures"]["later_cycle"]
    assert len(cycle["rounds"]) == 2  # QUICK's rounds, each transport in turn
    for transport in ("http", "https"):
        runs = [r[transport] for r in cycle["rounds"]]
        for run in runs:
            assert run["api_url"].startswith(f"{transport}://"), run
            assert run["apps"] == 5
            assert run["api_requests"] >= 5, run
            assert run["polls_failed"] == 0, run
            assert not run["first_cycle_overran"], run
        best = min(run["cpu_per_request_ms"] for run in runs)
        assert cycle["best"][transport]["cpu_per_request_ms"] == best
    scrapes = results["figures"]["new_connection_scrapes"]
    assert len(scrapes["rounds"]) == 2
    for server in ("exporter", "reference"):
        runs = [r[server] for r in scrapes["rounds"]]
        for run in runs:
            assert run["scrapers"] == 4
            assert run["scrapes"] > 0, run
            assert run["failed"] == 0, run
            # The same bytes from both: the reference serves what the exporter answered
            # once; the exporter's own figures (its CPU seconds, ...) change a digit or two.
            size = run["wire_bytes_per_scrape"]
            assert size == pytest.approx(scrapes["body_bytes"], rel=0.05), run
        assert scrapes["rounds"][0]["reference"]["wire_bytes_per_scrape"] == scrapes["body_bytes"]
        assert scrapes["best"][server]["scrapes_per_s"] == max(r["scrapes_per_s"] for r in runs)

    over_tls, rate, p99 = results["goals"]
    https, plain = (cycle["best"][t]["cpu_per_request_ms"] for t in ("https", "http"))
    assert over_tls["ratio"] == pytest.approx(https / plain)
    assert over_tls["met"] == (https / plain <= 1.25)
    exporter, reference = scrapes["best"]["exporter"], scrapes["best"]["reference"]
    assert rate["ratio"] == pytest.approx(exporter["scrapes_per_s"] / reference["scrapes_per_s"])
    assert rate["met"] == (rate["ratio"] >= 0.7)
    assert p99["ratio"] == pytest.approx(exporter["p99_ms"] / reference["p99_ms"])
    assert p99["met"] == (p99["ratio"] <= 2)
