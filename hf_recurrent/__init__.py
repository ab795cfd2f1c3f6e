"""hf_recurrent: recurrent sequence models (linear attention, state spaces, gated RNNs) for transformers.

``import hf_recurrent`` registers every architecture with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``.
"""

from .modeling import ARCHITECTURES
from .modeling.gla import GLAConfig, GLAForCausalLM, GLAModel
from .modeling.gateloop import HfrGateLoopConfig, HfrGateLoopForCausalLM, HfrGateLoopModel
from .modeling.mamba import HfrMambaConfig, HfrMambaForCausalLM, HfrMambaModel
from .modeling.mamba2 import HfrMamba2Config, HfrMamba2ForCausalLM, HfrMamba2Model
from .modeling.retnet import HfrRetNetConfig, HfrRetNetForCausalLM, HfrRetNetModel
from .modeling.rwkv4 import RWKV4Config, RWKV4ForCausalLM, RWKV4Model
from .modeling.rwkv7 import RWKV7Config, RWKV7ForCausalLM, RWKV7Model
from .modeling.minrnn import (
    MinGRUConfig,
    MinGRUForCausalLM,
    MinGRUModel,
    MinLSTMConfig,
    MinLSTMForCausalLM,
    MinLSTMModel,
)
from .modeling.rnn import (
    GRUConfig,
    GRUForCausalLM,
    GRUModel,
    LSTMConfig,
    LSTMForCausalLM,
    LSTMModel,
    SLSTMConfig,
    SLSTMForCausalLM,
    SLSTMModel,
)
from .tokenization_world import RwkvWorldTokenizer

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "GLAConfig",
    "GLAForCausalLM",
    "GLAModel",
    "HfrGateLoopConfig",
    "HfrGateLoopForCausalLM",
    "HfrGateLoopModel",
    "HfrMambaConfig",
    "HfrMambaForCausalLM",
    "HfrMambaModel",
    "HfrMamba2Config",
    "HfrMamba2ForCausalLM",
    "HfrMamba2Model",
    "HfrRetNetConfig",
    "HfrRetNetForCausalLM",
    "HfrRetNetModel",
    "RWKV4Config",
    "RWKV4ForCausalLM",
    "RWKV4Model",
    "RWKV7Config",
    "RWKV7ForCausalLM",
    "RWKV7Model",
    "GRUConfig",
    "GRUForCausalLM",
    "GRUModel",
    "LSTMConfig",
    "LSTMForCausalLM",
    "LSTMModel",
    "MinGRUConfig",
    "MinGRUForCausalLM",
    "MinGRUModel",
    "MinLSTMConfig",
    "MinLSTMForCausalLM",
    "MinLSTMModel",
    "SLSTMConfig",
    "SLSTMForCausalLM",
    "SLSTMModel",
    "RwkvWorldTokenizer",
    "__version__",
]
