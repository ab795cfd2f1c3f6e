"""PyTorch definition of the element-wise linear scan ``h_t = exp(log_a_t) * h_{t-1} + b_t`` (float32 loop)."""

from __future__ import annotations

import torch


def linear_scan(
    log_a: torch.Tensor, b: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_a, b`` ``[B, T, H, D]``, ``state`` ``[B, H, D]`` float32 -> ``(h [B, T, H, D] in b's dtype, final)``."""
    a = log_a.float().exp()
    hs = []
    for t in range(b.shape[1]):
        state = a[:, t] * state + b[:, t].float()
        hs.append(state)
    return torch.stack(hs, dim=1).to(b.dtype), state
