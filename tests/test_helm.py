"""The Helm chart, linted and rendered by Helm's own engine, as a cluster would read it.

helm-python-sdk carries Helm v4's library: ``lint(strict=True)`` and ``Chart.render`` run
offline, exactly as ``helm lint --strict`` and ``helm template`` do. The chart is rendered
with its defaults and with every example values file (all documented in docs/deploy.md);
every rendered core object is validated against the Kubernetes API schemas
(kubernetes-validate, strict, offline, the oldest and newest Kubernetes supported); the
Prometheus Operator objects are checked on the fields the operator reads; the objects are
checked against each other and against the exporter (its settings, routes, loaders), the
kustomize kit, the README; and a real Prometheus scrapes a real exporter configured with
the rendered Deployment's environment and probed on its probes' paths.
"""

from __future__ import annotations

import copy
import io
import re
import shlex
import subprocess
import tarfile
from collections.abc import Iterator
from functools import cache
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python as helm
import httpx
import kubernetes_validate
import pytest
import yaml

from exporter import __version__
from exporter.config import Settings, env_name, load_apps, load_settings
from exporter.webconfig import load_web_config
from tests import test_kubernetes as kit
from tests.conftest import SECRET_KEY
from tests.processes import Exporter, wait_until
from tests.prometheus_server import PrometheusServer
from tests.simulator import Simulator, start_simulator
from tests.test_deploy import assert_yamllint_passes
from tests.test_kubernetes import kinds, one

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "connectycube-exporter"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "connectycube.json"
README = ROOT / "README.md"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
VERSION = __version__  # the version's one source

RELEASE = kit.NAME  # the release name the README installs under: the kit's objects' name
NAMESPACE = "monitoring"
IMAGE = "ghcr.io/connectycube-exporter/connectycube-exporter"
MONITORING = "monitoring.coreos.com"
CHART_OCI = "oci://ghcr.io/connectycube-exporter/charts/connectycube-exporter"
RECOMMENDED = ("name", "instance", "version", "component", "part-of", "managed-by")
# The settings the chart sets itself, from its other values; every other one is a value.
CHART_MANAGED = frozenset(
    env_name(field)
    for field in (
        "api_key",  # never: the key comes from a Secret
        "api_key_file",
        "config_file",
        "web_config_file",
        "listen_address",  # the container port
        "shard",
        "total_shards",
    )
)
README_ENV_NAMES = frozenset(
    re.findall(r"^\| `(CONNECTYCUBE_\w+)` \|", README.read_text(encoding="utf-8"), re.M)
)

Objects = list[dict[str, Any]]


# --- rendering --------------------------------------------------------------------------


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render_files(values: dict[str, Any] | None = None, name: str = RELEASE) -> dict[str, str]:
    return chart().render(values or {}, name=name, namespace=NAMESPACE)


def render(values: dict[str, Any] | None = None, name: str = RELEASE) -> Objects:
    objects = []
    for path, text in render_files(values, name).items():
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def notes(values: dict[str, Any] | None = None) -> str:
    (text,) = [t for p, t in render_files(values).items() if p.endswith("NOTES.txt")]
    return text


def example(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "examples" / name).read_text())
    return values


def renders() -> list[Any]:
    """The defaults and every example values file."""
    return [pytest.param(None, id="defaults")] + [
        pytest.param(path.name, id=path.stem) for path in EXAMPLES
    ]


@cache
def rendered(example_name: str | None) -> Objects:
    return render(example(example_name) if example_name else None)


def env_of(objects: Objects) -> dict[str, dict[str, Any]]:
    return kit.env_of(kit.exporter_container(objects))


def env_values(objects: Objects) -> dict[str, str]:
    return {name: item["value"] for name, item in env_of(objects).items() if "value" in item}


# --- Helm's own checks ------------------------------------------------------------------


def test_examples_are_the_documented_ones() -> None:
    """Every example values file is shown in docs/deploy.md, and there is one per case."""
    assert {p.stem for p in EXAMPLES} == {"kube-prometheus-stack", "several-apps", "sharded", "tls"}
    docs = DEPLOY_DOC.read_text(encoding="utf-8")
    for path in EXAMPLES:
        assert f"charts/connectycube-exporter/examples/{path.name}" in docs, path.name


@pytest.mark.parametrize("example_name", renders())
def test_chart_passes_strict_lint(example_name: str | None) -> None:
    values = example(example_name) if example_name else None
    for kube_version in (f"v{v}" for v in kit.KUBERNETES_VERSIONS):
        report = helm.lint(
            CHART, values, strict=True, namespace=NAMESPACE, kube_version=kube_version
        )
        assert report["errors"] == [], report
        warnings = [m for m in report["messages"] if m["severity"] >= 2]
        assert warnings == [], warnings


