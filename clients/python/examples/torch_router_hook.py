"""Report the routing of every MoE layer of a PyTorch model to moe-metricsd.

A forward hook on each router turns its top-k choice into per-expert token counts with
``torch.bincount`` and hands them to the client, which sends them from a background thread: the
training step never waits for the network, and a dead daemon only increments a counter.

Run a daemon (``scripts/run``), then: ``python torch_router_hook.py http://127.0.0.1:9477``
"""

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from moe_metricsd_client import MetricsClient


class TopKRouter(nn.Module):
    """A plain top-k softmax router with a Switch-style load-balance loss and a z-loss."""

    def __init__(self, hidden: int, experts: int, top_k: int = 2, capacity_factor: float = 1.25):
        super().__init__()
        self.gate = nn.Linear(hidden, experts, bias=False)
        self.experts = experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor

    def forward(self, x: torch.Tensor):
        logits = self.gate(x)                                   # [tokens, experts]
        probs = logits.softmax(dim=-1)
        weights, topk_ids = probs.topk(self.top_k, dim=-1)      # [tokens, k]
        tokens = x.shape[0]
        capacity = int(-(-tokens * self.top_k * self.capacity_factor // self.experts))
        counts = torch.bincount(topk_ids.flatten(), minlength=self.experts)
        kept = counts.clamp(max=capacity)
        # A token is dropped here when every one of its k slots overflowed; approximate it by the
        # overflowing assignments divided by k.
        dropped = int((counts - kept).sum().item()) // self.top_k
        fraction = counts.float() / (tokens * self.top_k)
        lb_loss = self.experts * (fraction * probs.mean(dim=0)).sum()
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        # What the hook reads (kept on the module so the hook needs no recomputation).
        self.last = dict(counts=kept, tokens=tokens, dropped=dropped, lb=lb_loss.detach(),
                         z=z_loss.detach(), capacity=capacity)
        return weights, topk_ids, lb_loss + 1e-3 * z_loss


def attach(model: nn.Module, client: MetricsClient, step_ref: list) -> None:
    """Registers a forward hook on every TopKRouter of `model`, named by its module path."""
    for name, module in model.named_modules():
        if isinstance(module, TopKRouter):
            def hook(mod, inputs, output, layer=name):
                last = mod.last
                client.record(
                    layer,
                    last["counts"],                      # a tensor: the client calls .tolist()
                    total_tokens=last["tokens"],
                    tokens_dropped=last["dropped"],
                    load_balance_loss=last["lb"],        # a 0-d tensor; NaN is sent as null
                    router_z_loss=last["z"],
                    auxiliary_loss=last["lb"] + 1e-3 * last["z"],
                    step=step_ref[0],
                    top_k=mod.top_k,
                    expert_capacity=last["capacity"],
                    capacity_factor=mod.capacity_factor,
                )
            module.register_forward_hook(hook)


class TinyMoE(nn.Module):
    def __init__(self, layers: int = 4, hidden: int = 64, experts: int = 16):
        super().__init__()
        self.routers = nn.ModuleList(TopKRouter(hidden, experts) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))

    def forward(self, x):
        aux = x.new_zeros(())
        for router, proj in zip(self.routers, self.proj):
            _, _, loss = router(x)
            aux = aux + loss
            x = F.gelu(proj(x))
        return x, aux


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9477"
    model = TinyMoE()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = [0]
    with MetricsClient(url, worker="rank0") as client:
        attach(model, client, step)
        for step[0] in range(100):
            x = torch.randn(512, 64)
            out, aux = model(x)
            loss = out.pow(2).mean() + 0.01 * aux
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        client.flush(10)
        print("client:", client.stats)


if __name__ == "__main__":
    main()
