"""The benchmark's quick mode runs end to end, so that it never rots.

Speed is the benchmark's business: this test only checks that every measure was taken
and came out as a number, never how good it was.
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

    lines = result.stdout.splitlines()
    assert lines[0] == "| measure | exporter | baseline | exporter / baseline |"
    assert lines[1] == "|---|---|---|---|"
    assert len([line for line in lines if line.startswith("| ")]) == len(results["rows"]) + 1
    assert any(line.startswith("Machine: ") for line in lines)
