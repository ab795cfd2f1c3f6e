"""Random flash-linear-attention GLA models saved in the layouts fla has published, for the conversion tests.

fla is imported inside the functions: the module can be imported where fla kernels must not be set up (the
parent pytest process builds models on the meta device only; fla's forward runs in a subprocess under
``TRITON_INTERPRET=1``, see :mod:`tests.conversion.fla_reference`, or on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_heads=2, hidden_ratio=2, fuse_cross_entropy=False,
            attn_mode="fused_recurrent")
"""A tiny fla GLA: fla picks its fused_recurrent kernel for T <= 64 whatever the mode."""


@dataclass(frozen=True)
class FlaCase:
    """One random fla GLA checkpoint: fla config overrides, weight layout and file format."""

    config: dict[str, Any] = field(default_factory=dict)
    layout: str = "current"  # "current": model.embeddings + separate up_proj; "2024": embed_tokens + fused MLP
    weights: str = "safetensors"  # "safetensors", "sharded" (several safetensors shards) or "bin"


CASES = {
    "conv-gqa-tied-unfusednorm": FlaCase(
        dict(use_short_conv=True, num_heads=4, num_kv_heads=2, tie_word_embeddings=True, fuse_norm=False)
    ),
    "fusedmlp-2024-bin": FlaCase(dict(fuse_swiglu=False), layout="2024", weights="bin"),
    "relu-nogate-clamp-sharded": FlaCase(
        dict(feature_map="relu", use_output_gate=False, clamp_min=-0.05, elementwise_affine=False), weights="sharded"
    ),
}


def fla_gla_model(seed: int = 0, **overrides: Any):
    """fla's ``GLAForCausalLM`` (fp32, eval) with random weights of unit-ish scale (norm weights around 1)."""
    from fla.models import GLAConfig as FlaGLAConfig
    from fla.models import GLAForCausalLM as FlaGLAForCausalLM

    model = FlaGLAForCausalLM(FlaGLAConfig(**{**TINY, **overrides})).eval()
    randomize_(model, seed)
    return model


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter: matrices ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.2^2), others ~ N(0, 0.5^2)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if "norm" in name:
            p.copy_(1 + 0.2 * noise)
        elif p.dim() == 2:
            p.copy_(noise * p.shape[1] ** -0.5)
        else:
            p.copy_(0.5 * noise)


def to_2024_layout(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """fla's early-2024 names: ``model.embed_tokens`` and ``mlp.gate_proj`` = [gate; up] stacked, no ``up_proj``."""
    out = {("model.embed_tokens.weight" if k == "model.embeddings.weight" else k): v for k, v in state.items()}
    for layer in range(num_layers):
        prefix = f"model.layers.{layer}.mlp."
        gate, up = out[prefix + "gate_proj.weight"], out.pop(prefix + "up_proj.weight")
        out[prefix + "gate_proj.weight"] = torch.cat([gate, up])
    return out


def save_fla_checkpoint(model, path: Path, case: FlaCase) -> Path:
    """Write ``model`` as fla publishes it: ``config.json`` and weights in ``case``'s layout and file format."""
    path.mkdir(parents=True, exist_ok=True)
    if case.layout == "current" and case.weights != "bin":
        model.save_pretrained(path, max_shard_size="40KB" if case.weights == "sharded" else "10GB")
        return path
    model.config.save_pretrained(path)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    if case.layout == "2024":
        state = to_2024_layout(state, model.config.num_hidden_layers)
    if case.weights == "bin":
        torch.save(state, path / "pytorch_model.bin")
    else:
        save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return path


@torch.no_grad()
def fla_greedy(model, prompt: torch.LongTensor, steps: int) -> torch.LongTensor:
    """Greedy continuation by full re-computation at every step (no cache): the plain definition."""
    ids = prompt
    for _ in range(steps):
        logits = model(input_ids=ids, use_cache=False).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids
