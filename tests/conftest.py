"""Shared fixtures: a clean environment and the secret that must never be seen."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pki import PKI, make_pki
from tests.simulator import Simulator, start_simulator

# A key that looks like nothing else in the output, so that finding it means a leak.
SECRET_KEY = "sk-Zq7TgJ4wLp9XvN2sB6hR"
OTHER_KEY = "sk-other-app-key-0001"


def streaming_transport(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    """A mock API whose answers arrive as a stream, as over a network, not read in advance."""

    def streamed(request: httpx.Request) -> httpx.Response:
        answer = handler(request)
        body = httpx.ByteStream(answer.content)
        return httpx.Response(answer.status_code, headers=answer.headers, stream=body)

    return httpx.MockTransport(streamed)


def utc_day_start(now: float) -> float:
    return datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0).timestamp()


@pytest.fixture
def simulator() -> Iterator[tuple[Simulator, str]]:
    """The simulator over loopback HTTP, with no random history: only known activity."""
    sim = Simulator(api_keys=[SECRET_KEY, OTHER_KEY], random_history=False)
    server = start_simulator(sim)
    yield sim, server.url
    sim.set_faults()  # release a hanging request before stopping
    server.stop()


@pytest.fixture
def history(simulator: tuple[Simulator, str]) -> dict[str, float]:
    """Known activity: the tests' expected values are counted by hand from it.

    SECRET_KEY: messages 9 all time, 4 today; dialogs broadcast 1/0, group 3/2,
    private 5/5, public 0/0 (all time/today). OTHER_KEY: messages 17, 6 today.
    """
    sim, _ = simulator
    now = time.time()
    today, yesterday, long_ago = utc_day_start(now), utc_day_start(now) - 1, now - 10 * 86400
    sim.add_events(SECRET_KEY, "messages", [long_ago] * 3 + [yesterday] * 2 + [today] * 4)
    sim.add_events(SECRET_KEY, 1, [long_ago])
    sim.add_events(SECRET_KEY, 2, [yesterday, today, today])
    sim.add_events(SECRET_KEY, 3, [today] * 5)
    sim.add_events(OTHER_KEY, "messages", [yesterday] * 11 + [today] * 6)
    return {"today": today}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No CONNECTYCUBE_* variables and an empty working directory (no stray .env)."""
    for name in list(os.environ):
        if name.startswith("CONNECTYCUBE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def require_tool(name: str, package: str = "prometheus") -> str:
    """The path of a tool the tests run; CI must have it, a developer may go without."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: .ci/run must install it")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


@pytest.fixture
def served() -> Iterator[Callable[[Simulator], str]]:
    """Serve simulators over loopback HTTP; all stopped at the end of the test."""
    running: list[tuple[Simulator, Any]] = []

    def serve(sim: Simulator) -> str:
        server = start_simulator(sim)
        running.append((sim, server))
        return str(server.url)

    yield serve
    for sim, server in running:
        sim.set_faults()
        server.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))
