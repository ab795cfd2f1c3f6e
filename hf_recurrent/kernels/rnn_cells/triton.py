"""Triton kernels for the non-linear cells: the whole sequence in one launch, forward and backward.

Forward, three designs (:func:`_forward` picks):

* heads up to :data:`RESIDENT_MAX_D` (128 for 16-bit weights, 64 for float32), each one tile: the register-resident
  kernel of :mod:`.triton_resident` (recurrent weights loaded once, state carried in registers, gate inputs
  prefetched one step ahead);
* heads of 16-bit ``R`` split over programs (below) whose slice of ``R`` fits on the chip: the split-resident
  kernel of :mod:`.triton_split` (:data:`SPLIT_RESIDENT`: each program loads its columns of ``R`` once, carries its
  state in registers, prefetches the gate inputs, and exchanges ``y`` through memory with a grid barrier per step);
* otherwise (or with :data:`RESIDENT` / :data:`SPLIT_RESIDENT` off) the tiled kernel here. Grid: one program per
  (block of ``BB`` batch rows, head, share of the head's output columns). A program walks over time; at each step it
  forms the recurrent pre-activations ``y_{t-1} R_g`` with ``tl.dot`` over tiles of ``BK`` reduction rows by ``BN``
  output columns of the head's recurrent matrices (re-read from L1/L2 every step), applies the cell's point-wise
  update in float32 and writes the new state. The previous output ``y_{t-1}`` is read back from the state buffer
  written one step earlier (a ``debug_barrier`` separates the steps), so any head size works. On a GPU, a head wider
  than one tile is split over one program per ``BN`` (:data:`SPLIT_BLOCK_D`) output columns when the whole grid fits
  on the multiprocessors at once (FlashRNN's multi-block heads): those programs meet at a grid barrier (an atomic
  counter) after every step and exchange ``y`` through L2. Under the interpreter (programs run one after another)
  heads are never split.

Backward walks the sequence in reverse: phase 1 recomputes each step's gates from the stored state and
pre-activations and writes the gate gradients; phase 2 forms ``dy_{t-1} += sum_g dP_g R_g^T``. Two designs: where
the forward is split-resident, the split-resident backward of :mod:`.triton_split_backward` (each program's rows of
``R`` loaded once, ``dP`` exchanged in ``R``'s dtype, one grid barrier a step; 16-bit ``R`` on a GPU); otherwise the
tiled kernel here (``R`` and float32 ``dP`` tiles re-read every step). The weight gradients
``dR = sum_{b,t} y_{t-1}^T dP_t`` are one batched matmul in PyTorch afterwards.

Knobs, module attributes read at every call (the benchmark times the alternatives): :data:`RESIDENT`,
:data:`RESIDENT_MAX_D`, :data:`RESIDENT_NUM_WARPS`, :data:`SPLIT_BLOCK_D`, :data:`SPLIT_RESIDENT`,
:data:`SPLIT_RESIDENT_MAX_BYTES`, :data:`SPLIT_RESIDENT_NUM_WARPS`, :data:`SPLIT_RESIDENT_BACKWARD`,
:data:`SPLIT_RESIDENT_BACKWARD_NUM_WARPS`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..backend import cuda_properties, triton_interpreting
from .reference import CELLS
from .triton_common import (_CELL_IDS, _cell_grads, _cell_update, _gate_ptrs, _grid_barrier, _keep_state,
                            _load_gates, _load_state, _precision, _state_ptrs, _store_gates, _store_state)
from .triton_resident import resident_forward, resident_warps
from .triton_split import (split_resident_bytes, split_resident_forward, split_resident_key_block,
                           split_resident_warps)
from .triton_split_backward import split_resident_backward, split_resident_backward_warps

RESIDENT = True
"""Whether heads of one tile use the register-resident forward (False: the tiled forward for every head size)."""

RESIDENT_MAX_D = 128
"""Largest head (``D`` rounded up to a power of two) of 16-bit weights on the resident forward; for float32 weights
the largest whose ``R_g`` tile has as many bytes (64)."""

RESIDENT_NUM_WARPS: int | None = None
"""Warps per program of the resident forward; None: :func:`.triton_resident.resident_warps`."""

SPLIT_BLOCK_D = 16
"""Output columns per tile (16, 32 or 64) of heads wider than one tile of 64: the share of one program when such a
head is split (fewer columns: more programs, each holding or reading less of ``R`` per step). Measured on an H200
(bf16 LSTM, B 16, T 1024, ``benchmarks/bench_rnn.py``, session 7), forward / forward+backward ms: with the
split-resident kernels, 16 columns 2.22 / 8.50 at heads of 256 and 2.97 / 12.76 at 768, 32 columns 2.60 / 8.45 and
3.94 / 14.10; the tiled forward alone preferred 32 (4.49 vs 5.03 at 256). Widened where a split grid would not fit the GPU, and 64
for single steps (decode): see :func:`_launch_shape`."""

SPLIT_RESIDENT: bool | str = True
"""Whether split heads of 16-bit ``R`` run their forward on the split-resident kernel of :mod:`.triton_split` (each
program's slice of ``R`` loaded once, kept on the chip) rather than the tiled one, where the slice has at most
:data:`SPLIT_RESIDENT_MAX_BYTES`. Float32 ``R`` (IEEE FMA dots, twice the bytes) stays on the tiled kernel by
default: it compiles (no spills at 256/16, 256/32, 768/16) but is unmeasured. ``"always"`` (tests):
every head the resident forward does not take, any dtype, split or not (under the interpreter, or a grid too large
for the GPU), any slice size; a head of several column tiles that is not split then runs one launch per time step."""

SPLIT_RESIDENT_MAX_BYTES = 768 * 4 * 32 * 2
"""Largest ``R`` slice (``D`` x 4 gates x ``BN`` columns) a program of the split-resident forward holds by default:
that of a bf16 head of 768 in column tiles of 32 (192 KiB; Triton stages it in shared memory, which must also fit
the GPU's per-block limit)."""

SPLIT_RESIDENT_NUM_WARPS: int | None = None
"""Warps per program of the split-resident forward; None: :func:`.triton_split.split_resident_warps`."""

SPLIT_RESIDENT_BACKWARD = True
"""Whether the backward of a head whose forward :data:`SPLIT_RESIDENT` takes runs on the split-resident backward
of :mod:`.triton_split_backward` (each program's rows of ``R`` loaded once) rather than the tiled one."""

SPLIT_RESIDENT_BACKWARD_NUM_WARPS: int | None = None
"""Warps per program of the split-resident backward; None:
:func:`.triton_split_backward.split_resident_backward_warps`."""


@triton.jit
def _rnn_fwd_kernel(
    GX, R, RB, KEEP, S, Y, P, SYNC, B, T, H, D, SPAN,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    HAS_RB: tl.constexpr, HAS_KEEP: tl.constexpr, STORE_ALL: tl.constexpr, PREC: tl.constexpr,
    NSPLIT: tl.constexpr, CACHE: tl.constexpr,
):
    head = tl.program_id(1)
    rows = (tl.program_id(0) * BB + tl.arange(0, BB)).to(tl.int64)
    rmask = rows < B
    j_start = tl.program_id(2) * SPAN  # this program's share of the output columns
    j_end = tl.minimum(j_start + SPAN, D)
    for t in range(T):
        if STORE_ALL:  # keep every state for the backward pass
            src, dst = t, t + 1
        else:  # inference: two alternating slots
            src, dst = t % 2, (t + 1) % 2
        if HAS_KEEP:
            keep = tl.load(KEEP + rows * T + t, mask=rmask, other=1.0)[:, None] > 0.5
        for j0 in range(j_start, j_end, BN):
            cols = j0 + tl.arange(0, BN)
            m2 = rmask[:, None] & (cols < D)[None, :]
            x0, x1, x2, x3 = _load_gates(GX, rows, t, head, cols, m2, T, H, D, G)  # in flight during the dots
            a0 = tl.zeros([BB, BN], tl.float32)
            a1 = tl.zeros([BB, BN], tl.float32)
            a2 = tl.zeros([BB, BN], tl.float32)
            a3 = tl.zeros([BB, BN], tl.float32)
            for k0 in range(0, D, BK):
                ks = k0 + tl.arange(0, BK)
                y = tl.load(_state_ptrs(S, src, rows, 0, head, ks, B, H, D, NS),
                            mask=rmask[:, None] & (ks < D)[None, :], other=0.0,
                            cache_modifier=CACHE).to(R.dtype.element_ty)
                rp = R + ((head * G) * D + ks[:, None]) * D + cols[None, :]
                rm = (ks < D)[:, None] & (cols < D)[None, :]
                a0 += tl.dot(y, tl.load(rp, mask=rm, other=0.0), input_precision=PREC)
                a1 += tl.dot(y, tl.load(rp + D * D, mask=rm, other=0.0), input_precision=PREC)
                a2 += tl.dot(y, tl.load(rp + 2 * D * D, mask=rm, other=0.0), input_precision=PREC)
                if G == 4:
                    a3 += tl.dot(y, tl.load(rp + 3 * D * D, mask=rm, other=0.0), input_precision=PREC)
            if HAS_RB:
                bp = RB + head * G * D + cols
                a0 += tl.load(bp, mask=cols < D, other=0.0)[None, :]
                a1 += tl.load(bp + D, mask=cols < D, other=0.0)[None, :]
                a2 += tl.load(bp + 2 * D, mask=cols < D, other=0.0)[None, :]
                if G == 4:
                    a3 += tl.load(bp + 3 * D, mask=cols < D, other=0.0)[None, :]
            if STORE_ALL:
                _store_gates(P, rows, t, head, cols, m2, T, H, D, G, a0, a1, a2, a3)
            h_old, c_old, n_old, m_old = _load_state(S, src, rows, head, cols, m2, B, H, D, NS, "")
            h, c, n, m = _cell_update(CELL, x0.to(tl.float32), x1.to(tl.float32), x2.to(tl.float32),
                                      x3.to(tl.float32), a0, a1, a2, a3, h_old, c_old, n_old, m_old)
            if HAS_KEEP:
                h, c, n, m = _keep_state(keep, h, c, n, m, h_old, c_old, n_old, m_old)
            _store_state(S, dst, rows, head, cols, m2, B, H, D, NS, h, c, n, m)
            tl.store(Y + ((rows[:, None] * T + t) * H + head) * D + cols[None, :], h.to(Y.dtype.element_ty), mask=m2)
        tl.debug_barrier()  # the next step reads what every thread of this program wrote
        if NSPLIT > 1:  # ... and of the other programs sharing this head
            _grid_barrier(SYNC + tl.program_id(0) * H + head, (t + 1) * NSPLIT)


@triton.jit
def _rnn_bwd_kernel(
    GX, R, KEEP, S, P, DY, DS, DGX, DP, SYNC, B, T, H, D, SPAN,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    HAS_KEEP: tl.constexpr, PREC: tl.constexpr, NSPLIT: tl.constexpr, CACHE: tl.constexpr,
):
    head = tl.program_id(1)
    rows = (tl.program_id(0) * BB + tl.arange(0, BB)).to(tl.int64)
    rmask = rows < B
    j_start = tl.program_id(2) * SPAN  # this program's share of the columns (outputs in phase 1, y in phase 2)
    j_end = tl.minimum(j_start + SPAN, D)
    for tt in range(T):
        t = T - 1 - tt
        rd, wr = (t + 1) % 2, t % 2  # DS slots: gradient of the state after step t, and before it
        keep = rmask[:, None]  # (unused without HAS_KEEP)
        if HAS_KEEP:
            keep = tl.load(KEEP + rows * T + t, mask=rmask, other=1.0)[:, None] > 0.5
        # Phase 1: point-wise gradients of step t, tile by tile.
        for j0 in range(j_start, j_end, BN):
            cols = j0 + tl.arange(0, BN)
            m2 = rmask[:, None] & (cols < D)[None, :]
            dh = tl.load(_state_ptrs(DS, rd, rows, 0, head, cols, B, H, D, NS), mask=m2, other=0.0)
            dy_ptrs = DY + ((rows[:, None] * T + t) * H + head) * D + cols[None, :]
            dh += tl.load(dy_ptrs, mask=m2, other=0.0).to(tl.float32)
            dc, dn = dh, dh  # (states the cell lacks)
            if NS > 1:
                dc = tl.load(_state_ptrs(DS, rd, rows, 1, head, cols, B, H, D, NS), mask=m2, other=0.0)
            if NS > 2:
                dn = tl.load(_state_ptrs(DS, rd, rows, 2, head, cols, B, H, D, NS), mask=m2, other=0.0)
            x0, x1, x2, x3 = _load_gates(GX, rows, t, head, cols, m2, T, H, D, G)
            a0, a1, a2, a3 = _load_gates(P, rows, t, head, cols, m2, T, H, D, G)
            h_old, c_old, n_old, m_old = _load_state(S, t, rows, head, cols, m2, B, H, D, NS, "")
            d0, d1, d2, d3, p2, dh_old, dc_old, dn_old = _cell_grads(
                CELL, HAS_KEEP, keep, x0.to(tl.float32), x1.to(tl.float32), x2.to(tl.float32), x3.to(tl.float32),
                a0, a1, a2, a3, h_old, c_old, n_old, m_old, dh, dc, dn)
            _store_state(DS, wr, rows, head, cols, m2, B, H, D, NS, dh_old, dc_old, dn_old,
                         tl.zeros([BB, BN], tl.float32))  # (sLSTM: the stabiliser's gradient is zero)
            _store_gates(DGX, rows, t, head, cols, m2, T, H, D, G, d0, d1, d2, d3)
            _store_gates(DP, rows, t, head, cols, m2, T, H, D, G, d0, d1, p2, d3)
        tl.debug_barrier()
        if NSPLIT > 1:
            _grid_barrier(SYNC + tl.program_id(0) * H + head, (tt + 1) * NSPLIT)
        # Phase 2: dy_{t-1} += sum_g dP_g R_g^T, tile by tile (BN) of y's dimension, summed over tiles (BK) of P's.
        for k0 in range(j_start, j_end, BN):
            ks = k0 + tl.arange(0, BN)
            mk = rmask[:, None] & (ks < D)[None, :]
            acc = tl.load(_state_ptrs(DS, wr, rows, 0, head, ks, B, H, D, NS), mask=mk, other=0.0)
            for j0 in range(0, D, BK):
                cols = j0 + tl.arange(0, BK)
                m2 = rmask[:, None] & (cols < D)[None, :]
                rtp = R + ((head * G) * D + ks[None, :]) * D + cols[:, None]  # [BK(j), BN(k)] = R[g, k, j]
                rm = (cols < D)[:, None] & (ks < D)[None, :]
                for g in tl.static_range(G):
                    dp = tl.load(_gate_ptrs(DP, rows, t, head, g, cols, T, H, D, G), mask=m2, other=0.0,
                                 cache_modifier=CACHE)
                    rt = tl.load(rtp + g * D * D, mask=rm, other=0.0)
                    acc += tl.dot(dp.to(R.dtype.element_ty), rt, input_precision=PREC)
            tl.store(_state_ptrs(DS, wr, rows, 0, head, ks, B, H, D, NS), acc, mask=mk)
        tl.debug_barrier()


class _Launch(NamedTuple):
    """How the tiled kernels run a problem: grid ``(batch blocks, H, programs per head)``, output columns per
    program, programs per head, and the tiles ``[BB, BN]`` of the state and ``BK`` of the matmuls' reduction."""

    grid: tuple[int, int, int]
    span: int
    split: int
    BB: int
    BN: int
    BK: int


def _launch_shape(B: int, T: int, H: int, D: int, device: torch.device) -> _Launch:
    """Heads wider than one tile (``D > 64``) run in column tiles, split over one program per tile (synchronised at
    every step) when all of them fit on the GPU at once. The tile: :data:`SPLIT_BLOCK_D` columns, widened to 32 or 64
    where that is what lets the split grid fit (batch 64 of a 2048-wide GRU head: 4 unsplit programs at 16 columns,
    128 split ones at 64); 64 for a single step (decode), which the 64-column tiled kernel ran 1.2-25x faster than
    16-column tiles with the split-resident forward (H200, ``bench_decode.py``, LSTM / GRU / sLSTM at batch 1-64)."""
    if SPLIT_BLOCK_D not in (16, 32, 64):
        raise ValueError(f"SPLIT_BLOCK_D must be 16, 32 or 64; got {SPLIT_BLOCK_D}")
    BB, BK = 16, max(16, min(64, triton.next_power_of_2(D)))
    nb = triton.cdiv(B, BB)
    on_gpu = device.type == "cuda" and not triton_interpreting()
    sms = cuda_properties(device).multi_processor_count if on_gpu else 0

    def splits(BN: int) -> bool:  # D % BN == 0 keeps every program's columns on cache lines of their own
        tiles = triton.cdiv(D, BN)
        return on_gpu and tiles > 1 and D % BN == 0 and nb * H * tiles <= sms

    if D <= BK:
        BN = BK
    elif T == 1:
        BN = 64
    else:
        BN = next((c for c in (16, 32, 64) if c >= SPLIT_BLOCK_D and splits(c)), SPLIT_BLOCK_D)
    tiles = triton.cdiv(D, BN)
    split = tiles if splits(BN) else 1
    return _Launch((nb, H, split), triton.cdiv(tiles, split) * BN, split, BB, BN, BK)


def _cache(split: int) -> str:
    """Loads of values other programs wrote bypass L1 (``.cg``), which is not coherent across multiprocessors."""
    return ".cg" if split > 1 else ""


def _resident_block(D: int, R: torch.Tensor) -> int | None:
    """The tile ``BD >= D`` of the register-resident forward, or None where the head is not run on it: with
    :data:`RESIDENT` off, or where one ``R_g`` tile has more bytes than a 16-bit one of :data:`RESIDENT_MAX_D`."""
    block = max(16, triton.next_power_of_2(D))
    if not RESIDENT or block * block * R.element_size() > 2 * RESIDENT_MAX_D**2:
        return None
    return block


def _split_resident(D: int, R: torch.Tensor, ls: _Launch) -> bool:
    """Whether the forward runs on the split-resident kernel (:data:`SPLIT_RESIDENT`): a head of 16-bit ``R`` split
    over programs whose ``R`` slice has at most :data:`SPLIT_RESIDENT_MAX_BYTES`; with ``"always"`` any head the
    resident forward does not take. On a GPU, either way, only where the slice fits a block's shared memory."""
    if SPLIT_RESIDENT == "always":
        return not R.is_cuda or _fits_on_chip(D, R, ls)
    if not SPLIT_RESIDENT or ls.split == 1 or R.element_size() != 2:
        return False
    size = split_resident_bytes(D, ls.BN, split_resident_key_block(D), R.element_size())
    return size <= SPLIT_RESIDENT_MAX_BYTES and _fits_on_chip(D, R, ls)


def _fits_on_chip(D: int, R: torch.Tensor, ls: _Launch) -> bool:
    """Whether the split-resident forward's shared memory fits the GPU's opt-in limit per block (227 KiB on
    H100/H200, 163 KiB on A100; unknown to older PyTorch: Hopper's assumed): the compiler stages the ``R`` slice
    there, and every key tile of ``y`` at once (``BB x D``; all are requested before the products). A float32 head
    of 768 in tiles of 16 needs 196 + 48 KiB: it does not fit."""
    BK = split_resident_key_block(D)
    size = split_resident_bytes(D, ls.BN, BK, R.element_size()) + ls.BB * triton.cdiv(D, BK) * BK * R.element_size()
    props = cuda_properties(R.device) if R.is_cuda else None
    return size <= getattr(props, "shared_memory_per_block_optin", 232448)


def _takes_split_resident(T: int, D: int, R: torch.Tensor, ls: _Launch) -> bool:
    """Whether a call runs on the split-resident kernels: :func:`_split_resident`, and more than one step (a single
    step takes the tiled kernel, see :func:`_launch_shape`) unless :data:`SPLIT_RESIDENT` is ``"always"``."""
    return (T > 1 or SPLIT_RESIDENT == "always") and _split_resident(D, R, ls)


def _split_resident_backward(T: int, D: int, R: torch.Tensor, ls: _Launch) -> bool:
    """Whether the backward runs on the split-resident kernel (:data:`SPLIT_RESIDENT_BACKWARD`): where the forward
    does, but for float32 ``R`` on a GPU (only ever forced there, ``SPLIT_RESIDENT = "always"``): its slice with the
    staged ``dP`` tiles can pass a block's shared memory (240 KiB for a GRU head of 768 in tiles of 16)."""
    fits = R.element_size() == 2 or not R.is_cuda
    return SPLIT_RESIDENT_BACKWARD and fits and _takes_split_resident(T, D, R, ls)


def _forward(cell: str, gx: torch.Tensor, R: torch.Tensor, rbias: torch.Tensor | None, state0: torch.Tensor,
             keep: torch.Tensor | None, store_all: bool) -> tuple[torch.Tensor, ...]:
    """``(y, final state, S, P)``: the states ``S`` and pre-activations ``P`` are those the backward reads when
    ``store_all``."""
    block = _resident_block(gx.shape[-1], R)
    if block is not None:
        warps = RESIDENT_NUM_WARPS or resident_warps(block, R.element_size())
        return resident_forward(cell, gx, R, rbias, state0, keep, store_all, block, warps)
    B, T, H, G, D = gx.shape
    NS = CELLS[cell][1]
    ls = _launch_shape(B, T, H, D, gx.device)
    if _takes_split_resident(T, D, R, ls):
        warps = SPLIT_RESIDENT_NUM_WARPS or split_resident_warps(ls.BN)
        return split_resident_forward(cell, gx, R, rbias, state0, keep, store_all, BB=ls.BB, BN=ls.BN,
                                      split=ls.split > 1, num_warps=warps)
    # Split heads exchange y through memory: every step then writes fresh addresses (all T + 1 state slots), so no
    # multiprocessor can hold a stale L1 copy of a state another one writes later.
    store_all = store_all or ls.split > 1
    S = gx.new_empty((T + 1 if store_all else 2, B, NS, H, D), dtype=torch.float32)
    S[0] = state0
    y = gx.new_empty(B, T, H, D)
    P = gx.new_empty(B, T, H, G, D, dtype=torch.float32) if store_all else S
    sync = torch.zeros(ls.grid[0] * H if ls.split > 1 else 1, device=gx.device, dtype=torch.int32)
    _rnn_fwd_kernel[ls.grid](
        gx, R, rbias if rbias is not None else R, keep if keep is not None else gx, S, y, P, sync, B, T, H, D, ls.span,
        CELL=_CELL_IDS[cell], G=G, NS=NS, BB=ls.BB, BN=ls.BN, BK=ls.BK, HAS_RB=rbias is not None,
        HAS_KEEP=keep is not None, STORE_ALL=store_all, PREC=_precision(R), NSPLIT=ls.split, CACHE=_cache(ls.split),
    )
    final = S[T] if store_all else S[T % 2]
    return y, final, S, P


def _tiled_backward(cell: str, gx: torch.Tensor, R: torch.Tensor, keep: torch.Tensor | None, S: torch.Tensor,
                    P: torch.Tensor, dy: torch.Tensor, dfinal: torch.Tensor | None,
                    ls: _Launch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dgx, dP, d initial state)`` from :func:`_rnn_bwd_kernel` (``dy`` contiguous)."""
    B, T, H, G, D = gx.shape
    NS = S.shape[2]
    DS = gx.new_zeros((2, B, NS, H, D), dtype=torch.float32)
    if dfinal is not None:
        DS[T % 2] = dfinal
    dgx = torch.empty_like(P)
    dp = torch.empty_like(P)
    sync = torch.zeros(ls.grid[0] * H if ls.split > 1 else 1, device=gx.device, dtype=torch.int32)
    _rnn_bwd_kernel[ls.grid](
        gx, R, keep if keep is not None else gx, S, P, dy, DS, dgx, dp, sync, B, T, H, D, ls.span,
        CELL=_CELL_IDS[cell], G=G, NS=NS, BB=ls.BB, BN=ls.BN, BK=ls.BK, HAS_KEEP=keep is not None,
        PREC=_precision(R), NSPLIT=ls.split, CACHE=_cache(ls.split),
    )
    return dgx, dp, DS[0]


class _RNNScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, gx, R, rbias, state0, keep):
        y, final, S, P = _forward(cell, gx, R, rbias, state0, keep, store_all=True)
        ctx.cell, ctx.has_rbias = cell, rbias is not None
        ctx.save_for_backward(gx, R, keep, S, P)
        return y, final.clone()

    @staticmethod
    def backward(ctx, dy, dfinal):
        gx, R, keep, S, P = ctx.saved_tensors
        B, T, H, G, D = gx.shape
        dy = dy.contiguous()
        ls = _launch_shape(B, T, H, D, gx.device)
        if _split_resident_backward(T, D, R, ls):
            warps = SPLIT_RESIDENT_BACKWARD_NUM_WARPS or split_resident_backward_warps(ls.BN)
            dgx, dp, ds0 = split_resident_backward(ctx.cell, gx, R, keep, S, P, dy, dfinal, BB=ls.BB, BN=ls.BN,
                                                   split=ls.split > 1, num_warps=warps)
        else:
            dgx, dp, ds0 = _tiled_backward(ctx.cell, gx, R, keep, S, P, dy, dfinal, ls)
        dR = torch.einsum("bthi,bthgj->hgij", S[:T, :, 0].transpose(0, 1), dp).to(R.dtype)
        drb = dp.sum((0, 1)).to(R.dtype) if ctx.has_rbias else None
        return None, dgx.to(gx.dtype), dR, drb, ds0, None


def rnn_scan(cell, gx, R, rbias, state0, keep):
    """Triton counterpart of :func:`reference.rnn_scan` (same arguments, same results)."""
    gx, R = gx.contiguous(), R.contiguous()
    rbias = None if rbias is None else rbias.contiguous()
    keep = None if keep is None else keep.float().contiguous()
    state0 = state0.float().contiguous()
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (gx, R, rbias, state0)):
        return _RNNScan.apply(cell, gx, R, rbias, state0, keep)
    y, final, _, _ = _forward(cell, gx, R, rbias, state0, keep, store_all=False)
    return y, final
