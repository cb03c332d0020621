"""The summary table (Markdown, on stdout) and the JSON file with every raw figure."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.scenarios import Row

HEADER = ("scenario", "measure", "exporter", "baseline", "ratio exp/base", "bar", "met?")


def machine_line(machine: dict[str, Any], run: dict[str, Any]) -> str:
    load = f"load avg {run['loadavg_start']:.2f} at start, {run['loadavg_end']:.2f} at end"
    return (
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores "
        f"({machine['cores_usable']} usable), Python {machine['python']} "
        f"({machine['implementation']}), {machine['platform']}; {load}. "
        f"Exporter tree: {run['exporter_path']} ({run['exporter_revision'] or 'not a checkout'})"
        f"; simulator latency {run['params']['latency']:g} s per request"
        f"{'; QUICK mode, tiny sizes' if run['quick'] else ''}."
    )


def _ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if value >= 0.01 else f"{value:.4f}"


def _met(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(results: dict[str, Any]) -> str:
    """The Markdown table of every scenario that ran, failures included."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for number, scenario in results["scenarios"].items():
        title = f"{number}. {scenario['title']}"
        if "error" in scenario:
            lines.append(f"| {title} | FAILED: {_cell(scenario['error'])} | | | | | |")
            continue
        for row in scenario["rows"]:
            cells = (
                title,
                row["measure"],
                row["exporter"],
                row["baseline"],
                _ratio(row["ratio"]),
                row["bar"],
                _met(row["met"]),
            )
            lines.append("| " + " | ".join(_cell(str(c)) for c in cells) + " |")
    return "\n".join(lines)


def row_dict(row: Row) -> dict[str, Any]:
    return asdict(row)


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
