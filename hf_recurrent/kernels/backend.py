"""Backend selection shared by every kernel family.

Each public op takes ``backend=None`` and resolves it here:

* ``HF_RECURRENT_BACKEND=reference|triton`` in the environment forces one backend for the whole process;
* otherwise Triton is used for CUDA tensors (when Triton imports) and the PyTorch reference everywhere else.

``TRITON_INTERPRET=1`` makes Triton kernels run on CPU tensors (NumPy interpreter); tests use it with
``backend="triton"`` to check the kernels without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from types import ModuleType

import torch

BACKENDS = ("reference", "triton")
_ENV_VAR = "HF_RECURRENT_BACKEND"


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether ``import triton`` works in this environment."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def cuda_properties(device: torch.device):
    """The CUDA device's properties (multiprocessor count, shared memory per block...), read once: launch shapes
    consult them on every call, decode steps included."""
    return torch.cuda.get_device_properties(device)


def triton_interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def autotuning() -> bool:
    """Whether autotuned kernels try several launch settings on their first call per shape (the default).

    ``HF_RECURRENT_AUTOTUNE=0`` keeps one setting per kernel: compiling then takes a fraction of the time, for runs
    where correctness matters and speed does not (the GPU test suite sets it). Read when a kernel module builds its
    launch settings, on its first import.
    """
    return os.environ.get("HF_RECURRENT_AUTOTUNE", "1") != "0"


@contextlib.contextmanager
def knobs(module: ModuleType, **values) -> Iterator[None]:
    """Set a kernel module's tuning knobs (module attributes its launches read at call time, e.g. ``GEMV_BLOCK_N``
    of ``fused_layers.triton_gemv``) for the duration of a ``with`` block, then restore them; an unknown name raises
    ``AttributeError`` instead of creating a knob nothing reads. Used by the benchmarks' sweeps and the tests."""
    saved = {name: getattr(module, name) for name in values}
    try:
        for name, value in values.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def resolve_backend(backend: str | None, tensor: torch.Tensor) -> str:
    """Return the backend to run for ``tensor``: the argument, else the environment variable, else by device."""
    if backend is None:
        backend = os.environ.get(_ENV_VAR) or None
    if backend is None:
        on_gpu = tensor.is_cuda and triton_available()
        return "triton" if on_gpu else "reference"
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}: expected one of {BACKENDS} (from argument or ${_ENV_VAR})")
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' was requested but Triton is not installed")
        if not tensor.is_cuda and not triton_interpreting():
            raise RuntimeError(
                "backend 'triton' needs CUDA tensors, or TRITON_INTERPRET=1 to run the kernels on the CPU (slowly)"
            )
    return backend


def num_sequences(cu_seqlens: torch.Tensor | None, batch: int, length: int) -> int:
    """How many sequences an op's inputs hold: ``batch``, or the packed ones ``cu_seqlens`` marks (then ``batch == 1``).

    Every family's packed-sequence contract: ``cu_seqlens`` is int ``[N + 1]``, 1-D offsets from 0 to ``length``.
    """
    if cu_seqlens is None:
        return batch
    if batch != 1:
        raise ValueError(f"packed sequences (cu_seqlens) need batch size 1; got {batch}")
    if cu_seqlens.dim() != 1 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != length:
        raise ValueError(f"cu_seqlens must be 1-D offsets from 0 to T={length}; got {cu_seqlens.tolist()}")
    return cu_seqlens.numel() - 1
