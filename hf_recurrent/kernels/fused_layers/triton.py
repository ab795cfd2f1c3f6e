"""Triton forward kernels of the fused layers: one program per row of ``D`` elements (``D`` up to 16384 here).

``_rms_norm_kernel`` optionally adds a residual first (writing the sum back as the new residual stream) and
optionally multiplies by ``silu(gate)``; ``_swiglu_kernel`` is ``silu(a) * b`` over flat blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import cuda_properties
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


# Grouped matrix-vector products: up to six weights sharing one input, for few rows (decode). Each program
# streams BN rows of one weight once and multiplies them with all input rows, padded to 16 for one tensor-core
# product. The launch settings are module knobs read at call time; None picks them per call by the rule of
# _launch_settings, fitted to benchmarks/sweep_gemv.py's timings of the GLA 1.3B decode step's projection groups,
# each called 24 times on distinct weights inside a CUDA graph as in a real step (H200, bf16, batch 1;
# results/sweep_gemv_graph_gla_NVIDIA_H200.json): 32-row blocks with a 256-column tile where they give at least
# one program per multiprocessor, else 16-row blocks with a 512-column tile, 4 stages: 9.6 / 5.8 / 13.5 / 10.0 us
# for q-k-v-g (24 MB), o (8 MB), gate-up (46 MB) and down (23 MB), against one fixed setting's best 11.0 / 5.7 /
# 16.2 / 11.0 and cuBLAS's 40.7 / 5.7 / 16.0 / 10.3.
GEMV_BLOCK_N: int | None = None  # weight rows per program
GEMV_BLOCK_K: int | None = None  # reduction tile, counted in 16-bit elements (float32 takes half: the same bytes)
GEMV_WARPS = 4
GEMV_STAGES = 4  # fewer where the GPU's shared memory per block is smaller
GEMV_MIN_PROGRAMS = 64
"""On a GPU, projections that give fewer programs than this (16-row blocks) run on cuBLAS, which splits the
reduction of a narrow output (Mamba's x_proj: 160 rows of 4096 columns; measured on the H200, batch 1: Mamba 1.4B
334 tok/s on our kernel, 382 with it on cuBLAS)."""
GEMV_MAX_ROWS = 16
GEMV_MAX_WEIGHTS = 6


@triton.jit
def _gemv_tile(x, w, y, r, M, N, K, first_row,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
               HAS_RESIDUAL: tl.constexpr, PDL: tl.constexpr):
    """``y[:, rows] = x @ w[rows].T`` (``+ r[:, rows]``) for ``BN`` rows from ``first_row``."""
    o_m = tl.arange(0, BM)
    o_n = first_row + tl.arange(0, BN)
    m_m, m_n = o_m < M, o_n < N
    wait_for_predecessor(PDL)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        xt = tl.load(x + o_m[:, None] * K + o_k[None, :], mask=m_m[:, None] & m_k[None, :], other=0.0)
        wt = tl.load(w + o_n[:, None].to(tl.int64) * K + o_k[None, :], mask=m_n[:, None] & m_k[None, :], other=0.0,
                     eviction_policy="evict_first")  # read once
        acc += tl.dot(xt, tl.trans(wt), input_precision=PRECISION)
    out = acc.to(x.dtype.element_ty)  # rounded as F.linear's output is
    m_y = m_m[:, None] & m_n[None, :]
    if HAS_RESIDUAL:
        out = out.to(tl.float32) + tl.load(r + o_m[:, None] * N + o_n[None, :], mask=m_y, other=0.0).to(tl.float32)
    tl.store(y + o_m[:, None] * N + o_n[None, :], out.to(y.dtype.element_ty), mask=m_y)


@triton.jit
def _gemv_group_kernel(
    x, w0, w1, w2, w3, w4, w5, y0, y1, y2, y3, y4, y5, r, N0, N1, N2, N3, N4, N5, e0, e1, e2, e3, e4, M, K,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    PDL: tl.constexpr,
):
    """Programs ``[0, e0)`` serve weight 0, ``[e0, e1)`` weight 1, and so on (cumulative block counts); the residual
    ``r`` (``HAS_RESIDUAL``, a single weight) is added to weight 0's product."""
    pid = tl.program_id(0)
    if pid < e0:
        _gemv_tile(x, w0, y0, r, M, N0, K, pid * BN, BM, BN, BK, PRECISION, HAS_RESIDUAL, PDL)
    elif pid < e1:
        _gemv_tile(x, w1, y1, r, M, N1, K, (pid - e0) * BN, BM, BN, BK, PRECISION, False, PDL)
    elif pid < e2:
        _gemv_tile(x, w2, y2, r, M, N2, K, (pid - e1) * BN, BM, BN, BK, PRECISION, False, PDL)
    elif pid < e3:
        _gemv_tile(x, w3, y3, r, M, N3, K, (pid - e2) * BN, BM, BN, BK, PRECISION, False, PDL)
    elif pid < e4:
        _gemv_tile(x, w4, y4, r, M, N4, K, (pid - e3) * BN, BM, BN, BK, PRECISION, False, PDL)
    else:
        _gemv_tile(x, w5, y5, r, M, N5, K, (pid - e4) * BN, BM, BN, BK, PRECISION, False, PDL)


