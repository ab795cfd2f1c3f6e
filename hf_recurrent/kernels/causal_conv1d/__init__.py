r"""Causal depthwise conv1d with a carried tail (the "short convolution" of GLA, Mamba, Mamba-2, ...).

For channel ``d`` with kernel ``w[d, 0..W-1]`` (the layout of ``nn.Conv1d(D, D, W, groups=D).weight[:, 0]``):

.. math::

    y_t[d] = b[d] + \sum_{i=0}^{W-1} w[d, i]\, x_{t-W+1+i}[d],

where ``x`` before the first token comes from ``tail`` (the last ``W - 1`` inputs of the previous call) or zeros.
An optional SiLU follows.

Shapes: ``x`` ``[B, T, D]``; ``weight`` ``[D, W]``; ``bias`` ``[D]`` or None; ``tail`` ``[B, D, W - 1]`` or None.
Returns ``y`` ``[B, T, D]`` and the new tail ``[B, D, W - 1]`` (the last ``W - 1`` inputs, older tail included
when ``T < W - 1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d"]


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    tail: torch.Tensor | None = None,
    activation: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution over time; see the module docstring."""
    B, T, D = x.shape
    if weight.dim() != 2 or weight.shape[0] != D:
        raise ValueError(f"weight must be [D, W] with D={D}; got {tuple(weight.shape)}")
    W = weight.shape[1]
    if tail is None:
        tail = x.new_zeros(B, D, W - 1)
    elif tail.shape != (B, D, W - 1):
        raise ValueError(f"tail must be [B, D, W-1] = {(B, D, W - 1)}; got {tuple(tail.shape)}")
    xt = torch.cat([tail.to(x.dtype), x.transpose(1, 2)], dim=-1)  # [B, D, W-1+T]
    y = F.conv1d(xt, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype), groups=D)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    elif activation is not None:
        raise ValueError(f"unsupported activation {activation!r}: expected 'silu' or None")
    return y.transpose(1, 2), xt[:, :, xt.shape[-1] - (W - 1) :]
