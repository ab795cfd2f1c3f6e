"""minGRU and minLSTM (Feng, Tung, Ahmed, Bengio, Hajimirsadeghi, "Were RNNs All We Needed?", 2024) in
minGRU-pytorch's language-model layout, on the element-wise linear scan."""

from ..registry import Architecture, register
from .configuration_minrnn import HfrMinGRUConfig, HfrMinLSTMConfig, MinRNNConfig
from .modeling_minrnn import HfrMinGRUForCausalLM, HfrMinGRUModel, HfrMinLSTMForCausalLM, HfrMinLSTMModel, MinRNNMixer

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, hidden_ratio=2, bos_token_id=1, eos_token_id=2,
             pad_token_id=0)

MINGRU = register(Architecture("mingru", HfrMinGRUConfig, HfrMinGRUModel, HfrMinGRUForCausalLM,
                               test_configs={"conv-noproj": dict(_TINY, expansion=1.0, use_conv=True)}))
MINLSTM = register(Architecture("minlstm", HfrMinLSTMConfig, HfrMinLSTMModel, HfrMinLSTMForCausalLM,
                                test_configs={"conv-expand": dict(_TINY, use_conv=True)}))

__all__ = ["HfrMinGRUConfig", "HfrMinGRUForCausalLM", "HfrMinGRUModel", "HfrMinLSTMConfig", "HfrMinLSTMForCausalLM", "HfrMinLSTMModel",
           "MinRNNConfig", "MinRNNMixer"]
