"""minGRU and minLSTM (Feng, Tung, Ahmed, Bengio, Hajimirsadeghi, "Were RNNs All We Needed?", 2024) in
minGRU-pytorch's language-model layout, on the element-wise linear scan."""

from ..registry import Architecture, register
from .configuration_minrnn import MinGRUConfig, MinLSTMConfig, MinRNNConfig
from .modeling_minrnn import MinGRUForCausalLM, MinGRUModel, MinLSTMForCausalLM, MinLSTMModel, MinRNNMixer

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, hidden_ratio=2, bos_token_id=1, eos_token_id=2,
             pad_token_id=0)

MINGRU = register(Architecture("mingru", MinGRUConfig, MinGRUModel, MinGRUForCausalLM,
                               test_configs={"conv-noproj": dict(_TINY, expansion=1.0, use_conv=True)}))
MINLSTM = register(Architecture("minlstm", MinLSTMConfig, MinLSTMModel, MinLSTMForCausalLM,
                                test_configs={"conv-expand": dict(_TINY, use_conv=True)}))

__all__ = ["MinGRUConfig", "MinGRUForCausalLM", "MinGRUModel", "MinLSTMConfig", "MinLSTMForCausalLM", "MinLSTMModel",
           "MinRNNConfig", "MinRNNMixer"]
