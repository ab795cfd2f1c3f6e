"""What every architecture shares: config base, decoder shell, layers, cache plumbing."""

from .cache import load_state, store_state
from .configuration import MultiHeadConfig, RecurrentConfig
from .layers import (
    FEATURE_MAPS,
    GatedMLP,
    GatedRMSNorm,
    RMSNorm,
    ShortConvolution,
    add_gated_output,
    gated_output,
    log_gate,
    project,
    project_add,
)
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
    "MultiHeadConfig",
    "RMSNorm",
    "RecurrentBlock",
    "RecurrentCausalLMOutput",
    "RecurrentConfig",
    "RecurrentForCausalLM",
    "RecurrentModel",
    "RecurrentModelOutput",
    "RecurrentPreTrainedModel",
    "ShortConvolution",
    "add_gated_output",
    "gated_output",
    "load_state",
    "log_gate",
    "project",
    "project_add",
    "store_state",
]
