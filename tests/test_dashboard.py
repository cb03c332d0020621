"""The Grafana dashboard and its provisioning: the JSON model, and every query run for real.

The live tests start the simulator, two exporters of the same apps (as during an
overlapping rollout, or two Prometheus jobs) and Prometheus (with the deployed scrape
config and rules) once for the module, then evaluate each panel's PromQL the way Grafana
would send it, with the dashboard variables replaced by concrete values.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exporter import __version__
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
    "job": ".*",
    "instance": ".*",
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


def substitute(expr: str, **values: str) -> str:
    """``expr`` as Grafana would send it to Prometheus, given ``GRAFANA_VALUES``."""
    chosen = {**GRAFANA_VALUES, **values}

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in chosen:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr}")
        return chosen[name]

    return VARIABLE.sub(value, expr)


def per_day_exprs() -> set[str]:
    """The queries of the per-day bars: range queries with a step of a day."""
    return {
        target["expr"]
        for panel in panels()
        for target in panel.get("targets", [])
        if target.get("range") and target.get("interval") == "1d"
    }


def grafana_time(expr: str) -> float | None:
    """When Grafana evaluates ``expr`` last: now, or for a per-day panel the step (a day)
    that starts today, counted from midnight in the dashboard's time zone (UTC)."""
    if expr not in per_day_exprs():
        return None
    assert dashboard()["timezone"] == "utc"
    return time.time() // 86400 * 86400


# Queries of the chat counts: each app's count must be taken once, however many exporters
# export it at once (a rollout, a restart, two jobs).
COUNT_METRICS = re.compile(r"\bconnectycube_(messages|dialogs)_\w+")


def count_queries() -> list[tuple[str, str]]:
    return [(title, expr) for title, expr in queries() if COUNT_METRICS.search(expr)]


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
    names = [v["name"] for v in dashboard()["templating"]["list"]]
    assert names == ["datasource", "job", "instance", "app"]  # each narrows the next
    queries = {
        "job": "label_values(connectycube_exporter_build_info, job)",
        "instance": 'label_values(connectycube_exporter_build_info{job=~"$job"}, instance)',
        "app": 'label_values(connectycube_up{job=~"$job", instance=~"$instance"}, app)',
    }
    for name, query in queries.items():
        chosen = variable(name)
        assert chosen["type"] == "query"
        assert chosen["datasource"] == DATASOURCE_REF
        assert chosen["query"] == chosen["definition"] == query
        assert chosen["multi"] is True
        assert chosen["includeAll"] is True
        assert chosen["allValue"] == ".*"


def test_every_connectycube_selector_follows_job_instance_and_app() -> None:
    for title, expr in queries():
        selectors = re.findall(r"\b(connectycube_\w+)(\{[^}]*\})?", expr)
        assert selectors, title
        for name, matchers in selectors:
            assert 'job=~"$job"' in matchers, f"{title}: {name} does not follow $job"
            assert 'instance=~"$instance"' in matchers, f"{title}: {name} ignores $instance"
            if name != "connectycube_exporter_build_info":  # the one metric without app
                assert 'app=~"$app"' in matchers, f"{title}: {name} does not follow $app"


def test_counts_are_taken_once_per_app_before_they_are_added_up() -> None:
    """sum() straight over the series would add the copies of two exporter pods."""
    assert len(count_queries()) >= 10
    for title, expr in count_queries():
        assert re.search(r"\bm(ax|in) by \(app\b", expr), f"{title}: no max by (app)"
        assert not re.search(r"\bsum(\s+by\s*\([^)]*\))?\s*\(\s*(connectycube_|delta)", expr), title


