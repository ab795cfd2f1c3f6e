"""Triton forward kernels of the fused layers (the matrix-vector products are in :mod:`.triton_gemv`): one program
per row of ``D`` elements (``D`` up to 16384 here).

``_rms_norm_kernel`` optionally adds a residual first (writing the sum back as the new residual stream) and
optionally multiplies by ``silu(gate)``; ``_swiglu_kernel`` is ``silu(a) * b`` over flat blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..triton_launch import pdl_options, wait_for_predecessor

MAX_D = 16384
SWIGLU_BLOCK = 1024


@triton.jit
def _rms_norm_kernel(
    x, residual, sum_out, weight, gate, y, D, eps,
    HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_GATE: tl.constexpr, BD: tl.constexpr,
    PDL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    o = tl.arange(0, BD)
    m = o < D
    wait_for_predecessor(PDL)
    v = tl.load(x + row * D + o, mask=m, other=0.0)
    if HAS_RESIDUAL:
        s = (tl.load(residual + row * D + o, mask=m, other=0.0).to(tl.float32) + v.to(tl.float32))
        s = s.to(sum_out.dtype.element_ty)
        tl.store(sum_out + row * D + o, s, mask=m)
        v = s.to(y.dtype.element_ty)
    v = v.to(tl.float32)
    out = v * tl.rsqrt(tl.sum(v * v, axis=0) / D + eps)
    if HAS_WEIGHT:
        out *= tl.load(weight + o, mask=m, other=0.0).to(tl.float32)
    if HAS_GATE:
        z = tl.load(gate + row * D + o, mask=m, other=0.0).to(tl.float32)
        out *= z * tl.sigmoid(z)
    tl.store(y + row * D + o, out.to(y.dtype.element_ty), mask=m)


@triton.jit
def _swiglu_kernel(a, b, y, n, BLOCK: tl.constexpr, PDL: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    wait_for_predecessor(PDL)
    va = tl.load(a + o, mask=m, other=0.0).to(tl.float32)
    vb = tl.load(b + o, mask=m, other=0.0).to(tl.float32)
    silu = (va * tl.sigmoid(va)).to(y.dtype.element_ty).to(tl.float32)  # rounded as torch's F.silu(a) is
    tl.store(y + o, (silu * vb).to(y.dtype.element_ty), mask=m)


def rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor | None,
    gate: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    D = x.shape[-1]
    if D > MAX_D:
        raise ValueError(f"the Triton RMSNorm takes rows of at most {MAX_D} elements; got {D}")
    x = x.contiguous()
    y = torch.empty_like(x)
    total = None
    if residual is not None:
        total = torch.empty(x.shape, dtype=torch.result_type(residual, x), device=x.device)
        residual = residual.contiguous()
    rows = x.numel() // D if D else 0
    if rows:
        bd = triton.next_power_of_2(D)
        _rms_norm_kernel[(rows,)](
            x, residual, total, weight, None if gate is None else gate.contiguous(), y, D, eps,
            HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None, HAS_GATE=gate is not None,
            BD=bd, num_warps=min(16, max(1, bd // 256)), **pdl_options(x.device, rows),
        )
    return total, y


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.contiguous(), b.contiguous()
    y = torch.empty_like(a)
    n = a.numel()
    if n:
        grid = triton.cdiv(n, SWIGLU_BLOCK)
        _swiglu_kernel[(grid,)](a, b, y, n, BLOCK=SWIGLU_BLOCK, **pdl_options(a.device, grid))
    return y


@triton.jit
def log_sigmoid_gate(z, normalizer, clamp_min, HAS_CLAMP: tl.constexpr):
    """``max(logsigmoid(z) / normalizer, clamp_min)`` in float32, accurate in both tails."""
    t = tl.exp(-tl.abs(z))
    u = 1.0 + t
    # log1p(t) to a few ulps (Goldberg's correction of log(1 + t); the denominator kept nonzero where unused)
    log1p_t = tl.where(u == 1.0, t, tl.log(u) * t / tl.where(u == 1.0, 1.0, u - 1.0))
    out = (tl.minimum(z, 0.0) - log1p_t) / normalizer
    if HAS_CLAMP:
        out = tl.maximum(out, clamp_min)
    return out


@triton.jit
def _low_rank_log_gate_kernel(
    x, w, b, g, D, R, normalizer, clamp_min,
    HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, BD: tl.constexpr, BR: tl.constexpr, PDL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    o_d = tl.program_id(1) * BD + tl.arange(0, BD)
    o_r = tl.arange(0, BR)
    m_d, m_r = o_d < D, o_r < R
    wt = tl.load(w + o_d[:, None] * R + o_r[None, :], mask=m_d[:, None] & m_r[None, :], other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(b + o_d, mask=m_d, other=0.0).to(tl.float32)
    wait_for_predecessor(PDL)
    xr = tl.load(x + row * R + o_r, mask=m_r, other=0.0).to(tl.float32)
    z = tl.sum(wt * xr[None, :], axis=1)
    if HAS_BIAS:
        z += bias
    z = z.to(x.dtype.element_ty).to(tl.float32)  # rounded as the projection's output is
    tl.store(g + row * D + o_d, log_sigmoid_gate(z, normalizer, clamp_min, HAS_CLAMP), mask=m_d)


def low_rank_log_gate(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, normalizer: float, clamp_min: float | None
) -> torch.Tensor:
    R = x.shape[-1]
    D = weight.shape[0]
    x = x.contiguous()
    rows = x.numel() // R
    g = torch.empty(*x.shape[:-1], D, dtype=torch.float32, device=x.device)
    if rows:
        bd = min(triton.next_power_of_2(D), 256)
        _low_rank_log_gate_kernel[(rows, triton.cdiv(D, bd))](
            x, weight.contiguous(), bias, g, D, R, float(normalizer), 0.0 if clamp_min is None else float(clamp_min),
            HAS_BIAS=bias is not None, HAS_CLAMP=clamp_min is not None, BD=bd, BR=triton.next_power_of_2(R),
            **pdl_options(x.device, rows * triton.cdiv(D, bd)),
        )
    return g
