"""The fleet rules on a real Prometheus scraping the real daemon.

promtool's unit tests (config/prometheus/tests) check the rules' arithmetic on made-up series;
this checks that they fit what the daemon really exports (names, labels, types): Prometheus
scrapes a daemon every second and evaluates config/prometheus/rules/*.yml every second.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import REPO_ROOT

RULES = REPO_ROOT / "config" / "prometheus" / "rules"


def free_port() -> int:
    # Prometheus does not report the port it bound, so ask the OS for a free one first.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, tmp_path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: install Debian's `prometheus` (scripts/install-deps test)")
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES / "moe-recording.yml"), str(RULES / "moe-alerts.yml")],
            "scrape_configs": [{"job_name": "moe-metricsd", "static_configs": [{"targets": [target]}]}],
        }))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp_path / "prometheus.log", "w+")
        self.process = subprocess.Popen(
            [binary, "--config.file=" + str(config), "--storage.tsdb.path=" + str(tmp_path / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_for(lambda: self.get("/-/ready") is not None, "Prometheus ready")

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.read()
        except (urllib.error.URLError, OSError):
            return None

    def query(self, expr):
        body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if body is None:
            return []
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in json.loads(body)["data"]["result"]}

    def wait_for(self, condition, what, timeout=60):
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                what = what() if callable(what) else what
                pytest.fail(f"waiting for {what}; Prometheus log:\n{self.log.read()[-3000:]}")
            time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


def by(results, label):
    return {dict(k).get(label): v for k, v in results.items()}


def test_recording_rules_and_alerts_on_the_daemons_metrics(daemon, tmp_path):
    layer = "prom.0"
    # Ten even decisions first, so that every counter starts well above zero: Prometheus then
    # extrapolates all of them alike and the ratios below are exact.
    first = {"layer": layer, "tokens_per_expert": [100, 100, 100, 100], "total_tokens": 200,
             "tokens_dropped": 50, "load_balance_loss": 0.5, "router_z_loss": 0.25,
             "auxiliary_loss": 0.125, "top_k": 2}
    status, reply = daemon.post("/v1/decisions", json.dumps([first] * 10).encode())
    assert 200 <= status < 300, reply
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{daemon.port}")
    try:
        tokens = f'moe_routing_tokens_total{{layer="{layer}"}}'
        prometheus.wait_for(lambda: list(prometheus.query(tokens).values()) == [2000.0], "the first scrape")
        # What the rates see: experts 0 and 1 only, two tokens of eight dropped, a null loss.
        second = dict(first, tokens_per_expert=[6, 2, 0, 0], total_tokens=8, tokens_dropped=2,
                      load_balance_loss=1.5, router_z_loss=0.75, auxiliary_loss=None)
        status, reply = daemon.post("/v1/decisions", json.dumps(second).encode())
        assert 200 <= status < 300, reply
        prometheus.wait_for(lambda: list(prometheus.query(tokens).values()) == [2008.0], "the second scrape")

        def value(expr):
            values = list(prometheus.query(expr).values())
            return values[0] if len(values) == 1 else None

        def close(expr, expected):
            return lambda: value(expr) is not None and math.isclose(value(expr), expected, rel_tol=1e-9)

        shares = f'layer_expert:moe_expert_token_share:ratio_rate5m{{layer="{layer}"}}'
        expected_shares = {"0": 0.75, "1": 0.25, "2": 0.0, "3": 0.0}
        prometheus.wait_for(
            lambda: {k: round(v, 9) for k, v in by(prometheus.query(shares), "expert").items()} == expected_shares,
            lambda: f"token shares {expected_shares} (have {by(prometheus.query(shares), 'expert')})")
        for expr, expected in [
            (f'layer:moe_routing_max_violation:ratio_rate5m{{layer="{layer}"}}', 2.0),  # 6 / mean 2 - 1
            (f'layer:moe_expert_dead:count{{layer="{layer}"}}', 2.0),
            (f'layer:moe_routing_dropped_tokens:ratio_rate5m{{layer="{layer}"}}', 0.25),
            (f'layer:moe_routing_load_balance_loss:avg_rate5m{{layer="{layer}"}}', 1.5),
            (f'layer:moe_routing_router_z_loss:avg_rate5m{{layer="{layer}"}}', 0.75),
            ('job:up:sum{job="moe-metricsd"}', 1.0),
        ]:
            prometheus.wait_for(close(expr, expected), lambda: f"{expr} == {expected} (have {value(expr)})")
        nonfinite = f'layer:moe_routing_nonfinite_losses:increase5m{{layer="{layer}"}}'
        prometheus.wait_for(lambda: (value(nonfinite) or 0) > 0, nonfinite + " > 0")

        def alerts():
            body = prometheus.get("/api/v1/alerts")
            found = {}
            for alert in json.loads(body)["data"]["alerts"] if body else []:
                if alert["labels"].get("layer") == layer:
                    found[alert["labels"]["alertname"]] = alert["state"]
            return found

        # The ones with a `for:` duration are pending within seconds; the non-finite loss fires.
        expected = {"MoEExpertsDead": "pending", "MoELayerImbalanced": "pending",
                    "MoETokensDropped": "pending", "MoENonFiniteLoss": "firing"}
        prometheus.wait_for(lambda: alerts() == expected, lambda: f"alerts {expected} (have {alerts()})", timeout=20)
    finally:
        prometheus.stop()