def _launch_settings(x: torch.Tensor, rows: list[int]) -> tuple[int, int, int]:
    """``(BN, BK, stages)`` for weights with these row counts (see the note above ``GEMV_BLOCK_N``)."""
    sms = cuda_properties(x.device).multi_processor_count if x.is_cuda else 132
    bn = GEMV_BLOCK_N or (32 if sum(triton.cdiv(n, 32) for n in rows) >= sms else 16)
    bk = (GEMV_BLOCK_K or (256 if bn >= 32 else 512)) * 2 // x.element_size()
    stages = GEMV_STAGES
    if x.is_cuda:  # a stage holds a [BN, BK] weight tile and a [16, BK] input tile; Triton 3.6 allocates 1.5x
        # that per stage on Hopper (measured: 288 KiB for 32 rows, 512 columns, 4 stages)
        stage_bytes = 3 * (bn + 16) * bk * x.element_size() // 2
        stages = max(1, min(stages, (cuda_properties(x.device).shared_memory_per_block_optin - 4096) // stage_bytes))
    return bn, bk, stages


def takes(x: torch.Tensor, weights: list[torch.Tensor]) -> bool:
    """Whether these products belong on this kernel: decode-sized ``x`` (at most ``GEMV_MAX_ROWS`` rows, 16 columns)
    and, on a GPU, outputs wide enough to keep it busy (``GEMV_MIN_PROGRAMS``)."""
    rows, K = x.numel() // x.shape[-1], x.shape[-1]
    if not (0 < rows <= GEMV_MAX_ROWS and K >= 16):
        return False
    return not x.is_cuda or sum(triton.cdiv(w.shape[0], 16) for w in weights) >= GEMV_MIN_PROGRAMS


def linear_group(x: torch.Tensor, weights: list[torch.Tensor], residual: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``[x @ w.T for w in weights]`` for ``x`` ``[M, K]`` with ``M <= GEMV_MAX_ROWS``, weights ``[N_i, K]``; with
    ``residual`` ``[M, N]`` (one weight only), ``[residual + x @ w.T]`` in ``torch.result_type(residual, x)``.

    float32 inputs multiply in full float32 (``ieee``), as ``F.linear`` does by default, not in TF32.
    """
    M, K = x.shape
    x = x.contiguous()
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    launch = pdl_options(x.device)  # whatever the grid: decode-sized products measured faster with it at any width
    if residual is not None:
        residual = residual.contiguous()
    outs = []
    for start in range(0, len(weights), GEMV_MAX_WEIGHTS):
        group = [w.contiguous() for w in weights[start:start + GEMV_MAX_WEIGHTS]]
        out_dtype = x.dtype if residual is None else torch.result_type(residual, x)
        ys = [torch.empty(M, w.shape[0], dtype=out_dtype, device=x.device) for w in group]
        bn, bk, stages = _launch_settings(x, [w.shape[0] for w in group])
        ends = [0]
        for w in group:
            ends.append(ends[-1] + triton.cdiv(w.shape[0], bn))
        pad = GEMV_MAX_WEIGHTS - len(group)
        _gemv_group_kernel[(ends[-1],)](
            x, *group, *[group[0]] * pad, *ys, *[ys[0]] * pad, residual, *[w.shape[0] for w in group], *[0] * pad,
            *(ends[1:] + [ends[-1]] * pad)[: GEMV_MAX_WEIGHTS - 1], M, K,
            BM=16, BN=bn, BK=min(bk, triton.next_power_of_2(K)), PRECISION=precision,
            HAS_RESIDUAL=residual is not None, num_warps=GEMV_WARPS, num_stages=stages, **launch,
        )
        outs += ys
    return outs
