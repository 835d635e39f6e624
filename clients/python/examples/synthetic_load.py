"""Posts plausible routing decisions for a model that is not there: a demo and a dashboard check.

Each layer gets its own expert preference (most layers mildly uneven, a few collapsing onto a
handful of experts, some with experts that never receive a token); every step routes a batch of
tokens top-k with a capacity factor, drops what overflows, and reports Switch-style load-balance
and z losses with a measured-looking latency. Deterministic for a given seed.

    python synthetic_load.py http://127.0.0.1:9477 --layers 12 --experts 64 --steps 50
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moe_metricsd_client import MetricsClient  # noqa: E402


def layer_preferences(rng: random.Random, layers: int, experts: int) -> List[List[float]]:
    prefs = []
    for layer in range(layers):
        if layer % 5 == 3:
            # Router collapse: three experts take most of the traffic.
            weights = [rng.gammavariate(0.3, 1.0) for _ in range(experts)]
            for e in rng.sample(range(experts), 3):
                weights[e] += 6.0 / 3
        else:
            # Healthy but uneven, more even with depth (CV about 1/sqrt(shape)).
            weights = [rng.gammavariate(12.0 + 6.0 * layer, 1.0) for _ in range(experts)]
        if layer % 4 == 1:
            for e in rng.sample(range(experts), max(1, experts // 32)):
                weights[e] = 0.0  # dead experts
        total = sum(weights)
        prefs.append([w / total for w in weights])
    return prefs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:9477")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per batch")
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--capacity-factor", type=float, default=1.25)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prefix", default="decoder", help="layer names are PREFIX.N.moe")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    prefs = layer_preferences(rng, args.layers, args.experts)
    tokens, k, experts = args.tokens, args.top_k, args.experts
    capacity = math.ceil(tokens * k / experts * args.capacity_factor)
    with MetricsClient(args.url, worker="synthetic", max_queue=args.layers * args.steps + 1) as client:
        for step in range(args.steps):
            for layer, p in enumerate(prefs):
                wanted = [max(0, round(tokens * k * pe * (1 + 0.05 * rng.gauss(0, 1)))) if pe > 0 else 0 for pe in p]
                kept = [min(w, capacity, tokens) for w in wanted]
                # The noise can push the loads past what top-k routing allows (k x tokens in
                # all); the daemon refuses such a decision, so trim the largest loads.
                excess = sum(kept) - tokens * k
                for e in sorted(range(experts), key=lambda e: -kept[e]):
                    if excess <= 0:
                        break
                    cut = min(excess, kept[e])
                    kept[e] -= cut
                    excess -= cut
                dropped = min(tokens, sum(w - c for w, c in zip(wanted, kept)) // k)
                fraction = [c / max(1, sum(kept)) for c in kept]
                lb = experts * sum(f * pe for f, pe in zip(fraction, p))
                z = 0.4 + 0.1 * layer / max(1, args.layers) + 0.02 * rng.random()
                client.record(
                    f"{args.prefix}.{layer}.moe", kept, total_tokens=tokens, tokens_dropped=dropped,
                    load_balance_loss=lb, router_z_loss=z, auxiliary_loss=0.01 * lb + 0.001 * z,
                    step=step, top_k=k, expert_capacity=capacity, capacity_factor=args.capacity_factor,
                    latency_ms=0.3 + 0.05 * layer + 0.1 * rng.random(),
                )
        if not client.flush(60):
            sys.exit("timed out sending decisions")
    stats = client.stats
    print(f"sent {stats.sent} decisions, dropped {stats.dropped}, rejected {stats.rejected}")
    if stats.sent != args.layers * args.steps:
        sys.exit(1)


if __name__ == "__main__":
    main()
