"""The architecture registry: what ``import hf_recurrent`` registers with the Auto classes and the tests run over.

Each architecture folder calls :func:`register` once with its classes and the small configs the common test
suite builds (``test_configs``: name -> config kwargs; tiny, CPU-fast, covering the architecture's variants).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .common import RecurrentConfig, RecurrentForCausalLM, RecurrentModel


@dataclass(frozen=True)
class Architecture:
    name: str
    config_class: type[RecurrentConfig]
    model_class: type[RecurrentModel]
    causal_lm_class: type[RecurrentForCausalLM]
    test_configs: dict[str, dict[str, Any]] = field(default_factory=dict)


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Record ``arch`` and register its config and models with transformers' Auto classes."""
    if arch.name in ARCHITECTURES:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    model_type = arch.config_class.model_type
    AutoConfig.register(model_type, arch.config_class)
    AutoModel.register(arch.config_class, arch.model_class)
    AutoModelForCausalLM.register(arch.config_class, arch.causal_lm_class)
    ARCHITECTURES[arch.name] = arch
    return arch
