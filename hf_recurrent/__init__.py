"""hf_recurrent: recurrent sequence models (linear attention, state spaces, gated RNNs) for transformers.

``import hf_recurrent`` registers every architecture with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``.
"""

from .modeling import ARCHITECTURES
from .modeling.gla import GLAConfig, GLAForCausalLM, GLAModel

__version__ = "0.1.0"

__all__ = ["ARCHITECTURES", "GLAConfig", "GLAForCausalLM", "GLAModel", "__version__"]
