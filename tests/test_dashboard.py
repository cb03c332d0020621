"""The Grafana dashboard and its provisioning: the JSON model, and every query run for real.

The live tests start the simulator, the exporter and Prometheus (with the deployed scrape
config and rules) once for the module, then evaluate each panel's PromQL the way Grafana
would send it, with the dashboard variables replaced by concrete values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import SECRET_KEY, require_tool
from tests.processes import Exporter
from tests.prometheus_server import PrometheusServer, scrape_config_for
from tests.simulator import Simulator, start_simulator

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "connectycube.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "connectycube.yml"

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}

# What Grafana would put in place of its variables. $__rate_interval is at least four
# scrape intervals (15 s in deploy/prometheus/prometheus.yml), so a rate has two samples.
GRAFANA_VALUES = {
    "app": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
    "__interval": "15s",
}
# $name, ${name}, ${name:format} and the old [[name]].
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)")

# Enough scrapes that the newest two both fall in the last $__rate_interval.
SCRAPES = 2


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from walk(panel.get("panels", []))


def panels() -> list[dict[str, Any]]:
    return list(walk(dashboard()["panels"]))


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query target of every panel."""
    found = []
    for panel in panels():
        targets = panel.get("targets", [])
        for target in targets:
            name = panel["title"] if len(targets) == 1 else f"{panel['title']} {target['refId']}"
            found.append((name, target["expr"]))
    return found


def variable(name: str) -> dict[str, Any]:
    matches = [v for v in dashboard()["templating"]["list"] if v["name"] == name]
    assert len(matches) == 1, f"dashboard variable {name}"
    return matches[0]


def substitute(expr: str) -> str:
    """``expr`` as Grafana would send it to Prometheus, given ``GRAFANA_VALUES``."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in GRAFANA_VALUES:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr}")
        return GRAFANA_VALUES[name]

    return VARIABLE.sub(value, expr)


# ----------------------------------------------------------------------------- the JSON


def test_dashboard_identity() -> None:
    board = dashboard()
    assert board["uid"] == "connectycube"
    assert board["title"] == "ConnectyCube chat activity"
    assert 36 <= board["schemaVersion"] <= 41
    assert board["id"] is None  # provisioned: Grafana assigns the id
    assert [p["title"] for p in board["panels"] if p["type"] == "row"] == [
        "Today",
        "Trends",
        "All time",
        "Exporter health",
    ]


def test_every_panel_is_titled_described_sourced_and_has_a_unit() -> None:
    for panel in panels():
        assert panel.get("title"), panel
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel.get("description", "").strip(), title
        assert panel["datasource"] == DATASOURCE_REF, title
        assert panel["fieldConfig"]["defaults"].get("unit"), title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, title
            assert target["expr"].strip(), title


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    boxes = [(p["title"], p["gridPos"]) for p in panels()]
    for title, box in boxes:
        assert box["x"] >= 0, title
        assert box["x"] + box["w"] <= 24, title  # Grafana's grid is 24 columns wide
    for i, (title, a) in enumerate(boxes):
        for other, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{title} overlaps {other}"


def test_variables() -> None:
    source = variable("datasource")
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    app = variable("app")
    assert app["type"] == "query"
    assert app["datasource"] == DATASOURCE_REF
    assert app["query"] == "label_values(connectycube_up, app)"
    assert app["multi"] is True
    assert app["includeAll"] is True
    assert app["allValue"] == ".*"


def test_every_connectycube_selector_filters_by_app() -> None:
    for title, expr in queries():
        selectors = re.findall(r"\b(connectycube_\w+)(\{[^}]*\})?", expr)
        assert selectors, title
        for name, matchers in selectors:
            assert 'app=~"$app"' in matchers, f"{title}: {name} does not follow $app"


def test_every_query_has_known_variables_only() -> None:
    for title, expr in queries():
        assert "$" not in substitute(expr), title


def test_provisioned_datasource_is_the_prometheus_of_compose() -> None:
    config = yaml.safe_load(DATASOURCES.read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    # The dashboard's datasource variable picks the default Prometheus data source.
    assert variable("datasource")["query"] == source["type"]


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    config = yaml.safe_load(PROVIDERS.read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --------------------------------------------------------------------- the live stack


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Simulator <- exporter <- Prometheus, scraped ``SCRAPES`` times; started once.

    The exporter polls two apps: ``default`` works, ``broken`` has a key the API rejects,
    so that the health panels see a failing app and its API errors from the start.
    """
    require_tool("prometheus")  # skip before starting anything else
    work = tmp_path_factory.mktemp("dashboard")
    apps = {
        "apps": [
            {"name": "default", "api_key": SECRET_KEY},
            {"name": "broken", "api_key": "sk-rejected-by-the-api"},
        ]
    }
    (work / "apps.yml").write_text(yaml.safe_dump(apps))
    with ExitStack() as stack:
        server = start_simulator(Simulator(api_keys=[SECRET_KEY]))
        stack.callback(server.stop)
        exporter = Exporter(
            ["--api-url", server.url, "--poll-interval-seconds", "1", "--config-file", "apps.yml"],
            cwd=work,  # also: no stray .env
        )
        stack.callback(exporter.stop)
        exporter.wait_for_value("connectycube_up", 1, app="default")
        exporter.wait_for_value("connectycube_up", 0, app="broken")
        config = scrape_config_for(urlsplit(exporter.url).netloc, work / "config")
        prometheus = stack.enter_context(PrometheusServer(config, work / "data"))
        # The first scrape comes up to one interval (15 s) after start, then one per interval.
        prometheus.wait_for_scrapes(SCRAPES, timeout=50)
        yield prometheus


@pytest.mark.slow
@pytest.mark.parametrize("expr", [pytest.param(expr, id=title) for title, expr in queries()])
def test_query_returns_series(prometheus: PrometheusServer, expr: str) -> None:
    promql = substitute(expr)
    result = prometheus.query(promql)
    assert result, f"no series for {promql}"
    for series in result:
        assert not math.isnan(float(series["value"][1])), series


@pytest.mark.slow
def test_app_variable_lists_the_exporters_apps(prometheus: PrometheusServer) -> None:
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable("app")["query"])
    assert match is not None
    metric, label = match.groups()
    assert prometheus.label_values(label, metric) == ["broken", "default"]


@pytest.mark.slow
def test_api_errors_show_the_failing_app_and_zero_for_the_healthy_one(
    prometheus: PrometheusServer,
) -> None:
    (expr,) = [expr for title, expr in queries() if title == "API errors"]
    result = prometheus.query(substitute(expr))
    healthy = [s for s in result if s["metric"]["app"] == "default"]
    failing = [s for s in result if s["metric"]["app"] == "broken"]
    assert healthy == [{"metric": {"app": "default"}, "value": healthy[0]["value"]}]
    assert float(healthy[0]["value"][1]) == 0
    assert {s["metric"]["outcome"] for s in failing} == {"http_error"}
    assert {s["metric"]["endpoint"] for s in failing} == {
        "messages/sent-total",
        "messages/sent-per-day",
        "dialogs/created-total",
        "dialogs/created-per-day",
    }
    assert all(float(s["value"][1]) > 0 for s in failing)


@pytest.mark.slow
def test_app_filter_narrows_to_one_app(prometheus: PrometheusServer) -> None:
    """A single chosen app is a plain regex too; the failing app has no message counts."""
    (expr,) = [expr for title, expr in queries() if title == "API polls"]
    result = prometheus.query(expr.replace("$app", "broken"))
    assert [(s["metric"]["app"], s["value"][1]) for s in result] == [("broken", "0")]
