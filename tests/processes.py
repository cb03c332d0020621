"""Real exporter processes for the integration tests, and reading what they serve."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

LISTENING = re.compile(r"listening on (https?://\S+?),")


def wait_until(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def parse_metrics(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def read_backfill(text: str) -> dict[tuple[str, str, str], dict[int, float]]:
    """A backfill's OpenMetrics: (metric, app, dialog_type) -> {timestamp: value}."""
    series: dict[tuple[str, str, str], dict[int, float]] = {}
    for family in openmetrics_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels["app"], sample.labels.get("dialog_type", ""))
            series.setdefault(key, {})[sample.timestamp.sec] = sample.value
    return series


class Exporter:
    """``python -m exporter`` on a free loopback port, its stderr collected line by line."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        open_files: int | None = None,
        **http_options: Any,
    ):
        """``open_files`` is the process's limit (``ulimit -n``, soft and hard); ``http_options``
        go to every httpx request (``verify``, ``cert``, ``auth``)."""
        self.http_options = http_options
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTYCUBE_")}
        command = [sys.executable, "-m", "exporter", "--listen-address", "127.0.0.1:0", *args]
        self.process = subprocess.Popen(
            command,
            env={**clean, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.url = wait_until(self._listening_url, 20, "the exporter to listen")
        except BaseException:
            self.process.kill()  # never leave a stray exporter behind a failed start
            raise

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def _listening_url(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"exporter exited early: {self.logs}")
        for line in self.lines:
            if match := LISTENING.search(line):
                return match.group(1)
        return None

    @property
    def logs(self) -> str:
        return "\n".join(self.lines)

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=headers, timeout=5, **self.http_options)

    def metrics(self) -> Samples:
        response = self.get("/metrics")
        assert response.status_code == 200
        return parse_metrics(response.text)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))

    def wait_for_value(
        self, name: str, expected: float, timeout: float = 10, **labels: str
    ) -> None:
        wait_until(
            lambda: self.value(name, **labels) == expected,
            timeout,
            f"{name}{labels} == {expected}, last {self.value(name, **labels)}",
        )

    def wait_for_log(self, pattern: str, timeout: float = 10) -> str:
        regex = re.compile(pattern)
        return wait_until(
            lambda: next((line for line in self.lines if regex.search(line)), None),
            timeout,
            f"a log line matching {pattern!r}; got:\n{self.logs}",
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self._reader.join(timeout=5)
        return code


def _limit_open_files(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def run_exporter_once(
    args: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m exporter`` expecting it to exit on its own (bad input, --help)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTYCUBE_")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env={**clean, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def start_exporter(url: str, *args: str, key: str | None = None, **http_options: Any) -> Exporter:
    """The exporter polling ``url`` every 0.3 s with ``key``, plus any other flags."""
    return Exporter(
        [
            "--api-url",
            url,
            "--poll-interval-seconds",
            "0.3",
            "--request-timeout-seconds",
            "1",
            *args,
        ],
        env={"CONNECTYCUBE_API_KEY": key} if key else {},
        **http_options,
    )
