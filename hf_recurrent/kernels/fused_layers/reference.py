"""PyTorch definitions of the fused layers (and the training path): see the package docstring for the maths."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    if gate is not None:
        y = y * F.silu(gate.float())
    return y.to(x.dtype)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    s = residual + x
    return s, rms_norm(s.to(x.dtype), weight, eps)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.silu(a) * b


def linear_group(x: torch.Tensor, weights: list[torch.Tensor]) -> list[torch.Tensor]:
    return [F.linear(x, w) for w in weights]


def linear_residual(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    return residual + F.linear(x, weight)


def log_sigmoid_gate(z: torch.Tensor, normalizer: float, clamp_min: float | None) -> torch.Tensor:
    """``max(logsigmoid(z) / normalizer, clamp_min)`` in float32."""
    g = F.logsigmoid(z.float()) / normalizer
    return g if clamp_min is None else g.clamp_min(clamp_min)


def low_rank_log_gate(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, normalizer: float, clamp_min: float | None
) -> torch.Tensor:
    return log_sigmoid_gate(F.linear(x, weight, bias), normalizer, clamp_min)
