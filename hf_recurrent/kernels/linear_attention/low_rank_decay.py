"""A per-key log decay given by its low-rank projection, as GLA computes it; the decode step evaluates it in-kernel."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..fused_layers import low_rank_log_gate


@dataclass(frozen=True)
class LowRankLogDecay:
    r"""``g = max(logsigmoid(x W^T + b) / normalizer, clamp_min)`` in float32, viewed as ``[..., H, K]``.

    ``x`` ``[B, T, R]`` (``[B, R]`` for one step), ``weight`` ``[H * K, R]`` in ``x``'s dtype, ``bias`` ``[H * K]``
    or None. :func:`~hf_recurrent.kernels.linear_attention.gated_linear_attention_step` on the Triton backend
    computes ``g`` inside the step kernel (a launch less per layer and token); everything else materialises it.
    """

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    normalizer: float
    clamp_min: float | None = None

    def materialize(self, heads: int) -> torch.Tensor:
        g = low_rank_log_gate(self.x, self.weight, self.bias, self.normalizer, self.clamp_min)
        return g.view(*g.shape[:-1], heads, -1)

    def at(self, t: int) -> LowRankLogDecay:
        """The decay of position ``t`` of a ``[B, T, R]`` input."""
        return LowRankLogDecay(self.x[:, t], self.weight, self.bias, self.normalizer, self.clamp_min)
