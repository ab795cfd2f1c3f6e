"""minGRU and minLSTM on the shared shell: the token mixer, minLM's block, and the model classes."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.cache_utils import Cache

from ...kernels.linear_scan import linear_scan, linear_scan_step
from ..common import (
    RecurrentBlock,
    RecurrentForCausalLM,
    RecurrentModel,
    RecurrentPreTrainedModel,
    RMSNorm,
    ShortConvolution,
    load_state,
    store_state,
)
from .configuration_minrnn import HfrMinGRUConfig, HfrMinLSTMConfig, MinRNNConfig


def positive(x: torch.Tensor) -> torch.Tensor:
    """``g(x) = x + 1/2`` for ``x >= 0``, ``sigmoid(x)`` below: the positive candidate state of the paper."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


class MinRNNMixer(nn.Module):
    """minGRU / minLSTM over ``x [B, T, hidden]``, as minGRU-pytorch's ``minGRU`` / ``minLSTM`` modules.

    minGRU: ``(h~, k) = W x``, ``log a = log(1 - sigmoid(k)) = -softplus(k)``, ``b = sigmoid(k) g(h~)``.
    minLSTM: ``(h~, f, i) = W x``, ``d = softplus(-f) - softplus(-i)``, ``log a = -softplus(d)``,
    ``b = sigmoid(d) g(h~)`` (forget and input gates normalised to sum to one). Both then run
    :func:`~hf_recurrent.kernels.linear_scan.linear_scan` ``h_t = a_t h_{t-1} + b_t`` on ``inner_size`` channels
    (one head) and project back with ``to_out`` when ``proj_out``.

    Cache (slot 0): the state ``[B, 1, inner]`` float32. Padding: ``log a = 0, b = 0``, the state is unchanged.
    """

    def __init__(self, config: MinRNNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.cell = config.cell
        self.inner = config.inner_size
        parts = 2 if config.cell == "mingru" else 3
        self.in_proj = nn.Linear(config.hidden_size, parts * self.inner, bias=False)
        self.to_out = nn.Linear(self.inner, config.hidden_size, bias=False) if config.use_proj_out else None

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: Cache | None = None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        _, state = load_state(cache, self.layer_idx)
        if self.cell == "mingru":
            hidden, gate = self.in_proj(x).float().chunk(2, dim=-1)
            log_a, b = -F.softplus(gate), torch.sigmoid(gate) * positive(hidden)
        else:
            hidden, f, i = self.in_proj(x).float().chunk(3, dim=-1)
            d = F.softplus(-f) - F.softplus(-i)
            log_a, b = -F.softplus(d), torch.sigmoid(d) * positive(hidden)
        if attention_mask is not None:
            keep = attention_mask[:, :, None].float()
            log_a, b = log_a * keep, b * keep
        log_a, b = log_a.view(B, T, 1, self.inner), b.view(B, T, 1, self.inner)
        if T == 1 and state is not None:
            state = linear_scan_step(log_a[:, 0], b[:, 0], state)
            h = state.unsqueeze(1)
        else:
            h, state = linear_scan(log_a, b, initial_state=state, output_final_state=cache is not None)
        store_state(cache, self.layer_idx, None, state)
        h = h.reshape(B, T, self.inner).to(x.dtype)
        return h if self.to_out is None else self.to_out(h)


class MinLMBlock(RecurrentBlock):
    """minLM's block: ``x + pw(dwconv(x))`` (optional), ``x + rnn(norm(x))``, ``x + MLP(norm(x))`` (GELU, biases).

    The convolution's tail lives in cache slot 1 of the layer (the mixer uses slot 0); padded positions feed zeros
    into it, as an empty tail would.
    """

    def __init__(self, config: MinRNNConfig, layer_idx: int, mixer_class: type[nn.Module]) -> None:
        nn.Module.__init__(self)
        self.gradient_checkpointing = False
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        if config.use_conv:
            self.conv1d = ShortConvolution(config.hidden_size, config.conv_size, bias=True, activation=None)
            self.conv_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)
        else:
            self.conv1d = self.conv_proj = None
        self.mixer_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mixer = mixer_class(config, layer_idx)
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.mlp_size), nn.GELU(), nn.Linear(config.mlp_size, config.hidden_size)
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        if self.conv1d is not None:
            x = hidden_states if attention_mask is None else hidden_states * attention_mask[:, :, None].to(
                hidden_states.dtype)
            tail, _ = load_state(cache, self.layer_idx, slot=1)
            y, tail = self.conv1d(x, tail)
            store_state(cache, self.layer_idx, tail, None, slot=1)
            hidden_states = hidden_states + self.conv_proj(y)
        hidden_states = hidden_states + self.mixer(
            self.mixer_norm(hidden_states), attention_mask=attention_mask, cache=cache
        )
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))


class MinRNNPreTrainedModel(RecurrentPreTrainedModel):
    mixer_class = MinRNNMixer
    block_class = MinLMBlock


class HfrMinGRUPreTrainedModel(MinRNNPreTrainedModel):
    config_class = HfrMinGRUConfig


class HfrMinGRUModel(HfrMinGRUPreTrainedModel, RecurrentModel):
    """The minGRU decoder stack without an LM head."""


class HfrMinGRUForCausalLM(HfrMinGRUPreTrainedModel, RecurrentForCausalLM):
    """minGRU causal language model (minGRU-pytorch's ``minLM``)."""

    base_model_class = HfrMinGRUModel


class HfrMinLSTMPreTrainedModel(MinRNNPreTrainedModel):
    config_class = HfrMinLSTMConfig


class HfrMinLSTMModel(HfrMinLSTMPreTrainedModel, RecurrentModel):
    """The minLSTM decoder stack without an LM head."""


class HfrMinLSTMForCausalLM(HfrMinLSTMPreTrainedModel, RecurrentForCausalLM):
    """minLSTM causal language model (minGRU-pytorch's ``minLM(use_lstm=True)``)."""

    base_model_class = HfrMinLSTMModel
