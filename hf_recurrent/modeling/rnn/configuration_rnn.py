"""Configs of the gated RNNs with head-wise block-diagonal recurrent weights: LSTM, GRU and sLSTM."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ...kernels.rnn_cells import CELLS
from ..common.configuration import RecurrentConfig


@strict
class GatedRNNConfig(RecurrentConfig):
    """Fields shared by the three cells; ``cell`` (class attribute) names the recurrence in
    :mod:`hf_recurrent.kernels.rnn_cells`.

    The hidden vector (``hidden_size``) is split into ``num_heads`` heads whose recurrent weights are
    block-diagonal (FlashRNN); ``num_heads = 1`` is a dense recurrence like ``torch.nn.LSTM``.

    ``plain_stack = True`` makes each layer the bare recurrence (no norm, residual or MLP, no final norm), so that
    a stack of layers equals ``nn.LSTM(num_layers=N)`` / ``nn.GRU`` exactly (the ``torch-lstm`` / ``torch-gru``
    conversions); it needs ``hidden_ratio = 0``, and such a model initialises like PyTorch's modules (``nn.Embedding``
    N(0, 1), ``nn.LSTM`` / ``nn.Linear`` uniform). ``lm_head_bias`` gives the LM head a bias (PyTorch's word language
    model has one).
    """

    model_type = "hfr_gated_rnn"
    cell = "lstm"

    num_heads: int = 4
    plain_stack: bool = False
    lm_head_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}; got {self.cell!r}")
        if self.num_heads <= 0 or self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.plain_stack and self.mlp_size:
            raise ValueError("plain_stack layers have no MLP: set hidden_ratio=0 (and no intermediate_size)")


@strict
class HfrLSTMConfig(GatedRNNConfig):
    """LSTM (Hochreiter & Schmidhuber, 1997), gates ``(i, f, z, o)`` in ``torch.nn.LSTM``'s order."""

    model_type = "hfr_lstm"
    cell = "lstm"


@strict
class HfrGRUConfig(GatedRNNConfig):
    """GRU (Cho et al., 2014), gates ``(r, z, n)`` as ``torch.nn.GRU`` (the reset gate scales ``W_hn h + b_hn``)."""

    model_type = "hfr_gru"
    cell = "gru"


@strict
class HfrSLSTMConfig(GatedRNNConfig):
    """sLSTM (Beck et al., "xLSTM", 2024): exponential input gate, normaliser and stabiliser states.

    As in xLSTM's sLSTM block, a causal convolution (width ``conv_size``, SiLU) of the input feeds the input and
    forget gates when ``use_short_conv``; the cell output is normalised per head (``use_head_norm``) before the
    residual; the block's MLP follows (``hidden_ratio``).
    """

    model_type = "hfr_slstm"
    cell = "slstm"

    use_short_conv: bool = True
    conv_size: int = 4
    use_head_norm: bool = True

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.use_short_conv and self.conv_size < 2:
            raise ValueError(f"conv_size must be >= 2 with use_short_conv; got {self.conv_size}")
