"""Send MoE routing decisions to moe-metricsd without slowing the training step.

    from moe_metricsd_client import MetricsClient
    client = MetricsClient("http://127.0.0.1:9477", worker="rank0")
    client.record("layer.3", tokens_per_expert=counts, total_tokens=n_tokens,
                  load_balance_loss=aux, step=step, top_k=2)
    client.close()

The standard library only: no torch, no requests. Anything with ``.tolist()`` (a torch tensor, a
numpy array) is accepted where a list or a number is expected.
"""

from .client import ClientStats, MetricsClient, make_decision, shard_index

__all__ = ["MetricsClient", "ClientStats", "make_decision", "shard_index"]
__version__ = "0.1.0"
