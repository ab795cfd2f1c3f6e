"""hf_recurrent: recurrent sequence models (linear attention, state spaces, gated RNNs) for transformers.

``import hf_recurrent`` registers every architecture with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``.
"""

from .modeling import ARCHITECTURES
from .modeling.gla import HfrGLAConfig, HfrGLAForCausalLM, HfrGLAModel
from .modeling.gateloop import HfrGateLoopConfig, HfrGateLoopForCausalLM, HfrGateLoopModel
from .modeling.mamba import HfrMambaConfig, HfrMambaForCausalLM, HfrMambaModel
from .modeling.mamba2 import HfrMamba2Config, HfrMamba2ForCausalLM, HfrMamba2Model
from .modeling.retnet import HfrRetNetConfig, HfrRetNetForCausalLM, HfrRetNetModel
from .modeling.rwkv4 import HfrRWKV4Config, HfrRWKV4ForCausalLM, HfrRWKV4Model
from .modeling.rwkv7 import HfrRWKV7Config, HfrRWKV7ForCausalLM, HfrRWKV7Model
from .modeling.minrnn import (
    HfrMinGRUConfig,
    HfrMinGRUForCausalLM,
    HfrMinGRUModel,
    HfrMinLSTMConfig,
    HfrMinLSTMForCausalLM,
    HfrMinLSTMModel,
)
from .modeling.rnn import (
    HfrGRUConfig,
    HfrGRUForCausalLM,
    HfrGRUModel,
    HfrLSTMConfig,
    HfrLSTMForCausalLM,
    HfrLSTMModel,
    HfrSLSTMConfig,
    HfrSLSTMForCausalLM,
    HfrSLSTMModel,
)
from .tokenization_world import RwkvWorldTokenizer

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "HfrGLAConfig",
    "HfrGLAForCausalLM",
    "HfrGLAModel",
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
    "HfrRWKV4Config",
    "HfrRWKV4ForCausalLM",
    "HfrRWKV4Model",
    "HfrRWKV7Config",
    "HfrRWKV7ForCausalLM",
    "HfrRWKV7Model",
    "HfrGRUConfig",
    "HfrGRUForCausalLM",
    "HfrGRUModel",
    "HfrLSTMConfig",
    "HfrLSTMForCausalLM",
    "HfrLSTMModel",
    "HfrMinGRUConfig",
    "HfrMinGRUForCausalLM",
    "HfrMinGRUModel",
    "HfrMinLSTMConfig",
    "HfrMinLSTMForCausalLM",
    "HfrMinLSTMModel",
    "HfrSLSTMConfig",
    "HfrSLSTMForCausalLM",
    "HfrSLSTMModel",
    "RwkvWorldTokenizer",
    "__version__",
]
