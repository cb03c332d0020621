"""The Prometheus configuration and alerting rules, checked by promtool itself."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"
# The repository's address, as in [project.urls] of pyproject.toml.
RUNBOOK_URL = (
    "https://github.com/connectycube-exporter/connectycube-exporter/blob/main/docs/runbook.md"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts.test.yml"),
    ],
    ids=" ".join,
)
def test_promtool_accepts(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_and_annotated() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {rule["alert"] for rule in alerts} <= tested
    for rule in alerts:
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert rule.get("for"), rule["alert"]


def alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_its_own_section_of_the_runbook() -> None:
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    anchors = {github_anchor(heading): heading for heading in headings}
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == RUNBOOK_URL, rule["alert"]
        assert anchors.get(anchor) == rule["alert"], f"{rule['alert']}: no section #{anchor}"
    assert sorted(anchors.values()) == sorted(rule["alert"] for rule in alerts())


def test_severities_are_those_kube_prometheus_gives() -> None:
    """A down or missing target is a warning there; nothing here pages."""
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alerts()}
    assert set(severities.values()) <= {"warning", "info"}
    assert severities["ConnectyCubeExporterDown"] == "warning"
    assert severities["ConnectyCubeExporterAbsent"] == "warning"


def test_no_messages_today_is_tested_across_a_pod_restart() -> None:
    """A case where one app's history comes from two pods (other instance, other pod name)
    and the alert still fires: the labels it matches on survive a restart."""
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    restarted = []
    for case in tests:
        fires = [
            c
            for c in case["alert_rule_test"]
            if c["alertname"] == "ConnectyCubeNoMessagesToday" and c["exp_alerts"]
        ]
        series = [s["series"] for s in case["input_series"]]
        instances = {re.search(r'instance="([^"]+)"', s)[1] for s in series}
        pods = {m[1] for s in series if (m := re.search(r'pod="([^"]+)"', s))}
        if fires and len(instances) >= 2 and len(pods) >= 2:
            restarted.append(case["name"])
            for expected in fires:
                for alert in expected["exp_alerts"]:
                    assert "instance" not in alert["exp_labels"]
                    assert "pod" not in alert["exp_labels"]
    assert restarted, "no restarted-pod case for ConnectyCubeNoMessagesToday"
