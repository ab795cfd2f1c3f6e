"""Triton matrix-vector products for decode: up to six weights sharing one input ``x`` ``[M, K]`` (``M`` <= 16 rows),
``y_i = x W_i^T`` (optionally ``+ r`` for a single weight), each weight streamed from memory once per call.

Two kernels, both following the dependent-launch protocol of :mod:`hf_recurrent.kernels.triton_launch`:

- :func:`_gemv_row_kernel`, for one input row (batch-1 decode, the bandwidth-bound case): a fixed grid of
  ``GEMV_ROW_PROGRAMS_PER_SM`` programs per multiprocessor, each taking an equal share (within one block) of all the
  weights' ``GEMV_ROW_BLOCK_N``-row blocks and reducing them tile by tile with CUDA-core FMAs, the next weight tile
  always in flight while one is reduced; the first tile is requested *before* the dependent-launch wait, so the
  weight stream starts while the previous kernel of the step is still finishing. Weights and outputs are addressed
  from the first one's pointer by element offsets, so that one flat loop runs over every weight's blocks.
- :func:`_gemv_group_kernel`, for several rows (or with ``GEMV_ROW_KERNEL`` off): one program per ``BN`` rows of
  one weight, the input rows padded to 16 for one tensor-core product per tile, pipelined by Triton.

Measured on the GLA 1.3B decode step's projection groups (``benchmarks/sweep_gemv.py``: each group called 24 times
on distinct weights in one CUDA graph, bf16, batch 1), per call for q-k-v-g (25 MB) / o (8 MB) / gate-up (46 MB) /
down + residual (23 MB), us: H200 row kernel 8.19 / 3.78 / 14.32 / 8.50 against the group kernel's 10.31 / 5.03 /
15.44 / 9.51 in the same run (``results/sweep_gemv_row_gla_NVIDIA_H200.json``); H100 9.58 / 4.37 / 16.86 / 10.31
against 11.94 / 5.37 / 18.92 / 10.69 (``results/sweep_gemv_row_depth_gla_NVIDIA_H100_80GB_HBM3.json``). Without the
early first tile the same row kernel took 0.99 ms for the step's groups instead of 0.64 (H200). The whole decode
step: ``benchmarks/README.md``.
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from ..backend import cuda_properties
from ..triton_launch import pdl_options, wait_for_predecessor

# The group kernel (several rows). The launch settings are module knobs read at call time; None picks them per
# call by the rule of _launch_settings, fitted to benchmarks/sweep_gemv.py's timings of the GLA 1.3B decode step's
# projection groups,
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


GEMV_ROW_KERNEL = True
"""Knob: one-row inputs use the streaming row kernel (False: the group kernel for every input)."""
GEMV_ROW_BLOCK_N = 8  # weight rows per block
GEMV_ROW_BLOCK_K = 2048  # reduction tile, counted in 16-bit elements (float32 takes half: the same bytes)
GEMV_ROW_PROGRAMS_PER_SM = 2
GEMV_ROW_WARPS = 8
# (sweeps, same call: 4, 16 and 32 rows a block, 512-4096 columns, 1-4 programs a multiprocessor, 4 or 8 warps, and
# two tiles in flight instead of one were all slower on the H200 and the H100)


@triton.jit
def _pick(u, e0, e1, e2, e3, e4, v0, v1, v2, v3, v4, v5):
    """``v_i`` for the weight ``i`` whose blocks ``[e_{i-1}, e_i)`` (cumulative counts) hold block ``u``."""
    return tl.where(u < e0, v0, tl.where(u < e1, v1, tl.where(u < e2, v2, tl.where(u < e3, v3, tl.where(u < e4, v4, v5)))))


@triton.jit
def _row_tile(t, stop, KT, K, e0, e1, e2, e3, e4, N0, N1, N2, N3, N4, N5, dw1, dw2, dw3, dw4, dw5,
              dy1, dy2, dy3, dy4, dy5, BN: tl.constexpr, BK: tl.constexpr):
    """Tile ``t`` of the flat order (block ``t // KT``, reduction tile ``t % KT``): its rows, columns, masks (empty
    at or past ``stop``), the element offsets of its weight and output, and whether it ends its block."""
    u = t // KT
    kt = t - u * KT
    n = _pick(u, e0, e1, e2, e3, e4, N0, N1, N2, N3, N4, N5)
    o_n = (u - _pick(u, e0, e1, e2, e3, e4, 0, e0, e1, e2, e3, e4)) * BN + tl.arange(0, BN)
    o_k = kt * BK + tl.arange(0, BK)
    dw = _pick(u, e0, e1, e2, e3, e4, 0, dw1, dw2, dw3, dw4, dw5)
    dy = _pick(u, e0, e1, e2, e3, e4, 0, dy1, dy2, dy3, dy4, dy5)
    return o_n, o_k, o_n < tl.where(t < stop, n, 0), o_k < K, dw, dy, kt == KT - 1  # one comparison: a boolean mask


@triton.jit
def _row_load(w, t, stop, KT, K, e0, e1, e2, e3, e4, N0, N1, N2, N3, N4, N5, dw1, dw2, dw3, dw4, dw5,
              BN: tl.constexpr, BK: tl.constexpr):
    """Weight tile ``t`` (zeros where empty), streamed once."""
    o_n, o_k, m_n, m_k, dw, _, _ = _row_tile(t, stop, KT, K, e0, e1, e2, e3, e4, N0, N1, N2, N3, N4, N5,
                                             dw1, dw2, dw3, dw4, dw5, 0, 0, 0, 0, 0, BN, BK)
    return tl.load(w + dw + o_n[:, None].to(tl.int64) * K + o_k[None, :], mask=m_n[:, None] & m_k[None, :], other=0.0,
                   eviction_policy="evict_first")


@triton.jit
def _gemv_row_kernel(
    x, w, y, r, dw1, dw2, dw3, dw4, dw5, dy1, dy2, dy3, dy4, dy5, N0, N1, N2, N3, N4, N5, e0, e1, e2, e3, e4,
    K, blocks, programs, tiles, BN: tl.constexpr, BK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, PDL: tl.constexpr,
):
    """``y_i[rows] = w_i[rows] @ x`` (``+ r``) for program ``p``'s blocks ``[p * blocks // programs, (p + 1) * blocks
    // programs)``; every program runs ``tiles`` iterations (its share rounded up: a shorter share's last is empty)."""
    pid = tl.program_id(0)
    KT = tl.cdiv(K, BK)
    start = (pid * blocks // programs) * KT
    stop = ((pid + 1) * blocks // programs) * KT
    wt = _row_load(w, start, stop, KT, K, e0, e1, e2, e3, e4, N0, N1, N2, N3, N4, N5, dw1, dw2, dw3, dw4, dw5,
                   BN, BK)  # weights only: before the wait
    wait_for_predecessor(PDL)
    acc = tl.zeros([BN], dtype=tl.float32)
    for i in range(0, tiles):
        w_next = _row_load(w, start + i + 1, stop, KT, K, e0, e1, e2, e3, e4, N0, N1, N2, N3, N4, N5,
                           dw1, dw2, dw3, dw4, dw5, BN, BK)  # in flight while tile i is reduced
        o_n, o_k, m_n, m_k, _, dy, last = _row_tile(start + i, stop, KT, K, e0, e1, e2, e3, e4, N0, N1, N2, N3, N4,
                                                    N5, dw1, dw2, dw3, dw4, dw5, dy1, dy2, dy3, dy4, dy5, BN, BK)
        xt = tl.load(x + o_k, mask=m_k, other=0.0).to(tl.float32)
        acc += tl.sum(wt.to(tl.float32) * xt[None, :], axis=1)
        out = acc.to(x.dtype.element_ty)  # rounded as F.linear's output is
        m_out = tl.where(last, m_n, False)  # (not m_n & last: Triton 3.9's interpreter makes that an integer mask)
        if HAS_RESIDUAL:
            out = out.to(tl.float32) + tl.load(r + o_n, mask=m_out, other=0.0).to(tl.float32)
        tl.store(y + dy + o_n, out.to(y.dtype.element_ty), mask=m_out)
        acc = tl.where(last, 0.0, acc)
        wt = w_next


def _block_ends(group: list[torch.Tensor], bn: int) -> tuple[list[int], int]:
    """The kernels' ``e0 .. e4`` (cumulative ``bn``-row block counts of the weights, padded with the total) and the
    total number of blocks."""
    ends = list(itertools.accumulate(triton.cdiv(w.shape[0], bn) for w in group))
    return (ends + [ends[-1]] * GEMV_MAX_WEIGHTS)[: GEMV_MAX_WEIGHTS - 1], ends[-1]


def _launch_group(x: torch.Tensor, group: list[torch.Tensor], ys: list[torch.Tensor], residual: torch.Tensor | None,
                  launch: dict) -> None:
    M, K = x.shape
    bn, bk, stages = _launch_settings(x, [w.shape[0] for w in group])
    ends, blocks = _block_ends(group, bn)
    pad = GEMV_MAX_WEIGHTS - len(group)
    _gemv_group_kernel[(blocks,)](
        x, *group, *[group[0]] * pad, *ys, *[ys[0]] * pad, residual, *[w.shape[0] for w in group], *[0] * pad,
        *ends, M, K,
        BM=16, BN=bn, BK=min(bk, triton.next_power_of_2(K)), PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        HAS_RESIDUAL=residual is not None, num_warps=GEMV_WARPS, num_stages=stages, **launch,
    )


def _element_offsets(tensors: list[torch.Tensor]) -> list[int]:
    """Each tensor's start after the first's, in elements (same dtype: the difference is a whole number)."""
    size = tensors[0].element_size()
    return [(t.data_ptr() - tensors[0].data_ptr()) // size for t in tensors[1:]]


def _launch_row(x: torch.Tensor, group: list[torch.Tensor], ys: list[torch.Tensor], residual: torch.Tensor | None,
                launch: dict) -> None:
    K = x.shape[1]
    bn = GEMV_ROW_BLOCK_N
    bk = min(GEMV_ROW_BLOCK_K * 2 // x.element_size(), triton.next_power_of_2(K))
    ends, blocks = _block_ends(group, bn)
    pad = GEMV_MAX_WEIGHTS - len(group)
    sms = cuda_properties(x.device).multi_processor_count if x.is_cuda else 4
    programs = min(blocks, sms * GEMV_ROW_PROGRAMS_PER_SM)
    _gemv_row_kernel[(programs,)](
        x, group[0], ys[0], residual, *_element_offsets(group), *[0] * pad, *_element_offsets(ys), *[0] * pad,
        *[w.shape[0] for w in group], *[0] * pad, *ends,
        K, blocks, programs, triton.cdiv(blocks, programs) * triton.cdiv(K, bk),
        BN=bn, BK=bk, HAS_RESIDUAL=residual is not None, num_warps=GEMV_ROW_WARPS, num_stages=1, **launch,
    )


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

    float32 inputs multiply in full float32 (``ieee``), as ``F.linear`` does by default, not in TF32. One row goes
    to the row kernel (``GEMV_ROW_KERNEL``), several to the group kernel.
    """
    M = x.shape[0]
    x = x.contiguous()
    launch = pdl_options(x.device)  # whatever the grid: decode-sized products measured faster with it at any width
    if residual is not None:
        residual = residual.contiguous()
    outs = []
    for start in range(0, len(weights), GEMV_MAX_WEIGHTS):
        group = [w.contiguous() for w in weights[start:start + GEMV_MAX_WEIGHTS]]
        out_dtype = x.dtype if residual is None else torch.result_type(residual, x)
        ys = [torch.empty(M, w.shape[0], dtype=out_dtype, device=x.device) for w in group]
        (_launch_row if M == 1 and GEMV_ROW_KERNEL else _launch_group)(x, group, ys, residual, launch)
        outs += ys
    return outs
