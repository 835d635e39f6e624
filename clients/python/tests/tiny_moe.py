"""Tiny randomly initialised Hugging Face MoE models, built from configs (nothing is downloaded)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch
import transformers

COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, num_experts_per_tok=2)


def _mixtral() -> Any:
    return transformers.MixtralConfig(**COMMON, num_local_experts=8)


def _qwen2_moe() -> Any:
    return transformers.Qwen2MoeConfig(**COMMON, num_experts=8, moe_intermediate_size=32,
                                       shared_expert_intermediate_size=32, decoder_sparse_step=1)


def _qwen3_moe() -> Any:
    return transformers.Qwen3MoeConfig(**COMMON, num_experts=8, moe_intermediate_size=32, head_dim=8,
                                       decoder_sparse_step=1)


def _olmoe() -> Any:
    return transformers.OlmoeConfig(**COMMON, num_experts=8)


def _deepseek_v3() -> Any:
    # Two groups of four experts, one group kept per token: group-limited routing is visible.
    # Multi-head latent attention has as many key/value heads as query heads.
    return transformers.DeepseekV3Config(**dict(COMMON, num_key_value_heads=4), n_routed_experts=8, n_group=2,
                                         topk_group=1, n_shared_experts=1, moe_intermediate_size=32,
                                         first_k_dense_replace=0, q_lora_rank=16, kv_lora_rank=16,
                                         qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)


FAMILIES: Dict[str, Callable[[], Any]] = {
    "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "olmoe": _olmoe,
    "deepseek_v3": _deepseek_v3,
}


def build(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = FAMILIES[family]()
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.train()
    return model


def router_modules(model: torch.nn.Module) -> List[Any]:
    """(path, module) of each router, found by the test itself: modules named `gate` whose forward
    returns (logits, weights, indices), i.e. those with a weight of shape [experts, hidden]."""
    found = []
    for path, module in model.named_modules():
        if path.endswith(".mlp.gate") and hasattr(module, "top_k") and hasattr(module, "weight"):
            found.append((path, module))
    return found


class IndexRecorder:
    """The test's own forward hooks on the routers: a copy of every index tensor they return."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seen: Dict[str, List[torch.Tensor]] = {}
        self.logits: Dict[str, List[torch.Tensor]] = {}
        self.handles = []
        for path, module in router_modules(model):
            self.seen[path] = []
            self.logits[path] = []
            self.handles.append(module.register_forward_hook(self._hook(path)))

    def _hook(self, path: str) -> Callable[..., None]:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            self.seen[path].append(output[2].detach().clone())
            self.logits[path].append(output[0].detach().float().clone())
        return hook

    def take(self) -> Dict[str, List[torch.Tensor]]:
        """Everything since the last take, per router path, and forgets it."""
        seen = {path: list(v) for path, v in self.seen.items()}
        for v in self.seen.values():
            v.clear()
        for v in self.logits.values():
            v.clear()
        return seen

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def batch(vocab: int, rows: int = 4, length: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (rows, length), generator=generator)
