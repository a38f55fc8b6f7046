"""The chart's alert rules: valid for the real promtool, behaving as their unit tests say, naming
only metrics the operator exports, and shipped by the chart's PrometheusRule unchanged."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.exported import exported_metric_names
from tests.support.incluster import CHART, find, render_chart
from tests.testbed import binaries

# The first run builds promtool when it is missing (minutes on a cold Go cache).
pytestmark = [] if binaries.is_built("promtool") else [pytest.mark.timeout(1800)]

RULES = CHART / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).resolve().parents[1] / "monitoring" / "prometheus-rules.test.yaml"
METRIC = re.compile(r"\b((?:dittofs_server|controller_runtime|leader_election|workqueue)_\w+)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(binaries.executable("promtool", "promtool")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alerts_fire_as_their_unit_tests_expect() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == tested


def test_the_rules_name_only_exported_metrics() -> None:
    exported = exported_metric_names()
    named = set(METRIC.findall(RULES.read_text()))
    assert named, "no metric found in the rules"
    assert named <= exported, sorted(named - exported)


def test_the_chart_ships_the_rules_when_asked() -> None:
    assert not find(render_chart(), "PrometheusRule")
    docs = render_chart({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}})
    (rule,) = find(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
