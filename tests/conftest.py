"""Shared fixtures: a clean environment and the secret that must never be seen."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# A key that looks like nothing else in the output, so that finding it means a leak.
SECRET_KEY = "sk-Zq7TgJ4wLp9XvN2sB6hR"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No CONNECTYCUBE_* variables and an empty working directory (no stray .env)."""
    for name in list(os.environ):
        if name.startswith("CONNECTYCUBE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def require_tool(name: str) -> str:
    """The path of a tool the tests run; CI must have it, a developer may go without."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: .ci/run must install it")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path
