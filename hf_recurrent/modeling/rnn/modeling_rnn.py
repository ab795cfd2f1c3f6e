"""LSTM, GRU and sLSTM on the shared shell: one token mixer parameterised by the cell, and the model classes."""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.cache_utils import Cache

from ...kernels.rnn_cells import CELLS, rnn_cell_scan, rnn_cell_step
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
from .configuration_rnn import GatedRNNConfig, HfrGRUConfig, HfrLSTMConfig, HfrSLSTMConfig


class GatedRNNMixer(nn.Module):
    """A gated recurrent layer: ``x [B, T, hidden]`` -> the cell's outputs ``y [B, T, hidden]``.

    ``gate_proj`` (with bias) gives the input part of every gate at once, laid out ``[H, G, D]`` per token
    (``H`` heads of ``D``, ``G`` gates in the cell's order); ``recurrent_weight`` ``[H, G, D, D]`` (input index
    first) is the block-diagonal recurrent matrix; the GRU also has ``recurrent_bias`` ``[H, G, D]`` (``b_hh`` of
    ``nn.GRU``, inside the reset gate's product). sLSTM: with ``use_short_conv`` the input and forget gates read a
    causal convolution of ``x`` (SiLU), the others ``x`` itself; with ``use_head_norm`` the output is RMS-normalised
    per head. See :mod:`hf_recurrent.kernels.rnn_cells` for the cells.

    Cache (slot 0): the state ``[B, S, H, D]`` float32 (``(y, c)`` LSTM, ``(y,)`` GRU, ``(y, c, n, m)`` sLSTM) and,
    for sLSTM with a convolution, its tail ``[B, hidden, W-1]``. Padded positions keep the state exactly (the
    kernel's ``keep`` mask) and feed zeros into the convolution.
    """

    def __init__(self, config: GatedRNNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.cell = config.cell
        self.num_gates = CELLS[config.cell][0]
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        hidden, H, G, D = config.hidden_size, config.num_heads, self.num_gates, config.head_dim
        self.use_short_conv = getattr(config, "use_short_conv", False)
        if self.use_short_conv:  # sLSTM: i, f from the convolved input; z, o from the input
            self.conv1d = ShortConvolution(hidden, config.conv_size, bias=True)
            self.conv_gate_proj = nn.Linear(hidden, H * 2 * D, bias=True)
            self.gate_proj = nn.Linear(hidden, H * (G - 2) * D, bias=True)
        else:
            self.gate_proj = nn.Linear(hidden, H * G * D, bias=True)
        self.recurrent_weight = nn.Parameter(torch.empty(H, G, D, D))
        self.recurrent_bias = nn.Parameter(torch.zeros(H, G, D)) if config.cell == "gru" else None
        self.head_norm = RMSNorm(D, eps=config.norm_eps) if getattr(config, "use_head_norm", False) else None
        nn.init.normal_(self.recurrent_weight, std=D**-0.5)

    def _init_weights(self, config: GatedRNNConfig) -> None:
        if config.plain_stack:  # torch.nn.LSTM / nn.GRU's initialisation: U(-k, k), k = hidden^-1/2, for everything
            bound = config.hidden_size**-0.5
            for p in self.parameters():
                nn.init.uniform_(p, -bound, bound)
            return
        nn.init.normal_(self.recurrent_weight, std=min(config.initializer_range, self.head_dim**-0.5))
        if self.recurrent_bias is not None:
            nn.init.zeros_(self.recurrent_bias)

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: Cache | None = None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        H, D = self.num_heads, self.head_dim
        conv_tail, state = load_state(cache, self.layer_idx)
        gx = self.gate_proj(x).view(B, T, H, -1, D)
        new_tail = None
        if self.use_short_conv:
            xc = x if attention_mask is None else x * attention_mask[:, :, None].to(x.dtype)
            xc, new_tail = self.conv1d(xc, conv_tail)
            gx = torch.cat([self.conv_gate_proj(xc).view(B, T, H, 2, D), gx], dim=3)
        if T == 1 and state is not None:
            keep = None if attention_mask is None else attention_mask[:, 0]
            y, state = rnn_cell_step(self.cell, gx[:, 0], self.recurrent_weight, self.recurrent_bias, state, keep=keep)
            y = y.unsqueeze(1)
        else:
            y, state = rnn_cell_scan(
                self.cell, gx, self.recurrent_weight, self.recurrent_bias, initial_state=state,
                keep=attention_mask, output_final_state=cache is not None,
            )
        store_state(cache, self.layer_idx, new_tail, state)
        if self.head_norm is not None:
            y = self.head_norm(y)
        return y.reshape(B, T, H * D)


class GatedRNNBlock(RecurrentBlock):
    """The shell's pre-norm residual block, or with ``config.plain_stack`` the bare recurrence ``x -> mixer(x)``."""

    def __init__(self, config: GatedRNNConfig, layer_idx: int, mixer_class: type[nn.Module]) -> None:
        super().__init__(config, layer_idx, mixer_class)
        if config.plain_stack:
            self.mixer_norm = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        if self.mixer_norm is None:  # the shell refuses cu_seqlens before: these mixers do not run packed rows
            return self.mixer(hidden_states, attention_mask=attention_mask, cache=cache)
        return super().forward(hidden_states, attention_mask=attention_mask, cache=cache, cu_seqlens=cu_seqlens)


class GatedRNNPreTrainedModel(RecurrentPreTrainedModel):
    """``plain_stack`` models start like their PyTorch counterparts (``nn.Embedding``, ``nn.Linear`` defaults)."""

    mixer_class = GatedRNNMixer
    block_class = GatedRNNBlock

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if self.config.plain_stack and isinstance(module, (nn.Linear, nn.Embedding)):
            module.reset_parameters()
            return
        super()._init_weights(module)


class GatedRNNModel(RecurrentModel):
    """Shell model whose final norm is dropped for ``plain_stack`` configs."""

    def __init__(self, config: GatedRNNConfig) -> None:
        super().__init__(config)
        if config.plain_stack:
            self.norm = nn.Identity()


class GatedRNNForCausalLM(RecurrentForCausalLM):
    """Shell causal LM whose head has a bias when ``config.lm_head_bias``."""

    def __init__(self, config: GatedRNNConfig) -> None:
        super().__init__(config)
        if config.lm_head_bias:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
            self.post_init()


class HfrLSTMPreTrainedModel(GatedRNNPreTrainedModel):
    config_class = HfrLSTMConfig


class HfrLSTMModel(HfrLSTMPreTrainedModel, GatedRNNModel):
    """The LSTM decoder stack without an LM head."""


class HfrLSTMForCausalLM(HfrLSTMPreTrainedModel, GatedRNNForCausalLM):
    """LSTM causal language model."""

    base_model_class = HfrLSTMModel


class HfrGRUPreTrainedModel(GatedRNNPreTrainedModel):
    config_class = HfrGRUConfig


class HfrGRUModel(HfrGRUPreTrainedModel, GatedRNNModel):
    """The GRU decoder stack without an LM head."""


class HfrGRUForCausalLM(HfrGRUPreTrainedModel, GatedRNNForCausalLM):
    """GRU causal language model."""

    base_model_class = HfrGRUModel


class HfrSLSTMPreTrainedModel(GatedRNNPreTrainedModel):
    config_class = HfrSLSTMConfig


class HfrSLSTMModel(HfrSLSTMPreTrainedModel, GatedRNNModel):
    """The sLSTM decoder stack without an LM head."""


class HfrSLSTMForCausalLM(HfrSLSTMPreTrainedModel, GatedRNNForCausalLM):
    """sLSTM causal language model (xLSTM's sLSTM blocks)."""

    base_model_class = HfrSLSTMModel
