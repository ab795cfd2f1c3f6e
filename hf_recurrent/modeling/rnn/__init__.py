"""Gated RNNs with head-wise block-diagonal recurrent weights (FlashRNN; Pöppel, Beck, Hochreiter, 2024):
LSTM, GRU and xLSTM's sLSTM, each its own architecture on one shared mixer."""

from ..registry import Architecture, register
from .configuration_rnn import GatedRNNConfig, HfrGRUConfig, HfrLSTMConfig, HfrSLSTMConfig
from .modeling_rnn import (
    GatedRNNMixer,
    HfrGRUForCausalLM,
    HfrGRUModel,
    HfrLSTMForCausalLM,
    HfrLSTMModel,
    HfrSLSTMForCausalLM,
    HfrSLSTMModel,
)

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_heads=2, hidden_ratio=2, bos_token_id=1,
             eos_token_id=2, pad_token_id=0)
_PLAIN = dict(_TINY, num_heads=1, plain_stack=True, hidden_ratio=0, lm_head_bias=True, tie_word_embeddings=True)

LSTM = register(Architecture("lstm", HfrLSTMConfig, HfrLSTMModel, HfrLSTMForCausalLM,
                             test_configs={"blocks": _TINY, "plain-torch": _PLAIN}))
# GRU blocks and sLSTM without convolution run the same mixer code paths as the variants below (the cells differ
# only inside the kernel, which tests/kernels covers); one variant each keeps the common suite's CPU time small.
GRU = register(Architecture("gru", HfrGRUConfig, HfrGRUModel, HfrGRUForCausalLM, test_configs={"plain-torch": _PLAIN}))
SLSTM = register(Architecture("slstm", HfrSLSTMConfig, HfrSLSTMModel, HfrSLSTMForCausalLM,
                              test_configs={"conv-headnorm": _TINY}))

__all__ = [
    "HfrGRUConfig", "HfrGRUForCausalLM", "HfrGRUModel", "GatedRNNConfig", "GatedRNNMixer", "HfrLSTMConfig", "HfrLSTMForCausalLM",
    "HfrLSTMModel", "HfrSLSTMConfig", "HfrSLSTMForCausalLM", "HfrSLSTMModel",
]
