r"""Causal depthwise conv1d with a carried tail (the "short convolution" of GLA, Mamba, Mamba-2, ...).

For channel ``d`` with kernel ``w[d, 0..W-1]`` (the layout of ``nn.Conv1d(D, D, W, groups=D).weight[:, 0]``):

.. math::

    y_t[d] = b[d] + \sum_{i=0}^{W-1} w[d, i]\, x_{t-W+1+i}[d],

where ``x`` before the first token comes from ``tail`` (the last ``W - 1`` inputs of the previous call) or zeros.
An optional SiLU follows.

Shapes: ``x`` ``[B, T, D]``; ``weight`` ``[D, W]``; ``bias`` ``[D]`` or None; ``tail`` ``[B, D, W - 1]`` or None.
Returns ``y`` ``[B, T, D]`` and the new tail ``[B, D, W - 1]`` (the last ``W - 1`` inputs, older tail included
when ``T < W - 1``). Forward and backward (also into ``tail``) on both backends; the Triton kernels take
``W`` from 2 to 4. :func:`causal_conv1d_step` is the one-token decode update with the tail shifted in place.
"""

from __future__ import annotations

import torch

from ..backend import resolve_backend
from . import reference

__all__ = ["causal_conv1d", "causal_conv1d_step"]

_ACTIVATIONS = (None, "silu", "swish")
MAX_TRITON_WIDTH = 4


def _check_common(D: int, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None) -> int:
    if weight.dim() != 2 or weight.shape[0] != D:
        raise ValueError(f"weight must be [D, W] with D={D}; got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (D,):
        raise ValueError(f"bias must be [D] = [{D}]; got {tuple(bias.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {activation!r}: expected 'silu' or None")
    return weight.shape[1]


def _backend(backend: str | None, x: torch.Tensor, W: int) -> str:
    chosen = resolve_backend(backend, x)
    if chosen == "triton" and W > MAX_TRITON_WIDTH:
        if backend == "triton":
            raise ValueError(f"the Triton causal conv1d takes kernel widths 2..{MAX_TRITON_WIDTH}; got {W}")
        return "reference"
    return chosen


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    tail: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution over time; see the module docstring."""
    B, T, D = x.shape
    W = _check_common(D, weight, bias, activation)
    if tail is None:
        tail = x.new_zeros(B, D, W - 1)
    elif tail.shape != (B, D, W - 1):
        raise ValueError(f"tail must be [B, D, W-1] = {(B, D, W - 1)}; got {tuple(tail.shape)}")
    if _backend(backend, x, W) == "triton":
        from . import triton as triton_impl

        y = triton_impl.causal_conv1d(x, weight, bias, tail, activation is not None)
    else:
        y = reference.causal_conv1d(x, weight, bias, tail, activation)
    new_tail = torch.cat([tail.to(x.dtype), x.transpose(1, 2)], dim=-1)[:, :, T:]
    return y, new_tail


def causal_conv1d_step(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    tail: torch.Tensor,
    activation: str | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """One decode step: ``x`` ``[B, D]`` -> ``y`` ``[B, D]``; ``tail`` ``[B, D, W-1]`` is updated in place (a fixed
    address, as CUDA graphs need) to hold the last ``W - 1`` inputs."""
    B, D = x.shape
    W = _check_common(D, weight, bias, activation)
    if tail.shape != (B, D, W - 1):
        raise ValueError(f"tail must be [B, D, W-1] = {(B, D, W - 1)}; got {tuple(tail.shape)}")
    if _backend(backend, x, W) == "triton":
        from . import triton as triton_impl

        return triton_impl.causal_conv1d_step(x, weight, bias, tail, activation is not None)
    return reference.causal_conv1d_step(x, weight, bias, tail, activation)
