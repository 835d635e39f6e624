"""Training-step time with and without the watcher, and host synchronisations per step.

A Qwen3-MoE built from its config (random weights) trains on the CPU with steps of at least 50 ms;
blocks of steps without and with the watcher alternate, so that drift in the machine's load hits
both alike. The watcher posts to a real moe-metricsd started here. Host synchronisations are the
calls of Tensor.item, .tolist, .numpy, .cpu and blocking .to("cpu") made on the training thread,
counted with and without the watcher (the model's own calls count in both).

    python clients/python/benchmarks/torch_overhead.py --daemon .build/release/moe-metricsd \
        --report docs/reports/torch-overhead.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from moe_metricsd_client import MetricsClient  # noqa: E402
from moe_metricsd_client.torch import watch  # noqa: E402

SYNCING = ("item", "tolist", "numpy", "cpu", "to")


class SyncCounter:
    """Counts the synchronising tensor calls made on the thread that created it."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.counts: Dict[str, int] = {name: 0 for name in SYNCING}
        self.saved = {}

    def __enter__(self) -> "SyncCounter":
        for name in SYNCING:
            original = getattr(torch.Tensor, name)
            self.saved[name] = original

            def counted(tensor, *args, _name=name, _original=original, **kwargs):
                if threading.get_ident() == self.thread and (_name != "to" or _to_host(args, kwargs)):
                    self.counts[_name] += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)


def _to_host(args, kwargs) -> bool:
    if kwargs.get("non_blocking"):
        return False
    targets = list(args) + [kwargs.get("device")]
    return any(isinstance(t, (str, torch.device)) and str(t) == "cpu" for t in targets)


def start_daemon(binary: str) -> subprocess.Popen:
    process = subprocess.Popen([binary, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if match:
            process.port = int(match.group(1))
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process
    raise RuntimeError("the daemon did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--daemon", required=True, help="path of the moe-metricsd binary")
    parser.add_argument("--report", help="write the Markdown report here")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=3, help="steps per block")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.Qwen3MoeConfig(vocab_size=1024, hidden_size=128, intermediate_size=256,
                                         moe_intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                                         num_key_value_heads=2, head_dim=32, num_experts=16, num_experts_per_tok=2,
                                         max_position_embeddings=512)
    model = transformers.AutoModelForCausalLM.from_config(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (2, 128), generator=torch.Generator().manual_seed(1))

    def step() -> float:
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - started

    daemon = start_daemon(args.daemon)
    client = MetricsClient(f"http://127.0.0.1:{daemon.port}", worker="bench")
    times: Dict[str, List[float]] = {"without": [], "with": []}
    ratios: List[float] = []  # per round: median step with / median step without
    syncs: Dict[str, Dict[str, int]] = {}
    try:
        for _ in range(3):
            step()
        for round_ in range(args.rounds):
            block: Dict[str, List[float]] = {}
            for mode in ("without", "with") if round_ % 2 == 0 else ("with", "without"):
                watcher = watch(model, client, optimizer=optimizer) if mode == "with" else None
                with SyncCounter() as counter:
                    block[mode] = [step() for _ in range(args.steps)]
                times[mode].extend(block[mode])
                for name, n in counter.counts.items():
                    syncs.setdefault(mode, {k: 0 for k in SYNCING})[name] += n
                if watcher is not None:
                    watcher.close(30)
                    posted = watcher.stats
            ratios.append(statistics.median(block["with"]) / statistics.median(block["without"]))
        # The watcher's own time on the training thread: its hooks and its step, timed inside.
        watcher = watch(model, client, optimizer=optimizer)
        spent = [0.0]

        def timed(function):
            def wrapper(*a, **k):
                started = time.perf_counter()
                try:
                    return function(*a, **k)
                finally:
                    spent[0] += time.perf_counter() - started
            return wrapper

        watcher._add = timed(watcher._add)
        watcher.step = timed(watcher.step)
        inside_steps = args.rounds * args.steps // 2
        for _ in range(inside_steps):
            step()
        watcher.close(30)
        inside_ms = spent[0] / inside_steps * 1000
        client.close(30)
    finally:
        daemon.terminate()
        daemon.wait(10)

    steps = args.rounds * args.steps
    median = {m: statistics.median(t) * 1000 for m, t in times.items()}
    mean = {m: statistics.fmean(t) * 1000 for m, t in times.items()}
    per_step = {m: sum(c.values()) / steps for m, c in syncs.items()}
    overhead = (median["with"] / median["without"] - 1) * 100
    quartiles = statistics.quantiles(ratios, n=4)
    round_overhead = (statistics.median(ratios) - 1) * 100
    lines = [
        "# PyTorch watcher overhead",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {args.threads} torch thread(s); load average "
        f"{os.getloadavg()[0]:.1f} at the end (the machine is shared with other builds)",
        f"- Model: Qwen3-MoE from its config, random weights: {config.num_hidden_layers} MoE layers x "
        f"{config.num_experts} experts, top-{config.num_experts_per_tok}, hidden {config.hidden_size}; "
        f"batch 2 x 128 tokens; AdamW; CPU",
        f"- {args.rounds} rounds of {args.steps} steps without and {args.steps} with the watcher (order "
        "alternating), posting to a real moe-metricsd on 127.0.0.1; the watcher attached with "
        "`watch(model, client, optimizer=optimizer)`",
        f"- Command: `python clients/python/benchmarks/torch_overhead.py --daemon PATH --report PATH`",
        "",
        "| | median step (ms) | mean step (ms) | host syncs per step on the training thread |",
        "|---|---|---|---|",
        f"| without the watcher | {median['without']:.1f} | {mean['without']:.1f} | {per_step['without']:.2f} |",
        f"| with the watcher | {median['with']:.1f} | {mean['with']:.1f} | {per_step['with']:.2f} |",
        "",
        f"Step time with the watcher: {overhead:+.1f}% (medians of all steps; target at most +3%); per round, "
        f"the median of the with/without ratios is {round_overhead:+.1f}% and its quartiles "
        f"{(quartiles[0] - 1) * 100:+.1f}% and {(quartiles[2] - 1) * 100:+.1f}% (the spread is the machine's "
        f"noise). Timed inside, the watcher's hooks and step take {inside_ms:.2f} ms per step on the training "
        f"thread ({inside_ms / median['without'] * 100:.2f}% of a step without it; the rest of any difference is "
        "noise, or the posting threads and the daemon sharing the machine's cores: not measured apart). "
        "Host synchronisations "
        f"added by the watcher per step: {per_step['with'] - per_step['without']:.2f} (target 0); calls counted "
        "are Tensor.item, .tolist, .numpy, .cpu and blocking .to(\"cpu\") on the training thread; those counted "
        "without the watcher are the model's and the optimizer's own (AdamW's CPU step reads each parameter's "
        f"step counter with .item()). Last watched block: {posted.posted} of {posted.steps} steps posted, "
        f"{posted.dropped} dropped.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.report:
        Path(args.report).write_text(text)


if __name__ == "__main__":
    main()
