"""Processes under test, the simulator, scrape load and what /proc says about them.

Every design runs as its own process on loopback (``python -P -m ...``), so that its CPU
and memory are its own and the simulator's load never shares a GIL with the harness.
``-P`` keeps the working directory off ``sys.path``: the exporter comes from the tree put
first on ``PYTHONPATH`` (``--exporter-path``), never by accident from the current one.
"""

from __future__ import annotations

import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (https?://\S+?),")
SIMULATOR_LISTENING = re.compile(r"simulator listening on (http://\S+)")
CYCLE_DONE = re.compile(r"cycle (\d+) done in ([0-9.]+) s")
KEY_PREFIX = "bench-"
PYCACHE = Path(tempfile.gettempdir()) / "connectycube-benchmarks-pycache"

# What Prometheus 2.x sends: it prefers OpenMetrics and always accepts gzip.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchmarkError(RuntimeError):
    """A process did not behave as the benchmark needs (exited, never listened, ...)."""


def wait_until(check: Callable[[], T], timeout: float, what: str, step: float = 0.02) -> T:
    """Call ``check`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


def sleep_until(moment: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment``."""
    time.sleep(max(0.0, moment - time.monotonic()))


# --------------------------------------------------------------------------- the machine


def machine_info() -> dict[str, Any]:
    """CPU model, cores, Python and load: the context every absolute figure needs."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_1m": os.getloadavg()[0],
    }


def git_revision(tree: Path) -> str | None:
    """``HEAD`` of the tree (with ``-dirty`` when it has local changes), if it is a checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


# --------------------------------------------------------------------------- processes


def python_env(pythonpath: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The harness's environment without any exporter setting, with ``pythonpath`` first.

    Bytecode is cached under PYCACHE (never in the trees measured), even where
    PYTHONDONTWRITEBYTECODE is set: an installed exporter starts from compiled bytecode,
    so compiling must not count as start-up.
    """
    skip = {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CONNECTYCUBE_") and k not in skip
    }
    env["PYTHONPATH"] = str(pythonpath)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra or {})
    return env


class Process:
    """A child process; its stderr lines are kept with the monotonic time they arrived."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        self.name = name
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, name=f"{name}-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def logs(self) -> str:
        return "\n".join(line for _, line in self.lines[-40:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchmarkError(f"{self.name} exited with {self.popen.returncode}:\n{self.logs}")

    def find_lines(self, pattern: re.Pattern[str]) -> list[tuple[float, re.Match[str]]]:
        """Every line so far matching ``pattern``, with its arrival time."""
        return [(at, m) for at, line in list(self.lines) if (m := pattern.search(line))]

    def wait_for_line(
        self, pattern: re.Pattern[str], timeout: float, count: int = 1
    ) -> list[tuple[float, re.Match[str]]]:
        """The first ``count`` lines matching ``pattern``, waiting for them if needed."""

        def found() -> list[tuple[float, re.Match[str]]] | None:
            self.check_alive()
            matches = self.find_lines(pattern)
            return matches[:count] if len(matches) >= count else None

        return wait_until(found, timeout, f"{self.name}: {pattern.pattern!r} x{count}", 0.005)

    def listening_url(self, timeout: float = 30) -> tuple[str, float]:
        """The URL from the ``listening on URL,`` line, and seconds from start to that line."""
        at, match = self.wait_for_line(LISTENING, timeout)[0]
        return match.group(1), at - self.started

    def cpu_seconds(self) -> float:
        """User + system CPU time so far, from /proc/PID/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak resident) in bytes, from /proc/PID/status."""
        result = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                result[name] = int(value.split()[0]) * 1024
        return result

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def stop(self, wait: bool = True, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; ``wait=False`` leaves that to a thread.

        Not waiting saves the exporter's graceful shutdown (up to half a second) between
        runs; ``reap_all()`` at the end makes sure every process is gone.
        """
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        if wait:
            self._reap(timeout)
        else:
            reaper = threading.Thread(target=self._reap, args=(timeout,), daemon=True)
            reaper.start()
            _REAPERS.append(reaper)

    def _reap(self, timeout: float) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self._reader.join(timeout=5)


_REAPERS: list[threading.Thread] = []


def reap_all() -> None:
    """Wait for every process stopped with ``wait=False``."""
    while _REAPERS:
        _REAPERS.pop().join()


class Simulator:
    """``python -m tests.simulator`` from the current tree: the measuring instrument.

    With ``keepalive``, the same simulator behind an HTTP/1.1 keep-alive server
    (``benchmarks.keepalive``) instead of ``wsgiref``'s one answer per connection.
    """

    def __init__(self, latency: float, keepalive: bool = False) -> None:
        self.keepalive = keepalive
        argv = [
            sys.executable,
            "-P",
            "-m",
            "benchmarks.keepalive" if keepalive else "tests.simulator",
            "--listen",
            "127.0.0.1:0",
            "--key-prefix",
            KEY_PREFIX,
            "--latency",
            str(latency),
        ]
        self.process = Process("simulator", argv, python_env(REPO_ROOT))
        _, match = self.process.wait_for_line(SIMULATOR_LISTENING, 30)[0]
        self.url = match.group(1)
        self.latency = latency
        self._http = httpx.Client(base_url=self.url, timeout=10)

    def set_latency(self, latency: float) -> None:
        response = self._http.post("/_sim/faults", json={"latency": latency} if latency else {})
        response.raise_for_status()
        self.latency = latency

    def reset_stats(self) -> None:
        self._http.post("/_sim/stats/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self._http.get("/_sim/stats")
        response.raise_for_status()
        return response.json()

    def requests(self) -> int:
        return int(self.stats()["requests"])

    def wait_idle(self, timeout: float = 30) -> None:
        """Wait until no API request is in flight (a stopped design's last ones)."""
        wait_until(
            lambda: self.stats()["in_flight"] == 0, timeout, "the simulator to go idle", 0.05
        )

    def stop(self) -> None:
        self._http.close()
        self.process.stop()


# --------------------------------------------------------------------------- /metrics


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text: str, names: Iterable[str]) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the samples of ``names``; skips the rest cheaply.

    prometheus_client's parser would do, but it is slow on 25,000 series and the harness
    reads /metrics of 1000 apps many times.
    """
    wanted = tuple(names)
    samples = []
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        match = _SAMPLE.match(line)
        if match and match.group(1) in wanted:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


# --------------------------------------------------------------------------- scrape load


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def scrape_once(client: httpx.Client, url: str) -> tuple[float, int]:
    """Seconds for one whole ``/metrics`` answer and its size on the wire (not unzipped)."""
    started = time.perf_counter()
    size = 0
    with client.stream("GET", url) as response:
        for chunk in response.iter_raw():
            size += len(chunk)
        if response.status_code != 200:
            raise BenchmarkError(f"{url}: HTTP {response.status_code}")
    return time.perf_counter() - started, size


@dataclass
class LoadResult:
    """Latencies of a closed-loop scrape load."""

    scrapers: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    wire_bytes: int = 0

    def figures(self) -> dict[str, float | int]:
        ok = self.latencies or [math.nan]
        return {
            "scrapers": self.scrapers,
            "scrapes": len(self.latencies),
            "errors": self.errors,
            "seconds": round(self.elapsed, 3),
            "p50_ms": round(percentile(ok, 50) * 1000, 3),
            "p99_ms": round(percentile(ok, 99) * 1000, 3),
            "max_ms": round(max(ok) * 1000, 3),
            # A full listen backlog drops the SYN; the client retries after 1 s, then 3 s.
            "over_1s": sum(1 for t in self.latencies if t >= 1.0),
            "scrapes_per_s": round(len(self.latencies) / self.elapsed, 2) if self.elapsed else 0,
            "wire_bytes_per_scrape": self.wire_bytes // max(1, len(self.latencies)),
        }


def closed_loop(
    url: str,
    scrapers: int,
    duration: float,
    min_scrapes: int,
    max_duration: float,
    headers: Mapping[str, str] = PROMETHEUS_HEADERS,
) -> LoadResult:
    """``scrapers`` threads scraping back to back, each with its own keep-alive client.

    Runs for ``duration`` seconds, longer if fewer than ``min_scrapes`` were done (so a
    p99 means something), never longer than ``max_duration``.
    """
    result = LoadResult(scrapers)
    lock = threading.Lock()
    started = time.monotonic()

    def done() -> bool:
        elapsed = time.monotonic() - started
        return elapsed >= max_duration or (
            elapsed >= duration and len(result.latencies) >= min_scrapes
        )

    def worker() -> None:
        with httpx.Client(headers=dict(headers), timeout=60) as client:
            while not done():
                try:
                    seconds, size = scrape_once(client, url)
                except (httpx.HTTPError, BenchmarkError):
                    with lock:
                        result.errors += 1
                    continue
                with lock:
                    result.latencies.append(seconds)
                    result.wire_bytes += size

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed = time.monotonic() - started
    return result


class PeriodicScrapers:
    """Prometheus replicas: each scrapes every ``period`` s, phases spread evenly."""

    def __init__(self, url: str, replicas: int, period: float) -> None:
        self.url = url
        self.period = period
        self.scrapes = 0
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        start = time.monotonic()
        self._threads = [
            threading.Thread(target=self._run, args=(start + i * period / replicas,), daemon=True)
            for i in range(replicas)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, first: float) -> None:
        with httpx.Client(headers=PROMETHEUS_HEADERS, timeout=10) as client:
            moment = first
            while not self._stop.wait(max(0.0, moment - time.monotonic())):
                try:
                    scrape_once(client, self.url)
                    outcome = "ok"
                except (httpx.HTTPError, BenchmarkError):
                    outcome = "error"
                with self._lock:
                    self.scrapes += outcome == "ok"
                    self.errors += outcome == "error"
                # Like Prometheus, a late scrape does not make up for the ones it missed.
                moment += self.period
                while moment < time.monotonic():
                    moment += self.period

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