def test_strict_lint_finds_what_is_wrong() -> None:
    """The linter is no rubber stamp: a value the schema forbids fails it."""
    report = helm.lint(CHART, {"settings": {"pollIntervall": 30}}, strict=True)
    assert any("pollIntervall" in error for error in report["errors"]), report


def test_yamllint_passes_on_the_values_and_the_chart_metadata() -> None:
    """The YAML files users read and copy (templates are Go templates, linted by Helm)."""
    files = [CHART / "Chart.yaml", CHART / "values.yaml", *EXAMPLES]
    assert_yamllint_passes(*(str(path.relative_to(ROOT)) for path in files))


def test_chart_version_and_app_version_are_the_packages() -> None:
    metadata = chart().metadata
    assert metadata["apiVersion"] == "v2"
    assert metadata["version"] == metadata["appVersion"] == VERSION
    assert metadata["name"] == CHART.name


def test_the_packaged_chart_holds_the_rules_and_the_dashboard_and_no_examples(
    tmp_path: Path,
) -> None:
    """As the release workflow packages it: the linked files become their contents."""
    archive = helm.package(CHART, destination=tmp_path, version=VERSION, app_version=VERSION)
    assert Path(archive).name == f"{CHART.name}-{VERSION}.tgz"
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert all(m.isfile() or m.isdir() for m in members.values())  # no links left
        read = tar.extractfile
        alerts = read(members[f"{CHART.name}/files/alerts.yml"])
        dashboard = read(members[f"{CHART.name}/files/connectycube.json"])
        assert alerts is not None
        assert dashboard is not None
        assert alerts.read() == ALERTS.read_bytes()
        assert dashboard.read() == DASHBOARD.read_bytes()
    assert not any("/examples/" in name for name in members)
    with helm.Chart.load(archive) as packaged:
        assert packaged.metadata["version"] == packaged.metadata["appVersion"] == VERSION
        manifests = packaged.render(example("kube-prometheus-stack.yaml"), name=RELEASE)
    rule = yaml.safe_load(io.StringIO(manifests[f"{CHART.name}/templates/prometheusrule.yaml"]))
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_values_schema_rejects_unknown_keys_and_a_key_in_values() -> None:
    for values in (
        {"settings": {"pollIntervall": 30}},
        {"apiKey": {"value": SECRET_KEY}},  # never a key in values
        {"settings": {"apiKey": SECRET_KEY}},
        {"shards": 0},
        {"settings": {"logLevel": "LOUD"}},
        {"image": {"digest": "latest"}},
    ):
        with pytest.raises(helm.HelmValuesError):
            chart().validate_schema(values)
    chart().validate_schema({"settings": {"logFormat": None, "pollIntervalSeconds": 0.5}})


# --- every render -----------------------------------------------------------------------


@pytest.mark.parametrize("example_name", renders())
def test_every_rendered_core_object_validates(example_name: str | None) -> None:
    objects = rendered(example_name)
    assert {obj["metadata"]["namespace"] for obj in objects} == {NAMESPACE}
    kit.assert_core_objects_validate(objects)


@pytest.mark.parametrize("example_name", renders())
def test_every_object_carries_the_recommended_labels(example_name: str | None) -> None:
    for obj in rendered(example_name):
        labels = obj["metadata"]["labels"]
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for key in RECOMMENDED:
            assert f"app.kubernetes.io/{key}" in labels, f"{where}: no app.kubernetes.io/{key}"
        assert labels["app.kubernetes.io/name"] == CHART.name, where
        assert labels["app.kubernetes.io/instance"] == RELEASE, where
        assert labels["app.kubernetes.io/version"] == VERSION, where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["helm.sh/chart"] == f"{CHART.name}-{VERSION}", where
        template = obj.get("spec", {}).get("template")
        if template:
            assert labels.items() <= template["metadata"]["labels"].items(), where
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector == {
                "app.kubernetes.io/name": CHART.name,
                "app.kubernetes.io/instance": RELEASE,
            }  # never a label that changes on upgrade


@pytest.mark.parametrize("example_name", renders())
def test_pod_runs_locked_down_under_its_own_service_account(example_name: str | None) -> None:
    objects = rendered(example_name)
    kit.assert_pod_runs_locked_down_under_its_own_service_account(objects)
    container = kit.exporter_container(objects)
    assert container["image"] == f"{IMAGE}:{VERSION}"
    assert "args" not in container
    assert "command" not in container


