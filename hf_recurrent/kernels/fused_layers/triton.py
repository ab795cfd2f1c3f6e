"""Triton forward kernels of the fused layers: one program per row of ``D`` elements (``D`` up to 16384 here).

``_rms_norm_kernel`` optionally adds a residual first (writing the sum back as the new residual stream) and
optionally multiplies by ``silu(gate)``; ``_swiglu_kernel`` is ``silu(a) * b`` over flat blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_D = 16384
SWIGLU_BLOCK = 1024


@triton.jit
def _rms_norm_kernel(
    x, residual, sum_out, weight, gate, y, D, eps,
    HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_GATE: tl.constexpr, BD: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    o = tl.arange(0, BD)
    m = o < D
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
def _swiglu_kernel(a, b, y, n, BLOCK: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
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
            BD=bd, num_warps=min(16, max(1, bd // 256)),
        )
    return total, y


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.contiguous(), b.contiguous()
    y = torch.empty_like(a)
    n = a.numel()
    if n:
        _swiglu_kernel[(triton.cdiv(n, SWIGLU_BLOCK),)](a, b, y, n, BLOCK=SWIGLU_BLOCK)
    return y


# Grouped matrix-vector products: up to six weights sharing one input, for few rows (decode). Each program
# streams BN rows of one weight once and multiplies them with all input rows, padded to 16 for one tensor-core
# product. Measured on an H200 (benchmarks/profile_decode.py, GLA 1.3B at batch 1): these fixed tiles stream the
# grouped projections at 2.3 TB/s, where cuBLAS ran the same projections one by one at 1.0 TB/s; a register
# multiply-and-sum path for a single row and autotuned tiles were slower (the step took 2.3 ms instead of 1.7).
# The launch settings are module knobs read at call time (benchmarks/sweep_gemv.py times alternatives).
GEMV_BLOCK_K = 256
# Launch settings: the best of 36 timed by benchmarks/sweep_gemv.py on the GLA 1.3B decode step's projection groups
# (H200, bf16, batch 1): 1.71 ms a step for all of them, against 1.81 ms with 16/32-row blocks and 4 stages
# (results/sweep_gemv_gla_NVIDIA_H200.json); the CUDA-graph step went from 1.74 to 1.64 ms.
GEMV_BLOCK_N: int | None = 64  # weight rows per program; None: 32, or 16 below GEMV_MIN_PROGRAMS 32-row blocks
GEMV_WARPS = 4
GEMV_STAGES = 3
GEMV_MAX_ROWS = 16
GEMV_MAX_WEIGHTS = 6
GEMV_MIN_PROGRAMS = 256  # below this many 32-row blocks, 16-row blocks keep more programs streaming


@triton.jit
def _gemv_tile(x, w, y, M, N, K, first_row,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
    o_m = tl.arange(0, BM)
    o_n = first_row + tl.arange(0, BN)
    m_m, m_n = o_m < M, o_n < N
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        xt = tl.load(x + o_m[:, None] * K + o_k[None, :], mask=m_m[:, None] & m_k[None, :], other=0.0)
        wt = tl.load(w + o_n[:, None].to(tl.int64) * K + o_k[None, :], mask=m_n[:, None] & m_k[None, :], other=0.0)
        acc += tl.dot(xt, tl.trans(wt), input_precision=PRECISION)
    tl.store(y + o_m[:, None] * N + o_n[None, :], acc.to(y.dtype.element_ty), mask=m_m[:, None] & m_n[None, :])


@triton.jit
def _gemv_group_kernel(
    x, w0, w1, w2, w3, w4, w5, y0, y1, y2, y3, y4, y5, N0, N1, N2, N3, N4, N5, e0, e1, e2, e3, e4, M, K,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
):
    """Programs ``[0, e0)`` serve weight 0, ``[e0, e1)`` weight 1, and so on (cumulative block counts)."""
    pid = tl.program_id(0)
    if pid < e0:
        _gemv_tile(x, w0, y0, M, N0, K, pid * BN, BM, BN, BK, PRECISION)
    elif pid < e1:
        _gemv_tile(x, w1, y1, M, N1, K, (pid - e0) * BN, BM, BN, BK, PRECISION)
    elif pid < e2:
        _gemv_tile(x, w2, y2, M, N2, K, (pid - e1) * BN, BM, BN, BK, PRECISION)
    elif pid < e3:
        _gemv_tile(x, w3, y3, M, N3, K, (pid - e2) * BN, BM, BN, BK, PRECISION)
    elif pid < e4:
        _gemv_tile(x, w4, y4, M, N4, K, (pid - e3) * BN, BM, BN, BK, PRECISION)
    else:
        _gemv_tile(x, w5, y5, M, N5, K, (pid - e4) * BN, BM, BN, BK, PRECISION)


def linear_group(x: torch.Tensor, weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[x @ w.T for w in weights]`` for ``x`` ``[M, K]`` with ``M <= GEMV_MAX_ROWS``, weights ``[N_i, K]``.

    float32 inputs multiply in full float32 (``ieee``), as ``F.linear`` does by default, not in TF32.
    """
    M, K = x.shape
    x = x.contiguous()
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    # GEMV_BLOCK_K counts 16-bit elements: float32 tiles take half as many, the same bytes of shared memory (with
    # 64 rows, 3 stages and 256 float32 columns a launch needs 320 KiB, over the H200's 227)
    bk = GEMV_BLOCK_K * 2 // x.element_size()
    outs = []
    for start in range(0, len(weights), GEMV_MAX_WEIGHTS):
        group = [w.contiguous() for w in weights[start:start + GEMV_MAX_WEIGHTS]]
        ys = [torch.empty(M, w.shape[0], dtype=x.dtype, device=x.device) for w in group]
        bn = GEMV_BLOCK_N or (32 if sum(triton.cdiv(w.shape[0], 32) for w in group) >= GEMV_MIN_PROGRAMS else 16)
        ends = [0]
        for w in group:
            ends.append(ends[-1] + triton.cdiv(w.shape[0], bn))
        pad = GEMV_MAX_WEIGHTS - len(group)
        _gemv_group_kernel[(ends[-1],)](
            x, *group, *[group[0]] * pad, *ys, *[ys[0]] * pad, *[w.shape[0] for w in group], *[0] * pad,
            *(ends[1:] + [ends[-1]] * pad)[: GEMV_MAX_WEIGHTS - 1], M, K,
            BM=16, BN=bn, BK=min(bk, triton.next_power_of_2(K)), PRECISION=precision,
            num_warps=GEMV_WARPS, num_stages=GEMV_STAGES,
        )
        outs += ys
    return outs
