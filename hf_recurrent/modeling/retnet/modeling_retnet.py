"""RetNet on the shared shell: multi-scale retention as the fixed scalar-decay case of chunked linear attention."""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.cache_utils import Cache

from ...kernels.linear_attention import gated_linear_attention_from_state
from ..common import (
    add_gated_output,
    gated_output,
    FEATURE_MAPS,
    RecurrentForCausalLM,
    RecurrentModel,
    RecurrentPreTrainedModel,
    load_state,
    project,
    store_state,
)
from .configuration_retnet import HfrRetNetConfig

POSITION_SLOT = 1
"""Cache slot holding each row's count of real (unpadded) tokens seen so far, int64 ``[B]``."""


def retention_log_decay(num_heads: int, device: torch.device | None = None) -> torch.Tensor:
    """``log(gamma_h)`` with ``gamma_h = 1 - 2^(-5-h)``, float32 ``[H]`` (RetNet's multi-scale decays)."""
    return torch.log1p(-torch.exp2(-5.0 - torch.arange(num_heads, dtype=torch.float32, device=device)))


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding, halves layout: ``x [B, T, H, D]`` rotated by ``positions [B, T]`` (float32 angles).

    Pair ``(x_i, x_{i + D/2})`` turns by ``positions * theta^(-2i/D)``.
    """
    D = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float32, device=x.device) / D)
    angles = (positions.float()[..., None] * inv_freq)[:, :, None]  # [B, T, 1, D/2]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class MultiScaleRetention(nn.Module):
    """RetNet's token mixer, laid out as flash-linear-attention's ``MultiScaleRetention``.

    ``q = rot(q_proj(x))`` ``[B,T,H,Dk]``, ``k = rot(k_proj(x))``, ``v = v_proj(x)`` ``[B,T,H,Dv]`` (optional feature
    map on q, k before the rotation), the linear attention op with scalar log decay ``log gamma_h`` and scale
    ``Dk^-1/2``, then per-head ``RMSNorm(o) * silu(g_proj(x))`` and ``o_proj``.

    Positions count real tokens only: a left-padded row starts at 0 at its first real token, as it would alone.
    Cache: the state ``[B, H, Dk, Dv]`` float32 (slot 0) and the position counter (slot 1). Padded positions get
    zero key and zero log decay: the state passes unchanged, and the counter does not advance. Packed sequences
    (``cu_seqlens``, batch 1, training): positions and the recurrence restart at every offset.
    """

    supports_packed_sequences = True

    def __init__(self, config: HfrRetNetConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_heads
        self.groups = config.num_heads // config.kv_heads
        self.head_k_dim = config.key_dim // config.num_heads
        self.head_v_dim = config.value_dim // config.num_heads
        self.rope_theta = config.rope_theta
        self.feature_map = FEATURE_MAPS[config.feature_map] if config.feature_map else None
        self.q_proj = nn.Linear(config.hidden_size, config.key_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.key_dim // self.groups, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.value_dim // self.groups, bias=False)
        add_gated_output(self, config)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        _, state = load_state(cache, self.layer_idx)
        _, seen = load_state(cache, self.layer_idx, POSITION_SLOT)
        if seen is None:
            seen = torch.zeros(B, dtype=torch.long, device=x.device)
        if cu_seqlens is not None:  # packed documents: each counts from 0
            starts = cu_seqlens[:-1].repeat_interleave(cu_seqlens.diff(), output_size=T)
            positions = (torch.arange(T, device=x.device) - starts)[None]
            seen_after = seen + T
        elif attention_mask is None:
            positions = seen[:, None] + torch.arange(T, device=x.device)
            seen_after = seen + T
        else:
            real = attention_mask.long().cumsum(dim=1)
            positions = seen[:, None] + (real - 1).clamp_min(0)
            seen_after = seen + real[:, -1]

        gated = self.g_proj is not None
        q, k, v, *gate = project(x, self.q_proj, self.k_proj, self.v_proj, *([self.g_proj] if gated else []))
        q = q.view(B, T, self.num_heads, self.head_k_dim)
        k = k.view(B, T, -1, self.head_k_dim)
        v = v.view(B, T, -1, self.head_v_dim)
        if self.feature_map is not None:
            q, k = self.feature_map(q), self.feature_map(k)
        q, k = rotate(q, positions, self.rope_theta), rotate(k, positions, self.rope_theta)
        if self.groups > 1:
            k, v = k.repeat_interleave(self.groups, dim=2), v.repeat_interleave(self.groups, dim=2)
        g = retention_log_decay(self.num_heads, x.device).expand(B, T, -1)
        if attention_mask is not None:
            keep = attention_mask[:, :, None, None].to(k.dtype)
            k, g = k * keep, g * keep[..., 0].float()

        o, state = gated_linear_attention_from_state(
            q, k, v, g, state, output_final_state=cache is not None, cu_seqlens=cu_seqlens
        )
        store_state(cache, self.layer_idx, None, state)
        store_state(cache, self.layer_idx, None, seen_after, slot=POSITION_SLOT)

        return gated_output(self, o, gate[0] if gated else None)


class HfrRetNetPreTrainedModel(RecurrentPreTrainedModel):
    config_class = HfrRetNetConfig
    mixer_class = MultiScaleRetention


class HfrRetNetModel(HfrRetNetPreTrainedModel, RecurrentModel):
    """The RetNet stack without an LM head."""


class HfrRetNetForCausalLM(HfrRetNetPreTrainedModel, RecurrentForCausalLM):
    """RetNet causal language model."""

    base_model_class = HfrRetNetModel