@pytest.mark.parametrize("example_name", renders())
def test_env_names_settings_and_keys_come_from_secrets(example_name: str | None) -> None:
    objects = rendered(example_name)
    env = env_of(objects)
    assert set(env) <= README_ENV_NAMES
    assert env_name("api_key") not in env
    assert "Secret" not in kinds(objects)  # created out of band, never overwritten
    if env_name("config_file") in env:
        assert env_name("api_key_file") not in env
        config_file = env[env_name("config_file")]["value"]
        volume = kit.mounted_volume(objects, config_file)
        if "secret" in volume:
            return  # the apps file and its keys, whole, in the user's Secret
        text = one(objects, "ConfigMap", volume["configMap"]["name"])["data"][
            PurePosixPath(config_file).name
        ]
        keys = [app["api_key_file"] for app in yaml.safe_load(text)["apps"]]
    else:
        keys = [env[env_name("api_key_file")]["value"]]
    assert keys
    for key_file in keys:
        assert kit.mounted_volume(objects, key_file)["secret"]["secretName"] == RELEASE


@pytest.mark.parametrize("example_name", renders())
def test_service_targets_the_pods_on_the_named_port(example_name: str | None) -> None:
    objects = rendered(example_name)
    service, owner = one(objects, "Service"), kit.workload(objects)
    labels = owner["spec"]["template"]["metadata"]["labels"]
    assert kit.selects(service["spec"]["selector"], labels)
    (container_port,) = kit.exporter_container(objects)["ports"]
    assert container_port == {
        "name": "metrics",
        "containerPort": kit.DEFAULT_PORT,
        "protocol": "TCP",
    }
    (service_port,) = service["spec"]["ports"]
    assert service_port == {
        "name": "metrics",
        "port": kit.DEFAULT_PORT,
        "targetPort": "metrics",
        "protocol": "TCP",
    }


@pytest.mark.parametrize("example_name", renders())
def test_probes_ask_routes_the_exporter_serves_over_the_scheme_it_speaks(
    example_name: str | None,
) -> None:
    objects = rendered(example_name)
    container = kit.exporter_container(objects)
    tls = env_name("web_config_file") in env_of(objects)
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path
        assert http_get["port"] == "metrics"
        assert http_get.get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP")
        assert kit.status_of(path) == HTTPStatus.OK


@pytest.mark.parametrize("example_name", renders())
def test_notes_render_and_name_the_workload(example_name: str | None) -> None:
    text = notes(example(example_name) if example_name else None)
    owner = kit.workload(rendered(example_name))
    assert f"rollout status {owner['kind'].lower()}/{owner['metadata']['name']}" in text
    assert f"-n {NAMESPACE} " in text


# --- the defaults: one app, one pod, nothing that needs a CRD ---------------------------


