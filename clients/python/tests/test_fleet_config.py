"""The Grafana dashboard only uses what the recording rules record, in PromQL promtool parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT

DASHBOARD = REPO_ROOT / "config" / "grafana" / "moe-metricsd-dashboard.json"
RULES = REPO_ROOT / "config" / "prometheus" / "rules" / "moe-recording.yml"


def expressions():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            exprs.append((variable["name"], re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query)))
    return exprs


def recorded_names():
    return set(re.findall(r"^\s*- record:\s*(\S+)\s*$", RULES.read_text(), re.M))


def test_dashboard_queries_use_recording_rules_only():
    recorded = recorded_names()
    assert "layer:moe_routing_max_violation:ratio_rate5m" in recorded
    exprs = expressions()
    assert len(exprs) >= 10
    for title, expr in exprs:
        names = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+", expr))
        assert names, f"{title}: {expr} uses no recording rule"
        assert names <= recorded, f"{title}: {names - recorded} is not recorded"
        # Raw daemon metrics aggregated in the browser would bypass the fleet-correct rules.
        assert "moe_routing_" not in re.sub(r"[a-zA-Z_]*:moe_[a-zA-Z0-9_:]+", "", expr), f"{title}: raw metric in {expr}"


def test_dashboard_queries_parse(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's `prometheus` (scripts/install-deps test)")
    lines = ["groups:", "  - name: dashboard_queries", "    rules:"]
    for i, (_, expr) in enumerate(expressions()):
        concrete = expr.replace("$layer", "decoder.0.moe").replace("${datasource}", "")
        lines.append(f"      - record: dashboard:query_{i}:check")
        lines.append("        expr: " + json.dumps(concrete))
    path = tmp_path / "queries.yml"
    path.write_text("\n".join(lines) + "\n")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_have_unique_ids_and_fit_the_grid():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
