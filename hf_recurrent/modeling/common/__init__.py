"""What every architecture shares: config base, decoder shell, layers, cache plumbing."""

from .cache import load_state, store_state
from .configuration import RecurrentConfig
from .layers import FEATURE_MAPS, GatedMLP, GatedRMSNorm, RMSNorm, ShortConvolution
from .modeling import (
    RecurrentBlock,
    RecurrentCausalLMOutput,
    RecurrentForCausalLM,
    RecurrentModel,
    RecurrentModelOutput,
    RecurrentPreTrainedModel,
)

__all__ = [
    "FEATURE_MAPS",
    "GatedMLP",
    "GatedRMSNorm",
    "RMSNorm",
    "RecurrentBlock",
    "RecurrentCausalLMOutput",
    "RecurrentConfig",
    "RecurrentForCausalLM",
    "RecurrentModel",
    "RecurrentModelOutput",
    "RecurrentPreTrainedModel",
    "ShortConvolution",
    "load_state",
    "store_state",
]
