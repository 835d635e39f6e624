"""One rank of the two-process test: a tiny Mixtral under DistributedDataParallel (gloo, CPU),
watched, each rank on its own data; writes the per-step counts its own router hooks saw to
MOE_OUT/rank{N}.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

import tiny_moe
from moe_metricsd_client import MetricsClient
from moe_metricsd_client.torch import watch


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = tiny_moe.build("mixtral", seed=0)  # the same initial weights on every rank
    recorder = tiny_moe.IndexRecorder(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-2)
    client = MetricsClient(os.environ["MOE_METRICSD_URL"], linger=0.05)
    watcher = watch(model, client, optimizer=optimizer)
    counts = {name: [] for name in watcher.layers}  # per layer, per step, per expert
    for step in range(3):
        ids = tiny_moe.batch(model.config.vocab_size, seed=100 * rank + step)
        ddp(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        for path, indices in recorder.take().items():
            flat = torch.cat([i.reshape(-1) for i in indices])
            counts[path].append(torch.bincount(flat, minlength=8).tolist())
    watcher.close(30)
    client.close(30)
    report = {"stats": watcher.stats._asdict(), "counts": counts}
    Path(os.environ["MOE_OUT"], f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
