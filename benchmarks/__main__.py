"""``python -m benchmarks``: run the scenarios, print the table, write the JSON.

The exit code is 0 when every scenario ran (whether or not its bars were met: the bars
are findings, shown in the table), 1 when one failed to run, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.designs import Bench
from benchmarks.harness import REPO_ROOT, Simulator, git_revision, machine_info, reap_all
from benchmarks.report import machine_line, row_dict, table, write_json
from benchmarks.scenarios import FULL, QUICK, SCENARIOS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the exporter against the naive design, on loopback.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds each")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "latest.json",
        help="JSON file of every figure (default: benchmarks/results/latest.json)",
    )
    parser.add_argument(
        "--exporter-path",
        type=Path,
        default=REPO_ROOT,
        metavar="DIR",
        help="source tree of the exporter to measure, e.g. a git worktree of an older "
        "commit (default: this tree); the simulator and designs always come from this one",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(map(str, SCENARIOS)),
        help="comma separated scenario numbers (default: all)",
    )
    parser.add_argument("--max-apps", type=int, help="largest number of apps to run")
    args = parser.parse_args(argv)
    try:
        args.scenario_numbers = sorted({int(part) for part in args.scenarios.split(",") if part})
    except ValueError:
        parser.error("--scenarios: expected numbers like 1,2,5")
    unknown = [n for n in args.scenario_numbers if n not in SCENARIOS]
    if unknown or not args.scenario_numbers:
        parser.error(f"--scenarios: choose among {sorted(SCENARIOS)}")
    if not (args.exporter_path / "exporter" / "__init__.py").is_file():
        parser.error(f"--exporter-path: no exporter package in {args.exporter_path}")
    if args.max_apps is not None and args.max_apps < 1:
        parser.error("--max-apps must be >= 1")
    args.exporter_path = args.exporter_path.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = dataclasses.replace(QUICK if args.quick else FULL, max_apps=args.max_apps)
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "run": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "exporter_path": str(args.exporter_path),
            "exporter_revision": git_revision(args.exporter_path),
            "benchmark_revision": git_revision(REPO_ROOT),
            "params": dataclasses.asdict(params),
            "loadavg_start": os.getloadavg()[0],
        },
        "scenarios": {},
    }
    failed = False
    simulator = Simulator(params.latency)
    try:
        with tempfile.TemporaryDirectory(prefix="connectycube-bench-") as workdir:
            bench = Bench.create(simulator, args.exporter_path, Path(workdir))
            for number in args.scenario_numbers:
                title, scenario = SCENARIOS[number]
                print(f"scenario {number}: {title} ...", file=sys.stderr, flush=True)
                began = time.monotonic()
                entry: dict[str, Any] = {"title": title}
                try:
                    outcome = scenario(bench, params)
                    entry["figures"] = outcome.figures
                    entry["rows"] = [row_dict(row) for row in outcome.rows]
                except Exception as exc:  # one broken scenario must not hide the others
                    failed = True
                    entry["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    entry["traceback"] = traceback.format_exc()
                    print(entry["traceback"], file=sys.stderr)
                entry["seconds"] = round(time.monotonic() - began, 1)
                results["scenarios"][str(number)] = entry
                print(f"scenario {number} took {entry['seconds']} s", file=sys.stderr, flush=True)
    finally:
        reap_all()
        simulator.stop()
    results["run"]["loadavg_end"] = os.getloadavg()[0]
    results["run"]["seconds"] = round(time.monotonic() - started, 1)

    print(table(results))
    print()
    print(machine_line(results["machine"], results["run"]))
    print(f"Figures: {args.output} (run took {results['run']['seconds']} s)")
    write_json(args.output, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
