"""PyTorch reference of the causal depthwise conv1d with a carried tail (see the package docstring for the maths)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    return F.silu(y) if activation is not None else y


def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tail: torch.Tensor, activation: str | None
) -> torch.Tensor:
    """``y`` ``[B, T, D]`` for ``x`` ``[B, T, D]`` preceded by ``tail`` ``[B, D, W-1]``; differentiable by autograd."""
    D = x.shape[-1]
    xt = torch.cat([tail.to(x.dtype), x.transpose(1, 2)], dim=-1)  # [B, D, W-1+T]
    y = F.conv1d(xt, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype), groups=D)
    return _activate(y, activation).transpose(1, 2)


def causal_conv1d_step(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tail: torch.Tensor, activation: str | None
) -> torch.Tensor:
    """One token ``x`` ``[B, D]``: ``y`` ``[B, D]``; ``tail`` ``[B, D, W-1]`` is shifted in place to end with ``x``."""
    window = torch.cat([tail, x.unsqueeze(-1).to(tail.dtype)], dim=-1)  # [B, D, W]
    y = (window.float() * weight.float()).sum(-1)
    if bias is not None:
        y = y + bias.float()
    tail.copy_(window[..., 1:])
    return _activate(y, activation).to(x.dtype)
