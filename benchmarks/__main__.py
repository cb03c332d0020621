"""``python -m benchmarks``: measure, print the table, write every raw figure as JSON.

The table goes to stdout, progress to stderr. The exit code is 0 when everything was
measured, whatever the figures: they are findings, not tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import platform
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.api import BenchAPI, Listeners, start_api
from benchmarks.harness import REPO_ROOT
from benchmarks.report import goal_rows, goal_table, poll_rows, scrape_rows, table
from benchmarks.scenarios import FULL, KEY_PREFIX, QUICK, Bench


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the exporter beside the baseline design, on loopback.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, under a minute")
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
        help="source tree of the exporter to measure, e.g. a git worktree of an older commit "
        "(default: this one); the simulator and the baseline always come from this one",
    )
    args = parser.parse_args(argv)
    if not (args.exporter_path / "exporter" / "__init__.py").is_file():
        parser.error(f"--exporter-path: no exporter package in {args.exporter_path}")
    args.exporter_path = args.exporter_path.resolve()
    return args


def revision(tree: Path) -> str:
    """The tree's commit, marked ``-dirty`` with local changes, or why there is none."""
    try:
        head, dirty = (
            subprocess.run(
                ["git", "-C", str(tree), *command], capture_output=True, text=True, check=True
            ).stdout.strip()
            for command in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "-uno"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head + ("-dirty" if dirty else "")


def machine(api: Listeners) -> dict[str, Any]:
    """What every absolute figure depends on: the CPU, its load, Python, the API's transport."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    context = ssl.create_default_context(cafile=api.ca_file)
    connection = http.client.HTTPSConnection(urlsplit(api.url("https")).netloc, context=context)
    try:
        connection.request("GET", "/")
        answer = connection.getresponse()
        answer.read()
        keepalive = answer.version == 11 and answer.getheader("Connection") != "close"
        tls = connection.sock.version()  # type: ignore[union-attr]
    finally:
        connection.close()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg()[0],
        "api_transport": f"HTTPS ({tls}), "
        + ("HTTP/1.1 keep-alive" if keepalive else "a new connection per request"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = QUICK if args.quick else FULL
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="connectycube-bench-") as workdir:
        keys = max(*params.apps, params.transport_apps)
        api = start_api(BenchAPI(KEY_PREFIX, keys), Path(workdir))
        try:
            run = machine(api)
            results = Bench(api, args.exporter_path, Path(workdir), params).run()
        finally:
            api.stop()
    run |= {
        "loadavg_end": os.getloadavg()[0],
        "seconds": round(time.monotonic() - started),
        "exporter": f"{args.exporter_path} ({revision(args.exporter_path)})",
        "params": dataclasses.asdict(params),
    }
    rows = poll_rows(results) + scrape_rows(results, params)
    goals = goal_rows(results, params)
    print(table(rows))
    print()
    print(goal_table(goals))
    print(
        f"\nMachine: {run['cpu']}, {run['cores']} cores, Python {run['python']}, "
        f"{run['platform']}; load average {run['loadavg_start']:.2f} at start, "
        f"{run['loadavg_end']:.2f} at end. Exporter: {run['exporter']}. API: "
        f"{params.latency:g} s per request, {run['api_transport']}"
        f"{'. QUICK: tiny sizes' if args.quick else ''}. The run took {run['seconds']} s."
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figures = {
        "run": run,
        "figures": results,
        "rows": [row._asdict() for row in rows],
        "goals": [goal._asdict() for goal in goals],
    }
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"Every figure: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
