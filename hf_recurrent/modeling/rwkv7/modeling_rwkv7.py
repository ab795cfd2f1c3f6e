"""RWKV-7 "Goose" on the shared shell: time mix (generalised delta rule), channel mix, block, model classes."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.cache_utils import Cache

from ...kernels.delta_rule import generalized_delta_rule, generalized_delta_rule_step
from ..common import RecurrentForCausalLM, RecurrentModel, RecurrentPreTrainedModel
from ..rwkv4.rwkv_block import CHANNEL_MIX_SLOT, TIME_MIX_SLOT, RwkvBlock, load_shift, store_shift, token_shift
from .configuration_rwkv7 import HfrRWKV7Config

_NAMES_OF_MIXES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")


def _lora(width: int, rank: int) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
    """Bias ``[C]``, down ``[C, rank]`` and up ``[rank, C]`` of a LoRA ``bias + (x @ down) @ up`` (zeros)."""
    return nn.Parameter(torch.zeros(width)), nn.Parameter(torch.zeros(width, rank)), nn.Parameter(torch.zeros(rank, width))


class RWKV7TimeMix(nn.Module):
    """RWKV-7 time mix, parameters named and shaped as BlinkDL's ``att`` (vectors ``[C]`` instead of ``[1, 1, C]``).

    With ``x [B, T, C]`` and ``d = shift(x) - x``: ``x_* = x + d * mu_*``; ``r = R x_r``, ``k = K x_k``, ``v = V x_v``;
    log decay ``-e^{-1/2} sigmoid(w0 + tanh(x_w W1) W2)``; ``a = sigmoid(a0 + x_a A1 A2)``;
    ``g = sigmoid(x_g G1) G2``; ``kk = normalize(k * k_k)`` per head; ``k <- k (1 + (a - 1) k_a)``; value residual
    ``v <- v + (v_first - v) sigmoid(v0 + x_v V1 V2)`` (layers > 0; layer 0's ``v`` is ``v_first``);
    ``o = `` :func:`~hf_recurrent.kernels.delta_rule.generalized_delta_rule` ``(r, log w, k, v, -kk, kk a)``;
    ``o <- GroupNorm_H(o) + (sum_head r k r_k) v``; returns ``output(o * g)``.

    Cache slot 0: the token-shift buffer ``[B, C, 1]`` and the state ``[B, H, N, N]`` float32 (``[key, value]``).
    Padded positions get log decay 0, key 0 and ``b = 0``: the state passes unchanged.
    """

    supports_packed_sequences = True

    def __init__(self, config: HfrRWKV7Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_layers = config.num_hidden_layers
        self.num_heads, self.head_size = config.num_heads, config.head_size
        C, ranks = config.hidden_size, config.lora_ranks
        for name in _NAMES_OF_MIXES:
            setattr(self, name, nn.Parameter(torch.zeros(C)))
        self.w0, self.w1, self.w2 = _lora(C, ranks["w"])
        self.a0, self.a1, self.a2 = _lora(C, ranks["a"])
        if layer_idx > 0:
            self.v0, self.v1, self.v2 = _lora(C, ranks["v"])
        _, self.g1, self.g2 = _lora(C, ranks["g"])  # the gate's LoRA has no bias
        self.k_k, self.k_a = nn.Parameter(torch.ones(C)), nn.Parameter(torch.ones(C))
        self.r_k = nn.Parameter(torch.zeros(self.num_heads, self.head_size))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(self.num_heads, C, eps=config.head_norm_eps)

    def _init_weights(self, config: HfrRWKV7Config) -> None:
        """A trainable start in the spirit of BlinkDL's: ramps for mixes and decay, small random LoRAs."""
        C = self.w0.numel()
        depth = self.layer_idx / max(self.num_layers - 1, 1)
        ramp = torch.arange(C, dtype=torch.float32) / C
        with torch.no_grad():
            for i, name in enumerate(_NAMES_OF_MIXES):
                getattr(self, name).copy_(1 - ramp ** (0.2 + 0.1 * i) * (1 - depth))
            self.w0.copy_(-6 + 5 * ramp ** (0.85 + depth**0.5) + 0.5)
            self.a0.zero_()
            self.k_k.fill_(0.85)
            self.k_a.fill_(1.0)
            std = config.initializer_range
            lora = [self.w1, self.w2, self.a1, self.a2, self.g1, self.g2, self.r_k]
            if self.layer_idx > 0:
                self.v0.fill_(1.0)
                lora += [self.v1, self.v2]
            for p in lora:
                nn.init.normal_(p, std=std)
            nn.init.ones_(self.ln_x.weight)
            nn.init.zeros_(self.ln_x.bias)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        layer_context: dict[str, torch.Tensor] | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        H, N = self.num_heads, self.head_size
        previous, state = load_shift(cache, self.layer_idx, TIME_MIX_SLOT)
        shifted, last = token_shift(x, attention_mask, previous, cu_seqlens)
        d = shifted - x
        xr, xw, xk, xv, xa, xg = (x + d * getattr(self, name) for name in _NAMES_OF_MIXES)

        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        log_w = -math.exp(-0.5) * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)
        k = k * (1 + (a - 1) * self.k_a)
        if layer_context is None:
            raise ValueError("RWKV-7 time mix needs the layer_context of the forward pass (value residual)")
        if self.layer_idx == 0:
            layer_context["v_first"] = v
        else:
            v = v + (layer_context["v_first"] - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)

        heads = lambda t: t.view(B, T, H, N)  # noqa: E731
        r, k, v, a = heads(r), heads(k), heads(v), heads(a)
        b = kk * a
        log_w = log_w.view(B, T, H, N)
        if attention_mask is not None:  # padding: decay 1, no key, no rank-one update -> state unchanged
            keep = attention_mask[:, :, None, None].to(k.dtype)
            k, b, log_w = k * keep, b * keep, log_w * keep.float()
        if T == 1 and state is not None:
            o = generalized_delta_rule_step(r[:, 0], log_w[:, 0], k[:, 0], v[:, 0], -kk[:, 0], b[:, 0], state)[:, None]
        else:
            o, state = generalized_delta_rule(r, log_w, k, v, -kk, b, initial_state=state,
                                              output_final_state=cache is not None, cu_seqlens=cu_seqlens)
        store_shift(cache, self.layer_idx, TIME_MIX_SLOT, last, state)

        o = self.ln_x(o.reshape(B * T, C)).view(B, T, H, N)
        o = o + (r * k * self.r_k).sum(dim=-1, keepdim=True) * v
        return self.output(o.reshape(B, T, C) * g)


