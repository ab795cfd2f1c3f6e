"""Mamba on the shared shell: the selective-SSM token mixer, a block with a float32 residual stream, 3 classes."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from transformers.cache_utils import Cache

from ...kernels.causal_conv1d import causal_conv1d_step
from ...kernels.selective_scan import selective_scan, selective_scan_step
from ..common import (
    RecurrentBlock,
    RecurrentForCausalLM,
    RecurrentModel,
    RecurrentPreTrainedModel,
    ShortConvolution,
    load_state,
    store_state,
)
from .configuration_mamba import HfrMambaConfig


def _weightless_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last dim, in float32, returned in ``x``'s dtype (falcon-mamba)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class MambaMixer(nn.Module):
    """The Mamba-1 selective SSM mixer, laid out as mamba-ssm's ``Mamba`` / transformers' ``MambaMixer``.

    ``in_proj(u)`` ``[B, T, hidden] -> x, z [B, T, d_inner]``; ``x`` through the depthwise causal conv (SiLU);
    ``x_proj(x) -> dt_low [R], B [N], C [N]``; ``dt = dt_proj.weight @ dt_low`` (its bias is added, with the softplus,
    inside the scan); :func:`~hf_recurrent.kernels.selective_scan.selective_scan` with ``A = -exp(A_log)`` (float32),
    ``D`` and the gate ``z``; ``out_proj``.

    Cache: conv tail ``[B, d_inner, W-1]`` and SSM state ``[B, d_inner, N]`` float32, both updated in place by the
    fused one-token kernels when decoding. Padded positions (mask 0) feed zeros into the convolution (as an empty
    tail does, so left padding leaves it as it was) and get ``dt = -inf``, i.e. a step of 0: decay 1, no input, the
    SSM state is exactly unchanged.
    Packed sequences (``cu_seqlens``, batch 1, training): the convolution and the scan restart at every offset.
    """

    supports_packed_sequences = True

    def __init__(self, config: HfrMambaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        d_inner, N, R = config.d_inner, config.state_size, config.time_step_rank
        self.state_size, self.time_step_rank = N, R
        self.bcdt_rms_eps = config.mixer_rms_eps if config.use_bcdt_rms else None
        self.in_proj = nn.Linear(config.hidden_size, 2 * d_inner, bias=config.use_bias)
        self.conv1d = ShortConvolution(d_inner, config.conv_kernel, bias=config.use_conv_bias)
        self.x_proj = nn.Linear(d_inner, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.zeros(d_inner, N))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, config.hidden_size, bias=config.use_bias)

    @torch.no_grad()
    def _init_weights(self, config: HfrMambaConfig) -> None:
        """mamba-ssm's initialisation: S4D-real ``A = 1..N``, ``D = 1``, ``dt_bias = softplus^-1(dt)``, ``dt``
        log-uniform in ``[time_step_min, time_step_max]``, ``dt_proj.weight`` uniform of scale ``R^-1/2``."""
        d_inner, N = self.A_log.shape
        self.A_log.copy_(torch.arange(1, N + 1, dtype=torch.float32).log().expand(d_inner, N))
        self.D.fill_(1.0)
        std = self.time_step_rank**-0.5 * config.time_step_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_min, log_max = math.log(config.time_step_min), math.log(config.time_step_max)
        dt = torch.exp(torch.rand(d_inner) * (log_max - log_min) + log_min).clamp(min=config.time_step_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def _apply(self, fn, recurse: bool = True):
        """``.to(dtype)`` / ``.half()`` / ``.bfloat16()`` keep ``A_log`` in float32 (its exact values) as mamba-ssm
        does; device moves apply to it as to everything else."""
        a_log = self.A_log.data
        module = super()._apply(fn, recurse)
        moved = self.A_log.data
        if a_log.dtype == torch.float32 and moved.dtype != torch.float32 and moved.is_floating_point():
            self.A_log.data = a_log.to(moved.device)
        return module

    def forward(
        self,
        u: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        T = u.shape[1]
        N, R = self.state_size, self.time_step_rank
        conv_tail, state = load_state(cache, self.layer_idx)
        keep = None if attention_mask is None else attention_mask[:, :, None].bool()

        x, z = self.in_proj(u).chunk(2, dim=-1)
        if keep is not None:  # padding feeds zeros into the convolution, as an empty tail would
            x = x.masked_fill(~keep, 0)
        decode = T == 1 and state is not None and conv_tail is not None
        if decode:  # fused one-token updates of the cached tail and state, in place
            x = causal_conv1d_step(x[:, 0], self.conv1d.weight[:, 0], self.conv1d.bias, conv_tail, "silu")[:, None]
            new_tail = conv_tail
        elif cu_seqlens is None:
            x, new_tail = self.conv1d(x, conv_tail)
        else:  # training layout, no cache: each document's convolution starts from an empty tail
            bounds = cu_seqlens.tolist()
            x = torch.cat([self.conv1d(x[:, s:e])[0] for s, e in zip(bounds[:-1], bounds[1:])], dim=1)
            new_tail = None
        dt, b, c = self.x_proj(x).split([R, N, N], dim=-1)
        if self.bcdt_rms_eps is not None:
            dt, b, c = (_weightless_rms(t, self.bcdt_rms_eps) for t in (dt, b, c))
        dt = dt @ self.dt_proj.weight.t()  # [B, T, d_inner]; bias and softplus are fused in the scan
        if keep is not None:
            dt = dt.masked_fill(~keep, float("-inf"))  # softplus(-inf) = 0: the state passes unchanged
        A = -torch.exp(self.A_log.float())
        if decode:
            y = selective_scan_step(
                x[:, 0], dt[:, 0], A, b[:, 0], c[:, 0], state, self.D, z[:, 0], self.dt_proj.bias
            ).unsqueeze(1)
        else:
            y, state = selective_scan(
                x, dt, A, b, c, self.D, z, self.dt_proj.bias, initial_state=state,
                output_final_state=cache is not None, cu_seqlens=cu_seqlens,
            )
        store_state(cache, self.layer_idx, new_tail, state)
        return self.out_proj(y)


class MambaBlock(RecurrentBlock):
    """``x + mixer(RMSNorm(x))`` with no MLP; with ``residual_in_fp32`` the residual stream between blocks stays
    float32 (as in mamba-ssm and transformers), the norm's output is cast to the weights' dtype for the mixer."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        dtype = self.mixer_norm.weight.dtype
        residual = hidden_states.float() if self.residual_in_fp32 else hidden_states
        normed = self.mixer_norm(hidden_states.to(dtype))
        return residual + self.mixer(normed, attention_mask=attention_mask, cache=cache, cu_seqlens=cu_seqlens)


class HfrMambaPreTrainedModel(RecurrentPreTrainedModel):
    config_class = HfrMambaConfig
    mixer_class = MambaMixer
    block_class = MambaBlock
    _keep_in_fp32_modules_strict = ["A_log"]  # from_pretrained(dtype=bf16/fp16) keeps A_log float32


class HfrMambaModel(HfrMambaPreTrainedModel, RecurrentModel):
    """The Mamba decoder stack without an LM head."""


class HfrMambaForCausalLM(HfrMambaPreTrainedModel, RecurrentForCausalLM):
    """Mamba causal language model (tied embeddings by default, as published)."""

    base_model_class = HfrMambaModel
