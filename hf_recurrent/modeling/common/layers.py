"""Building blocks shared by the architectures: norms, the gated MLP and the short convolution."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...kernels.causal_conv1d import causal_conv1d
from ...kernels.linear_attention import LowRankLogDecay
from ...kernels.fused_layers import add_rms_norm, linear_group, linear_residual, low_rank_log_gate, rms_norm, swiglu
from ...kernels.fused_layers.reference import log_sigmoid_gate


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x^2) + eps) * weight``, computed in float32 and returned in the input dtype.

    ``norm(x, residual=r)`` first adds the residual stream and returns ``(r + x, norm(r + x))`` from one fused
    kernel (see :mod:`hf_recurrent.kernels.fused_layers` for the rounding, identical to the unfused code).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size)) if elementwise_affine else None

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if residual is not None:
            return add_rms_norm(x, residual, self.weight, self.eps)
        return rms_norm(x, self.weight, self.eps)


class GatedRMSNorm(RMSNorm):
    """``y = RMSNorm(x) * silu(gate)`` (norm first, then the swish output gate), in float32."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return rms_norm(x, self.weight, self.eps, gate)


FUSED_PROJECTIONS_MIN = 1
"""``project`` fuses groups of at least this many layers (1: every projection; benchmarks/profile_decode.py times
1, 2 and never). With programmatic dependent launch a single projection too is faster on our kernel than on
cuBLAS, which waits for the previous kernel to finish before it starts streaming its weights."""


def exactly(module: nn.Module, cls: type[nn.Module]) -> bool:
    """Whether ``module`` is exactly ``cls`` (no subclass, no hooks), so that a fused path may stand in for calling
    it: anything else (an adapter or a quantised layer wrapped around it, a hook) is called as a module."""
    return type(module) is cls and not module._forward_hooks and not module._forward_pre_hooks


def _plain(*linears: nn.Module, bias: bool = False) -> bool:
    """Whether these are plain ``nn.Linear`` layers (:func:`exactly`), with a bias when ``bias``, else without."""
    return all(exactly(m, nn.Linear) and (m.bias is not None) == bias for m in linears)


def project(x: torch.Tensor, *linears: nn.Linear) -> list[torch.Tensor]:
    """``[linear(x) for linear in linears]``; plain bias-free ``nn.Linear`` layers go through one fused launch for
    decode-sized inputs (:func:`~hf_recurrent.kernels.fused_layers.linear_group`)."""
    if _plain(*linears) and len(linears) >= FUSED_PROJECTIONS_MIN:
        return linear_group(x, [m.weight for m in linears])
    return [m(x) for m in linears]


def project_add(x: torch.Tensor, linear: nn.Linear, residual: torch.Tensor) -> torch.Tensor:
    """``residual + linear(x)``, the add fused into the projection for a plain bias-free ``nn.Linear``."""
    if _plain(linear):
        return linear_residual(x, linear.weight, residual)
    return residual + linear(x)


def log_gate(
    x: torch.Tensor, linear: nn.Linear, normalizer: float, clamp_min: float | None, lazy: bool = False
) -> torch.Tensor | LowRankLogDecay:
    """``max(logsigmoid(linear(x)) / normalizer, clamp_min)`` in float32 (GLA's log decay from its low-rank gate),
    in one launch for a plain ``nn.Linear`` (:func:`~hf_recurrent.kernels.fused_layers.low_rank_log_gate`); with
    ``lazy``, as a :class:`~hf_recurrent.kernels.linear_attention.LowRankLogDecay` for the linear-attention op to
    evaluate where it uses it (inside the decode step's kernel)."""
    if _plain(linear, bias=linear.bias is not None):
        if lazy:
            return LowRankLogDecay(x, linear.weight, linear.bias, normalizer, clamp_min)
        return low_rank_log_gate(x, linear.weight, linear.bias, normalizer, clamp_min)
    return log_sigmoid_gate(linear(x), normalizer, clamp_min)


def add_gated_output(mixer: nn.Module, config) -> None:
    """Give a multi-head mixer its output end, under the published names: ``g_proj`` (None without an output gate),
    ``g_norm`` (per-head RMSNorm over ``value_dim / num_heads``) and ``o_proj``; ``config`` is a MultiHeadConfig."""
    mixer.g_proj = nn.Linear(config.hidden_size, config.value_dim, bias=False) if config.use_output_gate else None
    norm_class = GatedRMSNorm if config.use_output_gate else RMSNorm
    mixer.g_norm = norm_class(config.value_dim // config.num_heads, eps=config.norm_eps,
                              elementwise_affine=config.elementwise_affine)
    mixer.o_proj = nn.Linear(config.value_dim, config.hidden_size, bias=False)


def gated_output(mixer: nn.Module, o: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """``o_proj(RMSNorm(o) * silu(gate))`` per head (``o_proj(RMSNorm(o))`` without the gate).

    ``o``: ``[B, T, H, Dv]``; ``gate``: ``g_proj`` of the mixer's input, ``[B, T, H * Dv]`` (projected together
    with the mixer's other inputs, see :func:`project`), or None without an output gate; returns ``[B, T, hidden]``.
    """
    B, T, H, V = o.shape
    o = mixer.g_norm(o, gate.view(B, T, H, V)) if gate is not None else mixer.g_norm(o)
    return project(o.reshape(B, T, -1), mixer.o_proj)[0]


class GatedMLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))`` (gate and up projected in one launch at decode)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``down(silu(gate(x)) * up(x))``, plus ``residual`` when given (added in the last projection's launch)."""
        hidden = swiglu(*project(x, self.gate_proj, self.up_proj))
        if residual is not None:
            return project_add(hidden, self.down_proj, residual)
        return project(hidden, self.down_proj)[0]


class ShortConvolution(nn.Module):
    """Depthwise causal conv1d with a carried tail; parameters laid out as ``nn.Conv1d(D, D, W, groups=D)``.

    ``forward(x [B, T, D], tail [B, D, W-1] | None) -> (y [B, T, D], new tail)``; see
    :mod:`hf_recurrent.kernels.causal_conv1d` for the maths.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = False, activation: str | None = "silu") -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return causal_conv1d(x, self.weight[:, 0], self.bias, tail, self.activation)


FEATURE_MAPS = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "swish": F.silu,
    "sqrelu": lambda x: F.relu(x).square(),
    "gelu": lambda x: F.gelu(x, approximate="tanh"),
}
"""Feature maps applied to queries and keys by name (the names flash-linear-attention's configs use)."""
