"""Programmatic dependent launch (Hopper and later) for the kernels of a decode step.

A decode step at batch 1 is a chain of small kernels, each streaming its weights from memory. Between two of them
the memory would idle while one grid drains and the next one launches and ramps up (measured on an H200: 3-4 us of
a 6-14 us matrix-vector product). Launched with ``launch_pdl=True``, a kernel may start while its predecessor in the
stream still runs. Every kernel that opts in follows one protocol:

1. before :func:`wait_for_predecessor` it only *reads* what no earlier kernel of the step writes (weights, a
   recurrent state that only this kernel updates); it writes nothing;
2. every program calls :func:`wait_for_predecessor`: it blocks until the previous kernel has completed and its
   writes are visible, then lets the next kernel launch. As every program waits, a kernel's completion implies its
   predecessors'; kernels launched without the attribute (PyTorch's, cuBLAS) are ordered as usual.

With ``PDL`` false (CPU interpreter, GPUs before Hopper, Triton without the feature, the knob off) the kernels are
the plain ones.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from .backend import cuda_properties, triton_interpreting

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
    from triton.backends.nvidia.compiler import CUDAOptions

    _SUPPORTED = "launch_pdl" in CUDAOptions.__dataclass_fields__
except ImportError:  # Triton before 3.4 (3.2 has neither): the kernels launch as usual
    _SUPPORTED = False

    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass

DEPENDENT_LAUNCH = True
"""Knob: launch the decode-step kernels with programmatic dependent launch where the GPU supports it."""


DEPENDENT_LAUNCH_MAX_WAVES = 2
"""Grids of more programs than this many per multiprocessor launch as usual: an early start only helps a grid that
fits the GPU at once (a decode step at small batch); larger ones measured slower with it (H200, GLA at batch 64)."""


def dependent_launch(device: torch.device, programs: int = 1) -> bool:
    """Whether a grid of ``programs`` on ``device`` uses programmatic dependent launch (CUDA, compute capability 9.0
    or later, at most ``DEPENDENT_LAUNCH_MAX_WAVES`` programs per multiprocessor)."""
    if not (DEPENDENT_LAUNCH and _SUPPORTED) or device.type != "cuda" or triton_interpreting():
        return False
    properties = cuda_properties(device)
    return properties.major >= 9 and programs <= DEPENDENT_LAUNCH_MAX_WAVES * properties.multi_processor_count


def pdl_options(device: torch.device, programs: int = 1) -> dict:
    """A launch's keyword arguments for it: the kernel's ``PDL`` constexpr and, when on, Triton's ``launch_pdl``."""
    return {"PDL": True, "launch_pdl": True} if dependent_launch(device, programs) else {"PDL": False}


@triton.jit
def wait_for_predecessor(PDL: tl.constexpr):
    """Wait until the previous kernel in the stream has finished, then let the next one launch (no-op without PDL)."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
