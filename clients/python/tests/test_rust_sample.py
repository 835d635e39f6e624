"""The Rust example's sample output (serde's JSON of torsh RoutingDecisions) is accepted as is."""

from __future__ import annotations

import json

from conftest import REPO_ROOT

SAMPLE = REPO_ROOT / "clients" / "rust-example" / "sample-output.json"


def test_rust_sample_output_is_accepted(daemon):
    body = SAMPLE.read_bytes()
    decisions = json.loads(body)
    assert isinstance(decisions, list) and len(decisions) >= 2
    status, reply = daemon.post("/v1/decisions", body)
    assert 200 <= status < 300, reply
    assert json.loads(reply)["accepted"] == len(decisions)
    for decision in decisions:
        s = daemon.get_json("/v1/layers/" + decision["layer"])
        assert s["expert_token_counts"] == decision["expert_capacities"]
        assert s["total_tokens"] == decision["total_tokens"]
        assert s["tokens_dropped"] == decision["tokens_dropped"]
        # serde writes a NaN f32 as null; the daemon counts it instead of averaging it.
        nulls = sum(decision[k] is None for k in ("load_balance_loss", "router_z_loss", "auxiliary_loss"))
        assert s["nonfinite_losses"] == nulls
    assert any(d["router_z_loss"] is None for d in decisions), "the sample should show a null loss"