class RWKV7ChannelMix(nn.Module):
    """RWKV-7 channel mix: ``value(relu(key(x + (shift(x) - x) * x_k))^2)``. Cache slot 1: the token-shift buffer."""

    def __init__(self, config: HfrRWKV7Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.x_k = nn.Parameter(torch.zeros(config.hidden_size))
        self.key = nn.Linear(config.hidden_size, config.mlp_size, bias=False)
        self.value = nn.Linear(config.mlp_size, config.hidden_size, bias=False)

    def _init_weights(self, config: HfrRWKV7Config) -> None:
        C = self.x_k.numel()
        with torch.no_grad():
            self.x_k.copy_(1 - (torch.arange(C, dtype=torch.float32) / C) ** 4)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        previous, _ = load_shift(cache, self.layer_idx, CHANNEL_MIX_SLOT)
        shifted, last = token_shift(x, attention_mask, previous, cu_seqlens)
        store_shift(cache, self.layer_idx, CHANNEL_MIX_SLOT, last)
        return self.value(F.relu(self.key(x + (shifted - x) * self.x_k)).square())


class RWKV7Block(RwkvBlock):
    channel_mix_class = RWKV7ChannelMix
    takes_layer_context = True


class HfrRWKV7PreTrainedModel(RecurrentPreTrainedModel):
    config_class = HfrRWKV7Config
    mixer_class = RWKV7TimeMix
    block_class = RWKV7Block


class HfrRWKV7Model(HfrRWKV7PreTrainedModel, RecurrentModel):
    """The RWKV-7 stack without an LM head."""


class HfrRWKV7ForCausalLM(HfrRWKV7PreTrainedModel, RecurrentForCausalLM):
    """RWKV-7 causal language model."""

    base_model_class = HfrRWKV7Model