def test_version_panel_shows_the_running_version() -> None:
    (panel,) = [p for p in panels() if p["title"] == "Exporter version"]
    (target,) = panel["targets"]
    assert target["expr"].startswith("count by (version) (connectycube_exporter_build_info{")
    assert target["legendFormat"] == "{{version}}"
    assert panel["options"]["textMode"] == "value_and_name"


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

    Each exporter polls two apps: ``default`` works, ``broken`` has a key the API rejects,
    so that the health panels see a failing app and its API errors from the start. Two
    exporters of the same apps are scraped, as during an overlapping rollout; the
    simulator's clock stands still, so that both see the same counts.
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
    now = time.time()
    with ExitStack() as stack:
        server = start_simulator(Simulator(api_keys=[SECRET_KEY], clock=lambda: now))
        stack.callback(server.stop)
        targets = []
        for _ in range(2):
            exporter = Exporter(
                [
                    "--api-url",
                    server.url,
                    "--poll-interval-seconds",
                    "1",
                    "--config-file",
                    "apps.yml",
                ],
                cwd=work,  # also: no stray .env
            )
            stack.callback(exporter.stop)
            exporter.wait_for_value("connectycube_up", 1, app="default")
            exporter.wait_for_value("connectycube_up", 0, app="broken")
            targets.append(urlsplit(exporter.url).netloc)
        config = scrape_config_for(targets[0], work / "config")
        scrape = yaml.safe_load(config.read_text())
        (job,) = scrape["scrape_configs"]
        job["static_configs"] = [{"targets": targets}]
        config.write_text(yaml.safe_dump(scrape, sort_keys=False))
        prometheus = stack.enter_context(PrometheusServer(config, work / "data"))
        # The first scrape comes up to one interval (15 s) after start, then one per interval.
        prometheus.wait_for_scrapes(SCRAPES, timeout=50)
        prometheus.targets = targets  # type: ignore[attr-defined]
        yield prometheus


@pytest.mark.slow
@pytest.mark.parametrize("expr", [pytest.param(expr, id=title) for title, expr in queries()])
def test_query_returns_series(prometheus: PrometheusServer, expr: str) -> None:
    promql = substitute(expr)
    result = prometheus.query(promql, at=grafana_time(expr))
    assert result, f"no series for {promql}"
    for series in result:
        assert not math.isnan(float(series["value"][1])), series


def label_values(prometheus: PrometheusServer, name: str) -> list[str]:
    """What Grafana lists for the variable ``name``, every other variable on All."""
    match = re.fullmatch(r"label_values\((\w+(?:\{[^}]*\})?), (\w+)\)", variable(name)["query"])
    assert match is not None
    selector, label = match.groups()
    return prometheus.label_values(label, substitute(selector))


@pytest.mark.slow
def test_variables_list_the_jobs_exporters_and_apps(prometheus: PrometheusServer) -> None:
    assert label_values(prometheus, "job") == ["connectycube"]
    assert label_values(prometheus, "instance") == sorted(prometheus.targets)  # type: ignore[attr-defined]
    assert label_values(prometheus, "app") == ["broken", "default"]


@pytest.mark.slow
@pytest.mark.parametrize("expr", [pytest.param(expr, id=title) for title, expr in count_queries()])
def test_a_second_exporter_of_the_same_apps_changes_no_count(
    prometheus: PrometheusServer, expr: str
) -> None:
    """Both exporters together show what one of them alone shows."""
    (first, _) = prometheus.targets  # type: ignore[attr-defined]
    at = grafana_time(expr)
    both = prometheus.query(substitute(expr), at=at)
    alone = prometheus.query(substitute(expr, instance=first), at=at)  # its own address
    assert both
    assert {json.dumps(s["metric"], sort_keys=True): s["value"][1] for s in both} == {
        json.dumps(s["metric"], sort_keys=True): s["value"][1] for s in alone
    }


@pytest.mark.slow
def test_version_panel_counts_the_exporters_of_this_version(prometheus: PrometheusServer) -> None:
    (panel,) = [p for p in panels() if p["title"] == "Exporter version"]
    (target,) = panel["targets"]
    result = prometheus.query(substitute(target["expr"]))
    assert [(s["metric"], s["value"][1]) for s in result] == [({"version": __version__}, "2")]


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
    result = prometheus.query(substitute(expr, app="broken"))
    assert [(s["metric"]["app"], s["value"][1]) for s in result] == [("broken", "0")]
