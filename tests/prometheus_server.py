"""A real Prometheus server for the tests: started on a free loopback port, queried over HTTP.

The server is the ``prometheus`` binary of the machine (Debian's package in CI). Build a
config with :func:`scrape_config_for` (the deploy config, pointed at a test target) or pass
any config file, then::

    with PrometheusServer(config, tmp_path / "data") as prometheus:
        prometheus.wait_for_scrapes(2)
        prometheus.query("connectycube_up")

A storage folder that already holds data (a backfill) is served as it is.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml

from tests.conftest import require_tool
from tests.processes import wait_until

DEPLOY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "prometheus.yml"


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it; we release it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_config_for(
    target: str,
    directory: Path,
    source: Path = DEPLOY_CONFIG,
    job: str = "connectycube",
) -> Path:
    """Copy ``source`` into ``directory`` with ``job`` scraping ``target`` (``HOST:PORT``).

    Only the job's targets change, so the test runs what is deployed: scrape interval,
    timeout, path and rules. The rule files it names are copied next to the copy, because
    Prometheus resolves them relative to the config file.
    """
    config = yaml.safe_load(source.read_text())
    jobs = [scrape for scrape in config["scrape_configs"] if scrape["job_name"] == job]
    if len(jobs) != 1:
        raise ValueError(f"{source} has {len(jobs)} scrape jobs named {job!r}, expected 1")
    jobs[0]["static_configs"] = [{"targets": [target]}]
    directory.mkdir(parents=True, exist_ok=True)
    for rule_file in config.get("rule_files", []):
        shutil.copy(source.parent / rule_file, directory / rule_file)
    copy = directory / source.name
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    return copy


class PrometheusServer:
    """``prometheus`` on a free loopback port with the given config and storage folder.

    Starts in the constructor and waits until ready; use it as a context manager or call
    :meth:`stop`. Its log goes to ``prometheus.log`` next to the storage folder and is
    quoted in failures.
    """

    def __init__(
        self,
        config_file: Path,
        storage_path: Path,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 30,
    ) -> None:
        binary = require_tool("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        storage_path.mkdir(parents=True, exist_ok=True)
        self.log_path = storage_path.parent / f"{storage_path.name}-prometheus.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={storage_path}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._client = httpx.Client(base_url=self.url, timeout=10)
        try:
            wait_until(self._ready, ready_timeout, f"Prometheus to be ready at {self.url}")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.logs}")
        try:
            return self._client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    @property
    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a success, else an AssertionError."""
        response = self._client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(
                f"{path} {params} failed: HTTP {response.status_code}: "
                f"{body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate an instant query; the result list (one entry per series, or a scalar)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        return list(self.api(f"label/{label}/values", **{"match[]": match}))

    def wait_for_scrapes(self, count: int, job: str = "connectycube", timeout: float = 60) -> None:
        """Wait until every target of ``job`` has been scraped successfully ``count`` times."""
        expr = f'min(sum_over_time(up{{job="{job}"}}[1h]))'

        def scraped() -> bool:
            result = self.query(expr)
            return bool(result) and float(result[0]["value"][1]) >= count

        wait_until(scraped, timeout, f"{count} successful scrapes of job {job}")

    def stop(self, timeout: float = 10) -> int:
        """Terminate the server (it flushes its data to the storage folder); the exit code."""
        self._client.close()
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
