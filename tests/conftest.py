"""Shared test fixtures: the (architecture, variant) grid every common test runs over.

Without a GPU, Triton kernels are tested in Triton's CPU interpreter. ``TRITON_INTERPRET`` must be set before
``import torch`` (which imports Triton), hence first thing here; on a machine with an NVIDIA device it is left alone.
"""

from __future__ import annotations

import os

if not os.path.exists("/dev/nvidia0") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")


if os.environ.get("TRITON_INTERPRET") == "1":
    from tests.triton_interpreter import patch_triton_interpreter

    patch_triton_interpreter()

import pytest  # noqa: E402
import torch  # noqa: E402

import hf_recurrent  # noqa: E402

# Tests run thousands of tiny ops: one thread avoids the pool's overhead (10x on a busy 2-core machine).
torch.set_num_threads(1)
from hf_recurrent.modeling.registry import ARCHITECTURES  # noqa: E402

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
