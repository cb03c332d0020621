"""The benchmark's quick mode runs end to end, so that it never rots.

Speed is the benchmark's business (its table says which bars were met): this test only
checks that every scenario ran and produced numbers, never how good they were.
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
SCENARIOS = {"1", "2", "3", "4", "5"}


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
def test_quick_benchmark_runs_every_scenario(tmp_path: Path) -> None:
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
    assert set(results["scenarios"]) == SCENARIOS
    for number, scenario in results["scenarios"].items():
        assert "error" not in scenario, f"scenario {number}: {scenario.get('traceback')}"
        figures = numbers(scenario["figures"])
        assert figures, f"scenario {number} has no figures"
        assert all(math.isfinite(n) for n in figures), f"scenario {number}: {figures}"
        assert scenario["rows"], f"scenario {number} has no table rows"
        for row in scenario["rows"]:
            assert row["exporter"] not in ("", "-"), f"scenario {number}: {row}"
    assert results["machine"]["cores"] >= 1
    assert results["machine"]["python"]

    lines = result.stdout.splitlines()
    assert lines[0].startswith("| scenario | measure | exporter | baseline | ratio")
    assert lines[1].startswith("|---|")
    for number in SCENARIOS:
        assert any(line.startswith(f"| {number}. ") for line in lines), number
    assert any(line.startswith("Machine: ") for line in lines)