def test_defaults_are_one_pod_reading_the_key_of_the_secret_the_readme_creates() -> None:
    objects = rendered(None)
    assert kinds(objects) == ["Deployment", "Service", "ServiceAccount"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    key_file = env_of(objects)[env_name("api_key_file")]["value"]
    assert kit.mounted_volume(objects, key_file)["secret"]["secretName"] == RELEASE
    assert PurePosixPath(key_file).name == "api-key"
    assert "kubectl -n monitoring create secret generic connectycube-exporter" in notes()


def test_api_key_secret_name_and_entry_are_values() -> None:
    objects = render({"apiKey": {"existingSecret": "cc-keys", "key": "prod"}})
    key_file = env_of(objects)[env_name("api_key_file")]["value"]
    assert PurePosixPath(key_file).name == "prod"
    assert kit.mounted_volume(objects, key_file)["secret"]["secretName"] == "cc-keys"


def test_image_tag_digest_and_pull_settings() -> None:
    digest = "sha256:" + "ab" * 32
    objects = render(
        {
            "image": {"repository": "registry.example.com/cc", "tag": "9.9.9"},
            "imagePullSecrets": [{"name": "pull"}],
        }
    )
    assert kit.exporter_container(objects)["image"] == "registry.example.com/cc:9.9.9"
    assert kit.pod_spec(objects)["imagePullSecrets"] == [{"name": "pull"}]
    objects = render({"image": {"digest": digest, "pullPolicy": "Always"}})
    container = kit.exporter_container(objects)
    assert container["image"] == f"{IMAGE}@{digest}"
    assert container["imagePullPolicy"] == "Always"


def test_pod_placement_and_metadata_values_reach_the_pod() -> None:
    values = {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {}},
        "podAnnotations": {"example.com/a": "b"},
        "podLabels": {"team": "chat"},
        "priorityClassName": "low",
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "serviceAccount": {"create": False, "name": "shared"},
    }
    objects = render(values)
    template = kit.workload(objects)["spec"]["template"]
    pod = template["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod[key] == values[key]
    assert template["metadata"]["annotations"]["example.com/a"] == "b"
    assert template["metadata"]["labels"]["team"] == "chat"
    assert env_of(objects)["TZ"] == {"name": "TZ", "value": "UTC"}
    # Helm merges maps: the default limit on CPU stays.
    assert kit.exporter_container(objects)["resources"] == {
        "requests": {"cpu": "10m", "memory": "32Mi"},
        "limits": {"cpu": "500m", "memory": "64Mi"},
    }
    assert pod["serviceAccountName"] == "shared"
    assert "ServiceAccount" not in kinds(objects)
    for obj in objects:
        kubernetes_validate.validate(obj, kit.KUBERNETES_VERSIONS[-1], strict=True)


# --- settings ---------------------------------------------------------------------------


def camel_case(env: str) -> str:
    first, *rest = env.removeprefix("CONNECTYCUBE_").lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


def test_settings_values_are_the_readme_settings_the_chart_does_not_set_itself() -> None:
    schema = chart().schema
    assert schema is not None
    settings = set(schema["properties"]["settings"]["properties"])
    expected = {camel_case(name) for name in README_ENV_NAMES - CHART_MANAGED}
    assert settings == expected
    assert CHART_MANAGED <= README_ENV_NAMES  # the README lists each one it manages


# Each value is what a user writes in values.yaml; the exporter must read the rendered
# string back as the same setting (numbers in full, never 1.048576e+06).
EVERY_SETTING = {
    "appName": "prod",
    "apiUrl": "https://api.example.com",
    "dialogTypes": "1,2,5",
    "dialogTypeNames": "1=public,4=broadcast",
    "pollIntervalSeconds": 120,
    "requestTimeoutSeconds": 2.5,
    "pollTimeoutSeconds": 100,
    "timezone": "Europe/Berlin",
    "maxRetries": 3,
    "maxConcurrentRequests": 16,
    "maxResponseBytes": 2097152,
    "maxStalenessSeconds": 900,
    "webMaxConnections": 2048,
    "webMaxClientConnections": 128,
    "webHeaderTimeoutSeconds": 5,
    "webTlsHandshakeTimeoutSeconds": 7,
    "webIdleTimeoutSeconds": 300,
    "logLevel": "DEBUG",
    "logFormat": "text",
}


def test_every_setting_reaches_the_exporter_as_its_environment_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render({"settings": EVERY_SETTING})
    env = env_values(objects)
    for key, _value in EVERY_SETTING.items():
        name = f"CONNECTYCUBE_{re.sub(r'(?<!^)(?=[A-Z])', '_', key).upper()}"
        assert name in env, key
        monkeypatch.setenv(name, env[name])
    assert env[env_name("max_response_bytes")] == "2097152"
    settings = load_settings()
    assert settings.app_name == "prod"
    assert settings.api_url == "https://api.example.com"
    assert settings.dialog_types == [1, 2, 5]
    assert settings.dialog_type_names == {1: "public", 4: "broadcast"}
    assert settings.poll_interval_seconds == 120
    assert settings.request_timeout_seconds == 2.5
    assert settings.poll_timeout_seconds == 100
    assert settings.timezone == "Europe/Berlin"
    assert settings.max_retries == 3
    assert settings.max_concurrent_requests == 16
    assert settings.max_response_bytes == 2097152
    assert settings.max_staleness_seconds == 900
    assert settings.web_max_connections == 2048
    assert settings.web_max_client_connections == 128
    assert settings.web_header_timeout_seconds == 5
    assert settings.web_tls_handshake_timeout_seconds == 7
    assert settings.web_idle_timeout_seconds == 300
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "text"
    assert len(EVERY_SETTING) == len(Settings.model_fields) - len(CHART_MANAGED)


def test_a_null_setting_keeps_the_exporters_default() -> None:
    assert env_values(rendered(None))[env_name("log_format")] == "json"
    env = env_values(render({"settings": {"logFormat": None}}))
    assert env_name("log_format") not in env


# --- several apps -----------------------------------------------------------------------


def test_apps_of_the_values_are_a_configmap_the_exporter_loads(clean_env: Path) -> None:
    objects = rendered("several-apps.yaml")
    env = env_of(objects)
    config_file = env[env_name("config_file")]["value"]
    configmap = kit.mounted_volume(objects, config_file)["configMap"]["name"]
    text = one(objects, "ConfigMap", configmap)["data"][PurePosixPath(config_file).name]
    apps = yaml.safe_load(text)["apps"]
    assert apps == example("several-apps.yaml")["config"]["apps"]
    secret_mount = next(
        m["mountPath"]
        for m in kit.exporter_container(objects)["volumeMounts"]
        if m["name"] == "secret"
    )
    keys = clean_env / "secret"
    keys.mkdir()
    for app in apps:
        (keys / PurePosixPath(app["api_key_file"]).name).write_text(f"key-{app['name']}\n")
    config = clean_env / "apps.yml"
    config.write_text(text.replace(f"{secret_mount}/", f"{keys}/"))
    loaded = load_apps(load_settings({"config_file": config}))
    assert [app.name for app in loaded] == ["prod", "staging"]


def test_apps_file_from_an_existing_secret_needs_no_key_secret() -> None:
    objects = render({"config": {"existingSecret": "apps", "key": "mine.yml"}})
    config_file = env_of(objects)[env_name("config_file")]["value"]
    assert PurePosixPath(config_file).name == "mine.yml"
    assert kit.mounted_volume(objects, config_file)["secret"]["secretName"] == "apps"
    volumes = {v["name"]: v for v in kit.pod_spec(objects)["volumes"]}
    assert not any(v.get("secret", {}).get("secretName") == RELEASE for v in volumes.values())
    assert "ConfigMap" not in kinds(objects)


def test_apps_from_values_and_from_a_secret_at_once_is_an_error() -> None:
    with pytest.raises(helm.HelmRenderError, match="apps or existingSecret"):
        render({"config": {"existingSecret": "apps", "apps": [{"name": "a"}]}})


def checksum(objects: Objects) -> str:
    return str(
        kit.workload(objects)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )


def test_a_changed_apps_file_restarts_the_pod_and_nothing_else_does() -> None:
    values = example("several-apps.yaml")
    before = checksum(render(values))
    changed = copy.deepcopy(values)
    changed["config"]["apps"][0]["dialog_types"] = [1]
    assert checksum(render(changed)) != before
    unrelated = {**values, "serviceMonitor": {"enabled": True, "interval": "1m"}}
    assert checksum(render(unrelated)) == before


# --- Prometheus Operator ----------------------------------------------------------------


def operator_renders() -> list[Any]:
    return [
        p for p in renders() if p.values[0] and "ServiceMonitor" in kinds(rendered(p.values[0]))
    ]


def test_defaults_need_no_crd_and_the_examples_ask_for_the_stack() -> None:
    assert not {"ServiceMonitor", "PrometheusRule"} & set(kinds(rendered(None)))
    assert len(operator_renders()) == 3  # every example but several-apps


@pytest.mark.parametrize("example_name", operator_renders())
def test_servicemonitor_selects_the_service_and_follows_the_web_config(example_name: str) -> None:
    objects = rendered(example_name)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == f"{MONITORING}/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert "namespaceSelector" not in spec
    services = [o for o in objects if o["kind"] == "Service"]
    matched = [
        s for s in services if kit.selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in matched] == [RELEASE]
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}
    assert endpoint["path"] == kit.scrape_job()["metrics_path"]
    job = kit.scrape_job()["job_name"]
    (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
    assert relabel == {"action": "replace", "targetLabel": "job", "replacement": job}
    tls = env_name("web_config_file") in env_of(objects)
    assert endpoint.get("scheme", "http") == ("https" if tls else "http")
    assert ("tlsConfig" in endpoint) == tls
    if tls:
        verify = endpoint["tlsConfig"]
        assert "insecureSkipVerify" not in verify
        assert verify["serverName"] == RELEASE
        (certificate,) = [
            v["secret"]["secretName"]
            for v in kit.pod_spec(objects)["volumes"]
            if v["name"] == "tls"
        ]
        assert verify["ca"] == {"secret": {"name": certificate, "key": "ca.crt"}}


def test_servicemonitor_tls_and_basic_auth_can_be_given() -> None:
    auth = {
        "username": {"name": "scrape", "key": "username"},
        "password": {"name": "scrape", "key": "password"},
    }
    tls = {
        "insecureSkipVerify": False,
        "serverName": "x",
        "ca": {"configMap": {"name": "ca", "key": "c"}},
    }
    objects = render(
        {
            "webConfig": {"existingSecret": "web"},
            "serviceMonitor": {"enabled": True, "tlsConfig": tls, "basicAuth": auth},
        }
    )
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["tlsConfig"] == tls
    assert endpoint["basicAuth"] == auth
    # Basic auth without TLS: plain HTTP probes and scrapes, the web config still mounted.
    objects = render(
        {"webConfig": {"existingSecret": "web", "tls": False}, "serviceMonitor": {"enabled": True}}
    )
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert "scheme" not in endpoint
    assert "tlsConfig" not in endpoint
    assert "scheme" not in kit.exporter_container(objects)["livenessProbe"]["httpGet"]
    web_config = env_of(objects)[env_name("web_config_file")]["value"]
    assert kit.mounted_volume(objects, web_config)["secret"]["secretName"] == "web"


def test_prometheusrule_is_exactly_the_alerts_file() -> None:
    rule = one(rendered("kube-prometheus-stack.yaml"), "PrometheusRule")
    assert rule["apiVersion"] == f"{MONITORING}/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == {"groups": yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]}


def test_dashboard_configmap_is_byte_identical_with_a_configurable_label() -> None:
    objects = rendered("kube-prometheus-stack.yaml")
    configmap = one(objects, "ConfigMap", f"{RELEASE}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboard"
    assert configmap["data"] == {DASHBOARD.name: DASHBOARD.read_text(encoding="utf-8")}
    # Another sidecar's label; null drops the default one (Helm merges maps).
    labels = {"grafana_dashboard": None, "my_dashboards": "yes"}
    objects = render({"dashboard": {"enabled": True, "labels": labels}})
    labels = one(objects, "ConfigMap", f"{RELEASE}-dashboard")["metadata"]["labels"]
    assert labels["my_dashboards"] == "yes"
    assert "grafana_dashboard" not in labels


# --- sharding ---------------------------------------------------------------------------


def test_sharded_runs_one_pod_per_shard_behind_a_headless_service() -> None:
    objects = rendered("sharded.yaml")
    assert "Deployment" not in kinds(objects)
    statefulset = one(objects, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == example("sharded.yaml")["shards"] == 3
    assert one(objects, "Service", spec["serviceName"])["spec"]["clusterIP"] == "None"
    assert spec["podManagementPolicy"] == "Parallel"
    env = env_of(objects)
    assert env[env_name("total_shards")]["value"] == str(spec["replicas"])
    assert env[env_name("shard")]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env_name("config_file") in env
    assert env_name("api_key_file") not in env


def test_shards_is_one_value() -> None:
    objects = render({**example("sharded.yaml"), "shards": 5, "service": {"type": "NodePort"}})
    assert one(objects, "StatefulSet")["spec"]["replicas"] == 5
    assert env_of(objects)[env_name("total_shards")]["value"] == "5"
    service = one(objects, "Service")["spec"]
    assert (service["type"], service["clusterIP"]) == ("ClusterIP", "None")  # headless


def test_shards_without_an_apps_file_is_an_error() -> None:
    with pytest.raises(helm.HelmRenderError, match="config"):
        render({"shards": 2})


# --- the kustomize kit and the chart agree ----------------------------------------------

# Chart example -> kustomize overlay of the same deployment.
TWINS = {
    "kube-prometheus-stack.yaml": "kube-prometheus-stack",
    "tls.yaml": "tls",
    "sharded.yaml": "sharded",
}
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}


@pytest.mark.parametrize("example_name", list(TWINS))
def test_chart_and_kustomize_kit_agree(example_name: str) -> None:
    """The same labels, probes, security, resources, scrape settings and rules."""
    chart_objects = rendered(example_name)
    kit_objects = kit.rendered(kit.OVERLAYS / TWINS[example_name])
    for kind in ("Service", "ServiceAccount", "ServiceMonitor"):
        helm_labels = one(chart_objects, kind)["metadata"]["labels"]
        kit_labels = kit.one(kit_objects, kind)["metadata"]["labels"]
        assert {k: v for k, v in helm_labels.items() if k not in HELM_ONLY_LABELS} == kit_labels
    ours, theirs = kit.workload(chart_objects), kit.workload(kit_objects)
    assert ours["kind"] == theirs["kind"]
    assert ours["spec"]["selector"] == theirs["spec"]["selector"]
    for key in ("replicas", "strategy", "podManagementPolicy", "revisionHistoryLimit"):
        assert ours["spec"].get(key) == theirs["spec"].get(key), key
    pod, kit_pod = ours["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
    for key in ("securityContext", "automountServiceAccountToken", "enableServiceLinks"):
        assert pod[key] == kit_pod[key], key
    container = kit.exporter_container(chart_objects)
    kit_container = kit.exporter_container(kit_objects)
    for key in (
        "ports",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "securityContext",
        "image",
    ):
        assert container[key] == kit_container[key], key
    shard_env = {env_name("shard"), env_name("total_shards"), env_name("log_format")}
    for name in shard_env:
        assert env_of(chart_objects).get(name) == kit.env_of(kit_container).get(name), name
    assert one(chart_objects, "Service")["spec"].get("clusterIP") == kit.one(
        kit_objects, "Service"
    )["spec"].get("clusterIP")
    helm_monitor = one(chart_objects, "ServiceMonitor")["spec"]
    kit_monitor = kit.one(kit_objects, "ServiceMonitor")["spec"]
    assert helm_monitor == kit_monitor
    if example_name == "kube-prometheus-stack.yaml":
        assert (
            one(chart_objects, "PrometheusRule")["spec"]
            == kit.one(kit_objects, "PrometheusRule")["spec"]
        )
        ours_dashboard = one(chart_objects, "ConfigMap", f"{RELEASE}-dashboard")
        kit_dashboard = kit.one(kit_objects, "ConfigMap", f"{RELEASE}-dashboard")
        assert ours_dashboard["data"] == kit_dashboard["data"]
        labels = ours_dashboard["metadata"]["labels"]
        assert {k: v for k, v in labels.items() if k not in HELM_ONLY_LABELS} == kit_dashboard[
            "metadata"
        ]["labels"]


# --- the README's install ---------------------------------------------------------------


def helm_quick_start(markdown: str, heading: str) -> list[str]:
    """The commands of the first sh block under ``heading``, continuation lines joined."""
    section = markdown.split(heading, 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, heading
    return block[1].replace("\\\n", " ").strip().splitlines()


def test_the_readme_installs_metrics_alerts_and_dashboard_on_kube_prometheus_stack() -> None:
    """One kubectl create secret and one helm install, the same in docs/deploy.md, give
    what a stock kube-prometheus-stack selects: the monitor, the rules, the dashboard."""
    readme = helm_quick_start(README.read_text(encoding="utf-8"), "## Kubernetes")
    docs = helm_quick_start(
        DEPLOY_DOC.read_text(encoding="utf-8"), "### With Helm on kube-prometheus-stack"
    )
    assert readme == docs
    # The chart's own README (Artifact Hub, helm show readme) shows the same install.
    chart_readme = helm_quick_start((CHART / "README.md").read_text(encoding="utf-8"), "# ")
    (secret_line,) = [line for line in readme if "create secret" in line]
    (install_line,) = [line for line in readme if line.startswith("helm install")]
    assert chart_readme == [secret_line.removesuffix(" && rm api-key"), install_line]
    install = shlex.split(install_line)
    release, reference = install[2], install[3]
    assert reference == CHART_OCI
    options = install[4:]
    namespace = options[options.index("-n") + 1]
    values: dict[str, Any] = {}
    for index, option in enumerate(options):
        if option == "--set":
            values = merge(values, helm.parse_set_string(options[index + 1]))
    objects = render(values, name=release)
    assert one(objects, "ServiceMonitor", release)["metadata"]["labels"]["release"] == kit.RELEASE
    assert one(objects, "PrometheusRule", release)["metadata"]["labels"]["release"] == kit.RELEASE
    dashboard = one(objects, "ConfigMap", f"{release}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    text = "\n".join(readme)
    assert set(re.findall(r"kubectl -n (\S+)", text)) == {namespace}
    secret, entry = re.search(r"create secret generic (\S+) --from-file=([\w-]+)=", text).groups()
    key_file = env_of(objects)[env_name("api_key_file")]["value"]
    assert kit.mounted_volume(objects, key_file)["secret"]["secretName"] == secret
    assert PurePosixPath(key_file).name == entry
    (rollout,) = re.findall(r"rollout status (\S+)", text)
    owner = kit.workload(objects)
    assert rollout == f"{owner['kind'].lower()}/{owner['metadata']['name']}"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- a real exporter as the Deployment runs it, scraped by a real Prometheus ------------


def pod_environment(objects: Objects, mounts: dict[str, Path]) -> dict[str, str]:
    """The container's environment, mount paths moved to where the test put the files."""
    env = env_values(objects)
    for mount, local in mounts.items():
        env = {name: value.replace(f"{mount}/", f"{local}/") for name, value in env.items()}
    return env


@pytest.fixture
def simulator_url() -> Iterator[str]:
    server = start_simulator(Simulator(api_keys=[SECRET_KEY]))
    try:
        yield server.url
    finally:
        server.stop()


def scrape_job_of(monitor: dict[str, Any], address: str, ca_file: Path | None) -> dict[str, Any]:
    """The scrape config the Prometheus Operator makes of the ServiceMonitor's endpoint."""
    (endpoint,) = monitor["spec"]["endpoints"]
    (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
    job: dict[str, Any] = {
        "job_name": relabel["replacement"],
        "scheme": endpoint.get("scheme", "http"),
        "metrics_path": endpoint["path"],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": [{"targets": [address]}],
    }
    if "tlsConfig" in endpoint:
        assert ca_file is not None
        job["tls_config"] = {
            "ca_file": str(ca_file),
            "server_name": endpoint["tlsConfig"]["serverName"],
        }
    return job


@pytest.mark.slow
@pytest.mark.parametrize("example_name", ["kube-prometheus-stack.yaml", "tls.yaml"])
def test_prometheus_scrapes_an_exporter_run_as_the_deployment_runs_it(
    example_name: str, simulator_url: str, tmp_path: Path
) -> None:
    values = merge(
        example(example_name), {"settings": {"apiUrl": simulator_url, "pollIntervalSeconds": 1}}
    )
    objects = render(
        merge(values, {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}})
    )
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "api-key").write_text(SECRET_KEY + "\n")
    mounts = {kit.mounted_path(objects, "secret"): secret}
    verify: bool | str = True
    ca_file = None
    if "tls" in example_name:
        # The certificate's Secret as cert-manager writes it, and the web config of the
        # example's comment, in the web config's Secret.
        certificate = tmp_path / "tls"
        certificate.mkdir()
        kit.make_certificate(certificate, RELEASE)
        ca_file = certificate / "ca.crt"
        web = tmp_path / "web"
        web.mkdir()
        # The web config as docs/deploy.md writes it, its paths moved with the mount.
        (printf,) = re.findall(r"^printf .* > web-config\.yml$", DEPLOY_DOC.read_text(), re.M)
        subprocess.run(["bash", "-c", printf], cwd=web, check=True, timeout=30)
        tls_mount = kit.mounted_path(objects, "tls")
        text = (web / "web-config.yml").read_text().replace(f"{tls_mount}/", f"{certificate}/")
        (web / "web-config.yml").write_text(text)
        assert load_web_config(web / "web-config.yml").ssl_context is not None
        mounts |= {kit.mounted_path(objects, "web-config"): web}
        verify = False  # as the kubelet probes: no certificate check
    env = pod_environment(objects, mounts)
    assert env[env_name("api_url")] == simulator_url
    exporter = Exporter([], env=env, cwd=tmp_path, verify=verify)
    try:
        container = kit.exporter_container(objects)
        for probe in ("livenessProbe", "readinessProbe"):
            http_get = container[probe]["httpGet"]
            scheme = http_get.get("scheme", "HTTP").lower()
            assert exporter.url.startswith(f"{scheme}://")
            url = f"{exporter.url}{http_get['path']}"
            # As the kubelet probes: no certificate check.
            wait_until(
                lambda url=url: httpx.get(url, verify=False, timeout=5).status_code == 200,  # noqa: S501
                30,
                f"{probe} {url} to answer 200",
            )
        rules = tmp_path / "rules.yml"
        rules.write_text(
            yaml.safe_dump({"groups": one(objects, "PrometheusRule")["spec"]["groups"]})
        )
        job = scrape_job_of(
            one(objects, "ServiceMonitor"), exporter.url.split("://", 1)[1], ca_file
        )
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({"rule_files": [str(rules)], "scrape_configs": [job]}))
        with PrometheusServer(config, tmp_path / "data") as prometheus:
            prometheus.wait_for_scrapes(2, timeout=60)
            wait_until(
                lambda: prometheus.query('connectycube_up{job="connectycube",app="default"} == 1'),
                60,
                "connectycube_up of the app to be 1",
            )
            groups = prometheus.api("rules")["groups"]
            loaded = {rule["name"] for group in groups for rule in group["rules"]}
            expected = {
                rule["alert"]
                for group in yaml.safe_load(ALERTS.read_text())["groups"]
                for rule in group["rules"]
            }
            assert loaded == expected
            assert all(rule["health"] != "err" for g in groups for rule in g["rules"])
    finally:
        exporter.stop()
