"""Mamba-2 on the shared shell: the SSD token mixer as the scalar-decay case of chunked linear attention."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.cache_utils import Cache

from ...kernels.causal_conv1d import causal_conv1d_step
from ...kernels.linear_attention import gated_linear_attention_from_state
from ..common import (
    RecurrentForCausalLM,
    RecurrentModel,
    RecurrentPreTrainedModel,
    ShortConvolution,
    load_state,
    store_state,
)
from .configuration_mamba2 import HfrMamba2Config


class GroupGatedRMSNorm(nn.Module):
    """Mamba-2's output norm, gate first: ``y = RMSNorm_group(x * silu(z)) * weight`` over groups of ``group_size``.

    ``x, z``: ``[..., D]`` with ``D`` a multiple of ``group_size``; computed in float32, returned in ``x``'s dtype.
    """

    def __init__(self, hidden_size: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        y = x.float() * F.silu(gate.float())
        y = y.unflatten(-1, (-1, self.group_size))
        y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        return (y * self.weight.float()).to(x.dtype)


class Mamba2Mixer(nn.Module):
    """The Mamba-2 (SSD) mixer, laid out as mamba-ssm's / transformers' ``Mamba2Mixer``.

    ``in_proj(x)`` ``[B, T, hidden]`` splits into ``z [d_inner]``, ``xBC [d_inner + 2 G N]`` and ``dt [H]``;
    ``xBC`` goes through the depthwise causal conv (SiLU) and splits into ``x [B,T,H,P]``, ``B, C [B,T,G,N]``.
    With ``dt = clamp(softplus(dt + dt_bias))`` ``[B,T,H]`` and ``A = -exp(A_log)`` the recurrence is the linear
    attention op with ``q = C``, ``k = dt * B`` (groups repeated over their heads), ``v = x``, scalar log decay
    ``dt * A`` and scale 1, i.e. the state ``S [B, H, N, P]`` float32. Then ``y = o + D * x``,
    ``GroupGatedRMSNorm(y, z)`` and ``out_proj``.

    Padded positions (``attention_mask`` 0) feed zeros into the convolution and get ``dt = 0``: zero key and decay
    1, so the SSM state passes unchanged. Packed sequences (``cu_seqlens``, batch 1, training): the convolution and
    the scan restart at every offset.
    """

    supports_packed_sequences = True

    def __init__(self, config: HfrMamba2Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.n_groups, self.state_size = config.n_groups, config.state_size
        self.intermediate_dim = config.intermediate_dim
        self.time_step_limit = tuple(config.time_step_limit)
        self.in_proj = nn.Linear(
            config.hidden_size, config.intermediate_dim + config.conv_dim + config.num_heads, bias=config.use_bias
        )
        self.conv1d = ShortConvolution(config.conv_dim, config.conv_kernel, bias=config.use_conv_bias)
        self.dt_bias = nn.Parameter(torch.zeros(config.num_heads))
        self.A_log = nn.Parameter(torch.zeros(config.num_heads))
        self.D = nn.Parameter(torch.ones(config.num_heads))
        self.norm = GroupGatedRMSNorm(
            config.intermediate_dim, config.intermediate_dim // config.n_groups, eps=config.norm_eps
        )
        self.out_proj = nn.Linear(config.intermediate_dim, config.hidden_size, bias=config.use_bias)

    @torch.no_grad()
    def _init_weights(self, config: HfrMamba2Config) -> None:
        """mamba-ssm's initialisation: ``A = 1..H``, ``D = 1``, ``dt_bias = softplus^-1(dt)``, log-uniform ``dt``."""
        H = self.num_heads
        self.A_log.copy_(torch.arange(1, H + 1, dtype=torch.float32).log())
        self.D.fill_(1.0)
        log_min, log_max = math.log(config.time_step_min), math.log(config.time_step_max)
        dt = torch.exp(torch.rand(H) * (log_max - log_min) + log_min).clamp(min=config.time_step_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        Bsz, T, _ = x.shape
        H, P, G, N = self.num_heads, self.head_dim, self.n_groups, self.state_size
        conv_tail, state = load_state(cache, self.layer_idx)
        keep = None if attention_mask is None else attention_mask[:, :, None].to(x.dtype)

        z, xbc, dt = self.in_proj(x).split([self.intermediate_dim, self.conv1d.weight.shape[0], H], dim=-1)
        if keep is not None:
            xbc = xbc * keep
        decode = T == 1 and state is not None and conv_tail is not None
        if decode:  # fused one-token update of the cached tail, in place
            xbc = causal_conv1d_step(xbc[:, 0], self.conv1d.weight[:, 0], self.conv1d.bias, conv_tail, "silu")[:, None]
            new_tail = conv_tail
        elif cu_seqlens is None:
            xbc, new_tail = self.conv1d(xbc, conv_tail)
        else:  # training layout, no cache: each document's convolution starts from an empty tail
            bounds = cu_seqlens.tolist()
            xbc = torch.cat([self.conv1d(xbc[:, s:e])[0] for s, e in zip(bounds[:-1], bounds[1:])], dim=1)
            new_tail = None
        xs, b, c = xbc.split([self.intermediate_dim, G * N, G * N], dim=-1)

        dt = F.softplus(dt.float() + self.dt_bias.float()).clamp(*self.time_step_limit)
        if keep is not None:
            dt = dt * keep.float()
        log_decay = dt * -torch.exp(self.A_log.float())  # [B, T, H]
        v = xs.view(Bsz, T, H, P)
        q = c.view(Bsz, T, G, N).repeat_interleave(H // G, dim=2)
        k = (b.view(Bsz, T, G, N).repeat_interleave(H // G, dim=2).float() * dt[..., None]).to(q.dtype)

        o, state = gated_linear_attention_from_state(
            q, k, v, log_decay, state, scale=1.0, output_final_state=cache is not None, cu_seqlens=cu_seqlens
        )
        store_state(cache, self.layer_idx, new_tail, state)

        y = o + v * self.D.to(v.dtype)[:, None]
        y = self.norm(y.reshape(Bsz, T, -1), z)
        return self.out_proj(y)


class HfrMamba2PreTrainedModel(RecurrentPreTrainedModel):
    config_class = HfrMamba2Config
    mixer_class = Mamba2Mixer


class HfrMamba2Model(HfrMamba2PreTrainedModel, RecurrentModel):
    """The Mamba-2 stack without an LM head."""


class HfrMamba2ForCausalLM(HfrMamba2PreTrainedModel, RecurrentForCausalLM):
    """Mamba-2 causal language model."""

    base_model_class = HfrMamba2Model
