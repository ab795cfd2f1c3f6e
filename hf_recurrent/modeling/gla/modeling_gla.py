"""Gated Linear Attention on the shared shell: the token mixer and the three model classes."""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.cache_utils import Cache

from ...kernels.linear_attention import gated_linear_attention_from_state
from ..common import (
    add_gated_output,
    gated_output,
    FEATURE_MAPS,
    project,
    RecurrentForCausalLM,
    RecurrentModel,
    RecurrentPreTrainedModel,
    ShortConvolution,
    load_state,
    log_gate,
    store_state,
)
from .configuration_gla import HfrGLAConfig


class GatedLinearAttention(nn.Module):
    """GLA token mixer (Yang et al., 2023), laid out as flash-linear-attention's ``GatedLinearAttention``.

    ``x [B, T, hidden]`` -> projections ``q [B,T,H,Dk]``, ``k``, ``v [B,T,H,Dv]`` (optionally through short causal
    convolutions with SiLU), log decay ``g = max(logsigmoid(gk_proj(x)) / normalizer, clamp_min)`` ``[B,T,H,Dk]``,
    the recurrence of :func:`~hf_recurrent.kernels.linear_attention.gated_linear_attention` with scale
    ``Dk^-1/2``, then per-head ``RMSNorm(o) * silu(g_proj(x))`` and ``o_proj``.

    Cache: conv tail ``[B, key_dim + 2 * kv_key/value dims, W-1]`` (q, k, v tails concatenated) and the state
    ``[B, H, Dk, Dv]`` float32. Padded positions get zero key and zero log decay: the state passes unchanged.
    """

    def __init__(self, config: HfrGLAConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_heads
        self.groups = config.num_heads // config.kv_heads
        self.head_k_dim = config.key_dim // config.num_heads
        self.head_v_dim = config.value_dim // config.num_heads
        kv_key_dim, kv_value_dim = config.key_dim // self.groups, config.value_dim // self.groups
        self.gate_logit_normalizer = config.gate_logit_normalizer
        self.clamp_min = config.clamp_min
        self.feature_map = FEATURE_MAPS[config.feature_map] if config.feature_map else None

        self.q_proj = nn.Linear(config.hidden_size, config.key_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_key_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_value_dim, bias=False)
        self.conv_dims = (config.key_dim, kv_key_dim, kv_value_dim)
        if config.use_short_conv:
            self.q_conv1d, self.k_conv1d, self.v_conv1d = (
                ShortConvolution(d, config.conv_size, bias=config.conv_bias) for d in self.conv_dims
            )
        self.use_short_conv = config.use_short_conv
        # The short convolution does not yet reset at document boundaries inside a packed row.
        self.supports_packed_sequences = not config.use_short_conv
        self.gk_proj = nn.Sequential(
            nn.Linear(config.hidden_size, config.gate_low_rank_dim, bias=False),
            nn.Linear(config.gate_low_rank_dim, kv_key_dim, bias=True),
        )
        add_gated_output(self, config)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        conv_tail, state = load_state(cache, self.layer_idx)
        keep = None if attention_mask is None else attention_mask[:, :, None].to(x.dtype)
        gated = self.g_proj is not None
        q, k, v, gk_low, *gate = project(x, self.q_proj, self.k_proj, self.v_proj, self.gk_proj[0],
                                         *([self.g_proj] if gated else []))
        new_tail = None
        if self.use_short_conv:
            tails = (None,) * 3 if conv_tail is None else conv_tail.split(self.conv_dims, dim=1)
            if keep is not None:  # padding feeds zeros into the convolution, as an empty tail would
                q, k, v = q * keep, k * keep, v * keep
            (q, tq), (k, tk), (v, tv) = (
                conv(t, tail) for conv, t, tail in zip((self.q_conv1d, self.k_conv1d, self.v_conv1d), (q, k, v), tails)
            )
            new_tail = torch.cat([tq, tk, tv], dim=1)
        # without padding to mask or key heads to repeat, the decode step's kernel evaluates the gate itself
        g = log_gate(gk_low, self.gk_proj[1], self.gate_logit_normalizer, self.clamp_min,
                     lazy=keep is None and self.groups == 1)
        if isinstance(g, torch.Tensor):
            if keep is not None:
                k, g = k * keep, g * keep.float()
            g = g.view(B, T, -1, self.head_k_dim)

        q = q.view(B, T, self.num_heads, self.head_k_dim)
        k = k.view(B, T, -1, self.head_k_dim)
        v = v.view(B, T, -1, self.head_v_dim)
        if self.groups > 1:
            k, g, v = (t.repeat_interleave(self.groups, dim=2) for t in (k, g, v))
        if self.feature_map is not None:
            q, k = self.feature_map(q), self.feature_map(k)

        o, state = gated_linear_attention_from_state(
            q, k, v, g, state, output_final_state=cache is not None, cu_seqlens=cu_seqlens
        )
        store_state(cache, self.layer_idx, new_tail, state)

        return gated_output(self, o, gate[0] if gated else None)


class HfrGLAPreTrainedModel(RecurrentPreTrainedModel):
    config_class = HfrGLAConfig
    mixer_class = GatedLinearAttention


class HfrGLAModel(HfrGLAPreTrainedModel, RecurrentModel):
    """The GLA decoder stack without an LM head."""


class HfrGLAForCausalLM(HfrGLAPreTrainedModel, RecurrentForCausalLM):
    """GLA causal language model."""

    base_model_class = HfrGLAModel
