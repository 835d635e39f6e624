"""Writes planner test vectors by running DeepSeek's EPLB reference (eplb.py, rebalance_experts).

usage: python generate.py PATH/TO/eplb.py OUTDIR        (needs torch; numpy is optional)

Each file holds one case, or under "cases" several, in the layout of the other vectors here:
"inputs" (weight [layers][experts], num_replicas, num_groups, num_nodes, num_gpus) and "reference"
(phy2log, logcnt, gpu_loads, max_gpu_load, balancedness, seconds) as the reference returned them.
A replica carries its expert's load over the expert's replica count; slot p is on GPU
p // (num_replicas // num_gpus). The loads come from a seeded generator, so a rerun writes the
same inputs.
"""
import importlib.util
import json
import random
import sys
import time

import torch


def load_reference(path):
    spec = importlib.util.spec_from_file_location("eplb_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(eplb, weight, replicas, groups, nodes, gpus):
    started = time.perf_counter()
    phy2log, _, logcnt = eplb.rebalance_experts(torch.tensor(weight, dtype=torch.float64), replicas, groups, nodes, gpus)
    seconds = time.perf_counter() - started
    per_gpu = replicas // gpus
    loads = []
    for layer, row in enumerate(weight):
        gpu = [0.0] * gpus
        for slot in range(replicas):
            expert = int(phy2log[layer, slot])
            gpu[slot // per_gpu] += float(row[expert]) / int(logcnt[layer, expert])
        loads.append(gpu)
    peaks = [max(g) for g in loads]
    return {
        "inputs": {"weight": weight, "num_replicas": replicas, "num_groups": groups, "num_nodes": nodes, "num_gpus": gpus},
        "reference": {
            "phy2log": phy2log.tolist(),
            "logcnt": logcnt.tolist(),
            "gpu_loads": loads,
            "max_gpu_load": peaks,
            "balancedness": [(sum(row) / gpus / p) if p > 0 else 1.0 for row, p in zip(weight, peaks)],
            "seconds": seconds,
        },
    }


def skewed(rng, layers, experts, exponent, tokens, integral=True):
    """Loads falling off as rank^-exponent over a shuffled expert order, with +-20% noise."""
    rows = []
    for _ in range(layers):
        order = list(range(experts))
        rng.shuffle(order)
        row = [0] * experts
        for position, expert in enumerate(order):
            value = tokens / (position + 1) ** exponent * rng.uniform(0.8, 1.2)
            row[expert] = int(value) if integral else round(value, 3)
        rows.append(row)
    return rows


def random_shape(rng):
    """A shape that satisfies EPLB's preconditions, hierarchical or global."""
    nodes = rng.choice([1, 1, 2, 2, 4])
    gpus = nodes * rng.choice([1, 2, 3, 4])
    if rng.random() < 0.7:
        groups = nodes * rng.choice([1, 2, 3])
    else:
        groups = rng.choice([g for g in (3, 5, 6, 7) if g % nodes != 0] or [3])
    group_size = rng.choice([1, 2, 3, 4, 5])
    experts = groups * group_size if groups % nodes == 0 else rng.choice([4, 6, 8, 12, 16, 20])
    per_gpu = -(-experts // gpus) + rng.choice([0, 0, 1, 2])
    return experts, gpus * per_gpu, groups, nodes, gpus


def main():
    eplb = load_reference(sys.argv[1])
    out = sys.argv[2]
    rng = random.Random(14)

    def write(name, record):
        record = {"name": name, **record}
        with open(f"{out}/{name}.json", "w") as f:
            json.dump(record, f, separators=(",", ":"))
        print(name)

    # DeepSeek-V3's shape: 58 MoE layers of 256 experts in 8 groups, 32 extra replicas on 4 nodes x 8 GPUs.
    write("deepseek_58x256_hierarchical", run(eplb, skewed(rng, 58, 256, 0.8, 40000), 288, 8, 4, 32))
    # The global policy: 3 groups do not divide over 2 nodes.
    write("global_12x64", run(eplb, skewed(rng, 12, 64, 1.1, 20000), 80, 3, 2, 16))
    # One slot per GPU: EPLB's packing is the identity there, and only the replication works.
    write("one_slot_per_gpu_6x16", run(eplb, skewed(rng, 6, 16, 0.6, 5000), 32, 4, 2, 32))
    # A non-divisible expert count (Qwen-like 60 experts) with fractional loads.
    write("fractional_8x60", run(eplb, skewed(rng, 8, 60, 1.0, 900.5, integral=False), 64, 4, 2, 8))
    # One very hot expert per layer.
    hot = skewed(rng, 6, 32, 0.2, 1000)
    for row in hot:
        row[rng.randrange(32)] *= 40
    write("hot_expert_6x32", run(eplb, hot, 48, 4, 2, 8))
    # Many small random shapes and loads (ties, zeros, skews) in one file.
    cases = []
    for i in range(60):
        experts, replicas, groups, nodes, gpus = random_shape(rng)
        layers = rng.choice([1, 2, 3])
        kind = rng.choice(["skewed", "uniform", "sparse", "ties"])
        if kind == "skewed":
            weight = skewed(rng, layers, experts, rng.choice([0.5, 1.0, 1.5]), rng.choice([50, 1000, 100000]))
        elif kind == "uniform":
            weight = [[rng.randint(0, 100) for _ in range(experts)] for _ in range(layers)]
        elif kind == "sparse":
            weight = [[rng.choice([0, 0, 0, rng.randint(1, 50)]) for _ in range(experts)] for _ in range(layers)]
        else:
            weight = [[rng.choice([1, 5, 5, 9]) for _ in range(experts)] for _ in range(layers)]
        cases.append({"name": f"random_{i}_{kind}", **run(eplb, weight, replicas, groups, nodes, gpus)})
    with open(f"{out}/random_small.json", "w") as f:
        json.dump({"name": "random_small", "cases": cases}, f, separators=(",", ":"))
    print("random_small", len(cases), "cases")


if __name__ == "__main__":
    main()
