"""RWKV-4 on the shared shell: time mix (WKV), channel mix, the block and the three model classes."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.cache_utils import Cache

from ...kernels.wkv4 import wkv4, wkv4_step
from ..common import RecurrentForCausalLM, RecurrentModel, RecurrentPreTrainedModel
from .configuration_rwkv4 import HfrRWKV4Config
from .rwkv_block import CHANNEL_MIX_SLOT, TIME_MIX_SLOT, RwkvBlock, load_shift, store_shift, token_shift


def _mix(x: torch.Tensor, shifted: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """RWKV-4's token-shift interpolation ``x * ratio + shifted * (1 - ratio)``."""
    return x * ratio + shifted * (1 - ratio)


def _init_mix(param: torch.Tensor, layer_idx: int, num_layers: int, power: float = 1.0) -> None:
    """BlinkDL's ramp ``(i / C) ** ((1 - layer / L) * power)`` over channels ``i``."""
    C = param.numel()
    exponent = (1 - layer_idx / max(num_layers, 1)) * power
    with torch.no_grad():
        param.copy_((torch.arange(C, dtype=torch.float32) / C) ** exponent)


class RWKV4TimeMix(nn.Module):
    """RWKV-4 time mix, laid out as BlinkDL's ``att`` (and transformers' ``RwkvSelfAttention``).

    ``x [B, T, C]``, ``xx`` its token shift; ``k = key(mix(x, xx, mu_k))``, ``v``, ``r`` alike;
    ``o = WKV(w = -exp(time_decay), u = time_first, k, v)``; returns ``output(sigmoid(r) * o)``.
    Cache slot 0: the token-shift buffer ``[B, C, 1]`` and the WKV state ``[B, 3, 1, A]`` float32.
    """

    supports_packed_sequences = True

    def __init__(self, config: HfrRWKV4Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx, self.num_layers = layer_idx, config.num_hidden_layers
        C, A = config.hidden_size, config.attention_size
        self.time_decay = nn.Parameter(torch.zeros(A))
        self.time_first = nn.Parameter(torch.zeros(A))
        self.time_mix_key = nn.Parameter(torch.ones(C))
        self.time_mix_value = nn.Parameter(torch.ones(C))
        self.time_mix_receptance = nn.Parameter(torch.ones(C))
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        self.receptance = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)

    def _init_weights(self, config: HfrRWKV4Config) -> None:
        A = self.time_decay.numel()
        ratio = self.layer_idx / max(self.num_layers - 1, 1)
        with torch.no_grad():
            speed = torch.arange(A, dtype=torch.float32) / max(A - 1, 1)
            self.time_decay.copy_(-5 + 8 * speed ** (0.7 + 1.3 * ratio))
            zigzag = torch.tensor([((i + 1) % 3 - 1) * 0.5 for i in range(A)])
            self.time_first.copy_(math.log(0.3) + zigzag)
        _init_mix(self.time_mix_key, self.layer_idx, self.num_layers)
        _init_mix(self.time_mix_value, self.layer_idx, self.num_layers)
        _init_mix(self.time_mix_receptance, self.layer_idx, self.num_layers, power=0.5)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        previous, state = load_shift(cache, self.layer_idx, TIME_MIX_SLOT)
        shifted, last = token_shift(x, attention_mask, previous, cu_seqlens)
        k = self.key(_mix(x, shifted, self.time_mix_key))
        v = self.value(_mix(x, shifted, self.time_mix_value))
        r = torch.sigmoid(self.receptance(_mix(x, shifted, self.time_mix_receptance)))
        w = -torch.exp(self.time_decay.float())[None]
        u = self.time_first.float()[None]
        if x.shape[1] == 1 and state is not None and attention_mask is None:
            o = wkv4_step(w, u, k[:, 0, None], v[:, 0, None], state)[:, None]
        else:
            o, state = wkv4(w, u, k[:, :, None], v[:, :, None], mask=attention_mask, initial_state=state,
                            output_final_state=cache is not None, cu_seqlens=cu_seqlens)
        store_shift(cache, self.layer_idx, TIME_MIX_SLOT, last, state)
        return self.output(r * o[:, :, 0].to(r.dtype))


class RWKV4ChannelMix(nn.Module):
    """RWKV-4 channel mix: ``sigmoid(receptance(mix(x, xx, mu_r))) * value(relu(key(mix(x, xx, mu_k)))^2)``.

    Cache slot 1: the token-shift buffer ``[B, C, 1]``.
    """

    def __init__(self, config: HfrRWKV4Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx, self.num_layers = layer_idx, config.num_hidden_layers
        C, F_ = config.hidden_size, config.mlp_size
        self.time_mix_key = nn.Parameter(torch.ones(C))
        self.time_mix_receptance = nn.Parameter(torch.ones(C))
        self.key = nn.Linear(C, F_, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def _init_weights(self, config: HfrRWKV4Config) -> None:
        _init_mix(self.time_mix_key, self.layer_idx, self.num_layers)
        _init_mix(self.time_mix_receptance, self.layer_idx, self.num_layers)

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
        k = F.relu(self.key(_mix(x, shifted, self.time_mix_key))).square()
        return torch.sigmoid(self.receptance(_mix(x, shifted, self.time_mix_receptance))) * self.value(k)


class RWKV4Block(RwkvBlock):
    channel_mix_class = RWKV4ChannelMix


class HfrRWKV4PreTrainedModel(RecurrentPreTrainedModel):
    config_class = HfrRWKV4Config
    mixer_class = RWKV4TimeMix
    block_class = RWKV4Block


class HfrRWKV4Model(HfrRWKV4PreTrainedModel, RecurrentModel):
    """The RWKV-4 stack without an LM head."""


class HfrRWKV4ForCausalLM(HfrRWKV4PreTrainedModel, RecurrentForCausalLM):
    """RWKV-4 causal language model."""

    base_model_class = HfrRWKV4Model
