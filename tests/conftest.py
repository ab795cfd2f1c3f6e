"""Shared test fixtures: the (architecture, variant) grid every common test runs over.

Without a GPU, Triton kernels are tested in Triton's CPU interpreter. ``TRITON_INTERPRET`` must be set before
``import torch`` (which imports Triton), hence first thing here; on a machine with an NVIDIA device it is left alone.
"""

from __future__ import annotations

import os

if not os.path.exists("/dev/nvidia0") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")


# Triton reads the variable when a ``@triton.jit`` function is defined, and ``import torch`` (2.13) already imports
# Triton, before this file is read. Kernels defined afterwards (ours) are interpreted, but the library's own jitted
# helpers (``tl.sum``, ``tl.cumsum``, ``tl.cdiv``...) were defined as compiled functions; the patches below let
# interpreted kernels call them. A second patch works around the Triton 3.6 interpreter turning a loop bound read
# from memory into an int with ``int(array)`` on a one-element 1-D array, which NumPy >= 2.3 refuses. Neither
# applies unless ``TRITON_INTERPRET=1``.
def _patch_triton_interpreter() -> None:
    try:
        from triton.runtime import interpreter
        from triton.runtime.jit import JITFunction
    except ImportError:
        return
    if getattr(interpreter, "_hf_recurrent_patched", False):
        return
    interpreter._hf_recurrent_patched = True

    def call_interpreted(self, *args, **kwargs):
        fn = self.__dict__.get("_hf_recurrent_interpreted")
        if fn is None:
            fn = self._hf_recurrent_interpreted = interpreter.InterpretedFunction(self.fn)
        return fn(*args, **kwargs)

    JITFunction.__call__ = call_interpreted

    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interpreter._patch_lang_tensor = patch_lang_tensor


if os.environ.get("TRITON_INTERPRET") == "1":
    _patch_triton_interpreter()

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
