"""Request bodies for the benchmark suite, generated from a fixed seed so every run sends the same bytes.

The same routing outcome is written twice: as the decision JSON moe-metricsd ingests, and as the
Prometheus text-format push a job would send the Pushgateway to publish the same numbers (one
counter series per expert plus the layer's totals and losses, grouped by job and layer).

Usable as a module (bench.py imports it) or from the command line:
    python3 payloads.py decision 64 > body.json
    python3 payloads.py batch 64 64 > batch.json
    python3 payloads.py push 64 > push.txt
"""

import json
import random
import sys


def expert_counts(experts, seed):
    """Tokens per expert: a skewed but deterministic spread, like a real router's."""
    rng = random.Random(seed * 7919 + experts)
    return [rng.randint(400, 1600) for _ in range(experts)]


def decision(layer, experts, seed=1):
    """One decision object as a worker sends it (keys in the order torsh's serde writes them)."""
    counts = expert_counts(experts, seed)
    total = sum(counts)
    return {
        "layer": layer,
        "worker": "rank-0",
        "step": 1000 + seed,
        "expert_capacities": counts,
        "total_tokens": total,
        "tokens_dropped": total // 97,
        "load_balance_loss": 0.0123,
        "router_z_loss": 0.00107,
        "auxiliary_loss": 0.0134,
        "latency_ms": 0.42,
    }


def decision_body(layer, experts, seed=1):
    return json.dumps(decision(layer, experts, seed), separators=(",", ":")).encode()


def batch_body(layers, experts, seed=1, prefix="L"):
    """One POST holding one decision for each of `layers` layers (named PREFIX0, PREFIX1, ...)."""
    items = [decision(f"{prefix}{i}", experts, seed + i) for i in range(layers)]
    return json.dumps(items, separators=(",", ":")).encode()


def push_body(experts, seed=1):
    """The Pushgateway equivalent of one decision: what a job pushes to
    /metrics/job/moe/layer/LAYER to publish the same per-expert and per-layer numbers."""
    d = decision("L0", experts, seed)
    lines = [
        "# TYPE moe_expert_tokens_total counter",
    ]
    for i, c in enumerate(d["expert_capacities"]):
        lines.append(f'moe_expert_tokens_total{{expert="{i}"}} {c}')
    lines += [
        "# TYPE moe_routing_decisions_total counter",
        "moe_routing_decisions_total 1",
        "# TYPE moe_routing_tokens_total counter",
        f"moe_routing_tokens_total {d['total_tokens']}",
        "# TYPE moe_routing_dropped_tokens_total counter",
        f"moe_routing_dropped_tokens_total {d['tokens_dropped']}",
        "# TYPE moe_routing_load_balance_loss gauge",
        f"moe_routing_load_balance_loss {d['load_balance_loss']}",
        "# TYPE moe_routing_router_z_loss gauge",
        f"moe_routing_router_z_loss {d['router_z_loss']}",
        "# TYPE moe_routing_auxiliary_loss gauge",
        f"moe_routing_auxiliary_loss {d['auxiliary_loss']}",
        "# TYPE moe_routing_latency_seconds gauge",
        f"moe_routing_latency_seconds {d['latency_ms'] / 1000}",
    ]
    return ("\n".join(lines) + "\n").encode()


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    kind = argv[1]
    if kind == "decision":
        out = decision_body("L0", int(argv[2]))
    elif kind == "batch" and len(argv) >= 4:
        out = batch_body(int(argv[2]), int(argv[3]))
    elif kind == "push":
        out = push_body(int(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.buffer.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
