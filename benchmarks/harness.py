"""The designs under test as processes on loopback, what /proc says of them, scrape load.

Every design runs as its own process, so that its CPU and memory are its own, started
with ``python -P`` so that the working directory never shadows the exporter's tree: the
exporter comes from the tree first on ``PYTHONPATH`` (``--exporter-path``).
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (http://\S+?),")
PYCACHE = Path(tempfile.gettempdir()) / "connectycube-benchmarks-pycache"
# What Prometheus 2.x sends: it prefers OpenMetrics and always accepts gzip.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def wait_until(check: Callable[[], T], timeout: float, what: str, step: float = 0.01) -> T:
    """Call ``check`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
    return result


def python_env(pythonpath: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without exporter settings, with ``pythonpath`` first.

    Bytecode is cached under PYCACHE even where PYTHONDONTWRITEBYTECODE is set: an
    installed exporter starts from compiled bytecode, so start-up must not count compiling.
    """
    skip = {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CONNECTYCUBE_") and k not in skip
    }
    return {**env, "PYTHONPATH": str(pythonpath), "PYTHONPYCACHEPREFIX": str(PYCACHE), **extra}


class Process:
    """A design serving on loopback; its stderr lines are kept with their arrival time.

    Starting waits for the ``listening on URL,`` line that the exporter and the baseline
    both print: ``url`` and ``listening_after`` (seconds from start) come from it.
    """

    def __init__(self, module: str, args: list[str], env: Mapping[str, str], cwd: Path) -> None:
        self.name = module
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, "-P", "-m", module, *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        at, match = self.wait_for_line(LISTENING, 30)[0]
        self.url: str = match.group(1)
        self.listening_after = at - self.started
        self.http = httpx.Client(base_url=self.url, timeout=60)  # reused: cheap to ask often

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            logs = "\n".join(line for _, line in self.lines[-40:])
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{logs}")

    def wait_for_line(
        self, pattern: re.Pattern[str], timeout: float, count: int = 1
    ) -> list[tuple[float, re.Match[str]]]:
        """The first ``count`` lines matching ``pattern`` with their arrival times."""

        def found() -> list[tuple[float, re.Match[str]]] | None:
            self.check_alive()
            lines = list(self.lines)
            matches = [(at, m) for at, line in lines if (m := pattern.search(line))]
            return matches[:count] if len(matches) >= count else None

        return wait_until(found, timeout, f"{self.name}: {pattern.pattern!r}", 0.005)

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (utime and stime of /proc/PID/stat)."""
        stat = Path(f"/proc/{self.popen.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Resident memory (VmRSS of /proc/PID/status)."""
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"{self.name}: no VmRSS")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within 10 s."""
        self.http.close()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self._reader.join(timeout=5)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def closed_loop(
    url: str,
    scrapers: int,
    duration: float,
    min_scrapes: int,
    max_duration: float,
    new_connections: bool = False,
) -> dict[str, Any]:
    """``scrapers`` threads scraping back to back, each with a keep-alive client, or with
    ``new_connections`` a connection of its own for each scrape, asking the server to close
    it (a bare socket: the client's share of the CPU stays small, so that it is the server
    that is measured).

    Runs ``duration`` seconds, longer until ``min_scrapes`` were done (so that a p99 means
    something), never longer than ``max_duration``. Latency is the whole answer read raw,
    not unzipped, on the client.
    """
    latencies: list[float] = []
    failed: list[str] = []
    wire_bytes: list[int] = []
    started = time.monotonic()

    def done() -> bool:
        elapsed = time.monotonic() - started
        return elapsed >= max_duration or (elapsed >= duration and len(latencies) >= min_scrapes)

    def scraper() -> None:
        if new_connections:
            return connecting_scraper()
        with httpx.Client(headers=PROMETHEUS_HEADERS, timeout=60) as client:
            while not done():
                began = time.perf_counter()
                try:
                    with client.stream("GET", url) as response:
                        size = sum(len(chunk) for chunk in response.iter_raw())
                        response.raise_for_status()
                except httpx.HTTPError as exc:
                    failed.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - began)
                wire_bytes.append(size)

    def connecting_scraper() -> None:
        parts = urlsplit(url)
        address = (parts.hostname, parts.port)
        head = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        request = head + "".join(f"{k}: {v}\r\n" for k, v in PROMETHEUS_HEADERS.items()) + "\r\n"
        while not done():
            began = time.perf_counter()
            try:
                with socket.create_connection(address, timeout=60) as sock:
                    sock.sendall(request.encode())
                    answer = b"".join(iter(partial(sock.recv, 1 << 16), b""))
                if not answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
                    raise OSError(answer[:40])
            except OSError as exc:
                failed.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - began)
            wire_bytes.append(len(answer) - answer.index(b"\r\n\r\n") - 4)

    threads = [threading.Thread(target=scraper, daemon=True) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "scrapers": scrapers,
        "scrapes": len(latencies),
        "failed": len(failed),
        "seconds": round(elapsed, 3),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "scrapes_per_s": round(len(latencies) / elapsed, 1),
        "wire_bytes_per_scrape": wire_bytes[-1] if wire_bytes else 0,
    }
