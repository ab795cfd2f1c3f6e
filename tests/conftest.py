"""Shared test fixtures: the (architecture, variant) grid every common test runs over."""

from __future__ import annotations

import pytest
import torch

import hf_recurrent
from hf_recurrent.modeling.registry import ARCHITECTURES

ARCH_CASES = [
    pytest.param(arch, variant, id=f"{arch.name}-{variant}")
    for arch in ARCHITECTURES.values()
    for variant in arch.test_configs
]


def build_model(arch, variant: str, seed: int = 0, **overrides):
    """A tiny fp32 model of ``arch``'s ``variant`` with weights large enough that logits differ across tokens."""
    torch.manual_seed(seed)
    config = arch.config_class(**{**arch.test_configs[variant], "initializer_range": 0.2, **overrides})
    return arch.causal_lm_class(config).eval()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


assert hf_recurrent.ARCHITECTURES is ARCHITECTURES
