"""Train a Hugging Face mixture-of-experts model with moe-metricsd watching its routers.

By default a tiny randomly initialised Qwen3-MoE (or ``--family mixtral``) is built from its config,
so the example runs anywhere in seconds with nothing to download; ``--model ID`` loads a real
checkpoint instead (any Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE or DeepSeek-V3 id or local path you have
the weights of). The batches are random token ids: the point is the routing, not the language.

Run a daemon (``scripts/run``), then:

    python watch_hf_moe.py --url http://127.0.0.1:9477 --steps 50

The one line that matters is ``watch(model, client, optimizer=optimizer)``: every optimizer step then
posts one decision per router (the top-k experts it chose for each token of the step, with the step
number and the load-balance and z losses), without the training loop ever waiting for it.
"""

from __future__ import annotations

import argparse

import torch
import transformers

from moe_metricsd_client import MetricsClient
from moe_metricsd_client.torch import watch


def tiny_model(family: str) -> torch.nn.Module:
    size = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                num_experts_per_tok=2)
    if family == "mixtral":
        config = transformers.MixtralConfig(**size, num_local_experts=8)
    else:
        config = transformers.Qwen3MoeConfig(**size, num_experts=16, moe_intermediate_size=32, head_dim=16)
    return transformers.AutoModelForCausalLM.from_config(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:9477",
                        help="daemon URL; several separated by commas shard the layers between them")
    parser.add_argument("--model", help="a Hugging Face model id or path to load instead of a tiny random model")
    parser.add_argument("--family", choices=("qwen3_moe", "mixtral"), default="qwen3_moe")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--accumulate", type=int, default=1, help="forward/backward passes per optimizer step")
    parser.add_argument("--prefix", default="", help="prepended to each router's module path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model:
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
    else:
        model = tiny_model(args.family)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    client = MetricsClient(args.url)
    watcher = watch(model, client, optimizer=optimizer, prefix=args.prefix)
    print(f"watching {len(watcher.layers)} routers: {watcher.layers[0]} ... {watcher.layers[-1]}")
    for _ in range(args.steps):
        for _ in range(args.accumulate):
            ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length), device=device)
            loss = model(input_ids=ids, labels=ids).loss / args.accumulate
            loss.backward()
        optimizer.step()  # also ends the watcher's step
        optimizer.zero_grad()
    watcher.close(timeout=30)
    client.close(timeout=30)
    s = watcher.stats
    print(f"watcher: steps={s.steps} posted={s.posted} dropped={s.dropped} rejected={s.rejected}")
    print("client:", client.stats)


if __name__ == "__main__":
    main()
