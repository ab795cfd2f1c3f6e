"""GateLoop on the shared shell: complex data-controlled gates on the chunked linear-attention kernel."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.cache_utils import Cache

from ...kernels.linear_attention.complex_gates import (
    complex_gated_linear_attention,
    complex_gated_linear_attention_step,
)
from ..common import (
    RecurrentBlock,
    RecurrentForCausalLM,
    RecurrentModel,
    RecurrentPreTrainedModel,
    load_state,
    store_state,
)
from .configuration_gateloop import HfrGateLoopConfig

PHASE_SLOT = 1
"""Cache slot holding each head's accumulated gate phase ``Phi`` (float32 ``[B, H]``, modulo ``2 pi``)."""


class GeluMLP(nn.Module):
    """``fc2(gelu(fc1(x)))`` with biases (exact erf GELU), gateloop-transformer's ``FeedForward``."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class GateLoopMixer(nn.Module):
    """GateLoop's token mixer, laid out as gateloop-transformer's ``GateLoopedAttention``.

    ``q, k, v = qkv_proj(x).chunk(3)`` ``[B, T, H, D]``; ``z = a_proj(x)`` ``[B, T, H, 2]`` (real, imaginary);
    the transition ``a = sigmoid(|z|) e^{i arg z}`` (or its real form) as log magnitude ``logsigmoid(|z|)`` and
    phase ``arg z``, run by :func:`~hf_recurrent.kernels.linear_attention.complex_gates.complex_gated_linear_attention`
    with scale 1; then heads merged, optional LayerNorm, ``* silu(g_proj(x))``, ``o_proj``.

    Cache: the rotated real state ``[B, H, 2D, D]`` float32 (slot 0) and the accumulated phase ``[B, H]`` (slot 1).
    Padded positions get zero key, zero log magnitude and zero phase: both pass unchanged. Packed sequences
    (``cu_seqlens``, batch 1, training): state and phase restart at every offset.
    """

    supports_packed_sequences = True

    def __init__(self, config: HfrGateLoopConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.complex_gates = config.complex_gates
        self.grad_frac = config.state_transition_grad_frac
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.gate_dim, bias=False)
        self.a_proj = nn.Linear(config.hidden_size, 2 * config.num_heads)
        self.sub_norm = nn.LayerNorm(config.gate_dim) if config.sub_layernorm else None
        self.g_proj = nn.Linear(config.hidden_size, config.gate_dim, bias=False) if config.use_output_gate else None
        self.o_proj = nn.Linear(config.gate_dim, config.hidden_size, bias=False) if config.has_out_proj else None

    def _transition(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log magnitude and phase ``[B, T, H]`` (float32) of the gate projected from ``x``."""
        z = self.a_proj(x).float()
        z = z * self.grad_frac + z.detach() * (1 - self.grad_frac)
        re, im = z.unflatten(-1, (self.num_heads, 2)).unbind(-1)
        if self.complex_gates:
            magnitude, phase = torch.hypot(re, im), torch.atan2(im, re)
        else:
            magnitude, phase = re.abs(), (re < 0).float() * math.pi
        return F.logsigmoid(magnitude), phase

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        _, state = load_state(cache, self.layer_idx)
        _, accumulated = load_state(cache, self.layer_idx, PHASE_SLOT)
        q, k, v = (t.view(B, T, self.num_heads, self.head_dim) for t in self.qkv_proj(x).chunk(3, dim=-1))
        log_magnitude, phase = self._transition(x)
        if attention_mask is not None:
            keep = attention_mask[:, :, None].to(torch.float32)
            k, log_magnitude, phase = k * keep[..., None].to(k.dtype), log_magnitude * keep, phase * keep

        if T == 1 and state is not None:
            o = complex_gated_linear_attention_step(
                q[:, 0], k[:, 0], v[:, 0], log_magnitude[:, 0], phase[:, 0], state, accumulated, scale=1.0
            ).unsqueeze(1)
        else:
            o, state, accumulated = complex_gated_linear_attention(
                q, k, v, log_magnitude, phase, scale=1.0, initial_state=state, initial_phase=accumulated,
                output_final_state=cache is not None, cu_seqlens=cu_seqlens,
            )
        store_state(cache, self.layer_idx, None, state)
        store_state(cache, self.layer_idx, None, accumulated, slot=PHASE_SLOT)

        o = o.reshape(B, T, -1)
        if self.sub_norm is not None:
            o = self.sub_norm(o)
        if self.g_proj is not None:
            o = F.silu(self.g_proj(x)) * o
        return o if self.o_proj is None else self.o_proj(o)


class GateLoopBlock(RecurrentBlock):
    """The shared pre-norm block with gateloop-transformer's GELU MLP."""

    mlp_class: ClassVar[type[nn.Module]] = GeluMLP


class HfrGateLoopPreTrainedModel(RecurrentPreTrainedModel):
    config_class = HfrGateLoopConfig
    mixer_class = GateLoopMixer
    block_class = GateLoopBlock
    _no_split_modules = ["GateLoopBlock"]


class HfrGateLoopModel(HfrGateLoopPreTrainedModel, RecurrentModel):
    """The GateLoop stack without an LM head."""


class HfrGateLoopForCausalLM(HfrGateLoopPreTrainedModel, RecurrentForCausalLM):
    """GateLoop causal language model."""

    base_model_class = HfrGateLoopModel
