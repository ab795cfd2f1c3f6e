r"""Split-resident forward: heads wider than one tile, split over one program per ``BN`` output columns, each
program holding its slice of the recurrent weights on the chip for the whole sequence (loaded once).

Grid: one program per (block of ``BB`` batch rows, head, tile of ``BN`` output columns). Before the time loop a
program loads its columns of all ``G`` recurrent matrices, ``R[head, g, :, cols]``, once: a tuple of ``KT`` (a
constexpr, ``cdiv(D, BK)``) tiles ``[BK, 4 * BN]``, one per tile of ``BK`` reduction rows, with the gates
interleaved in the columns (column ``4 j + g`` is gate ``g`` of output column ``j``; a GRU's fourth gate is zeros).
One ``tl.dot`` per key tile then yields all gates at once: its ``4 * BN`` output columns spread over the warps of
the MMA layout, each warp holding only its own columns of ``R`` (with separate ``[BK, BN]`` tiles per gate at most
``BN / 8`` warps would hold distinct columns and the rest duplicates). The accumulator is then split into the ``G``
gates (``reshape`` to ``[BB, BN, 2, 2]`` and two ``tl.split``).

The program's own state ``(y, c, n, m)`` (``[BB, BN]`` float32) is carried in registers; the previous output
``y_{t-1}`` of the *whole* head, which the other programs wrote, is read after the grid barrier of step ``t - 1``
(``.cg`` loads: L2, coherent across multiprocessors) from an exchange buffer ``YX`` ``[T + 1, B, H, D]`` in ``R``'s
dtype: ``y`` rounded as the matmul takes it anyway (as the tiled kernel rounds what it reads from ``S``), half the
bytes of float32, and half the shared memory its conversion to the MMA operand layout moves (every warp reads the
whole ``y`` tile). Every key tile of ``y`` is requested before the first product (one L2 round trip a step, not
one per tile), in tiles without a mask along the keys where ``BK`` divides ``D`` (16-byte loads;
:func:`split_resident_key_block`). Step ``t + 1``'s gate inputs and keep flags are loaded while step ``t``
computes. Every step stores ``y_t`` (``Y``, ``YX[t + 1]``); in training (``STORE_STATE``) also the state slot
``S[t + 1]`` and with ``STORE_P`` the pre-activations ``P``, in the layouts both backwards read; at inference only
the final state, once.

Compiled for sm_90 (Triton 3.6), the compiler stages the slice of ``R`` in shared memory once, before the loop
(96 KiB at ``D`` = 768, ``BN`` = 16 in bf16, plus 24 KiB for the staged ``y`` tiles; 228 registers a thread at 4
warps, no spills), and each step reads its MMA operands from there (``ldmatrix``): no global or L1 traffic for ``R``
inside the time loop.

Testing on the CPU: under Triton's interpreter programs run one after another, so programs of one head cannot meet
at a barrier. The host then launches the same kernel once per time step (``t_start, t_stop = t, t + 1``) over all
column tiles: the kernel boundary is the barrier, and the carried state is re-read from ``S[t]`` (every state is
stored). A head of one column tile runs in one launch over the whole sequence (no exchange partner), which tests
the state carried in registers and the prefetch. Both are the kernel code a GPU runs; only the loop bounds and the
barrier (``BARRIER``) differ.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import CELLS
from .triton_common import (_CELL_IDS, _column_tile, _grid_barrier, _load_gates, _load_state, _next_state,
                            _precision, _store_gates, _store_state)


@triton.jit
def _gate_columns(j0, D, G: tl.constexpr, BN: tl.constexpr):
    """For the ``4 * BN`` interleaved columns: output column (``j0 + c // 4``), gate (``c % 4``), and the mask of
    those that exist (column inside ``D``, gate below ``G``)."""
    c = tl.arange(0, 4 * BN)
    col = j0 + c // 4
    g = c % 4
    return col, g, (col < D) & (g < G)


@triton.jit
def _load_r_slice(R, head, j0, D, G: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KT: tl.constexpr):
    """``R[head, :, :, j0:j0 + BN]`` as a tuple of ``KT`` tiles ``[BK, 4 * BN]`` (key rows ``kt * BK ...``,
    gate-interleaved columns), zero outside ``D`` and for missing gates."""
    col, g, cm = _gate_columns(j0, D, G, BN)
    tiles = ()
    for kt in tl.static_range(KT):
        ks = kt * BK + tl.arange(0, BK)
        ptrs = R + ((head * G + g[None, :]) * D + ks[:, None]) * D + col[None, :]
        tiles = tiles + (tl.load(ptrs, mask=(ks < D)[:, None] & cm[None, :], other=0.0),)
    return tiles


@triton.jit
def _rnn_fwd_split_resident_kernel(
    GX, R, RB, KEEP, S, YX, Y, P, SYNC, B, T, H, D, t_start, t_stop,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    KT: tl.constexpr, EVEN_K: tl.constexpr, HAS_RB: tl.constexpr, HAS_KEEP: tl.constexpr, STORE_STATE: tl.constexpr,
    STORE_P: tl.constexpr, PREC: tl.constexpr, NSPLIT: tl.constexpr, BARRIER: tl.constexpr, CACHE: tl.constexpr,
):
    head, rows, rmask, j0, cols, m2 = _column_tile(B, D, BB, BN)
    rt = _load_r_slice(R, head, j0, D, G, BN, BK, KT)  # once: the program's columns of R, all gates
    gcol, gate, gmask = _gate_columns(j0, D, G, BN)
    if HAS_RB:
        bias = tl.load(RB + (head * G + gate) * D + gcol, mask=gmask, other=0.0).to(tl.float32)[None, :]
    h, c, n, m = _load_state(S, t_start, rows, head, cols, m2, B, H, D, NS, CACHE)
    x0, x1, x2, x3 = _load_gates(GX, rows, t_start, head, cols, m2, T, H, D, G)
    k = tl.full([BB], 1.0, tl.float32)  # every row kept (without KEEP)
    if HAS_KEEP:
        k = tl.load(KEEP + rows * T + t_start, mask=rmask, other=1.0)
    for t in range(t_start, t_stop):
        t_next = tl.minimum(t + 1, t_stop - 1)  # the last step prefetches itself again: no masked-out tail
        nx0, nx1, nx2, nx3 = _load_gates(GX, rows, t_next, head, cols, m2, T, H, D, G)
        if HAS_KEEP:
            k_next = tl.load(KEEP + rows * T + t_next, mask=rmask, other=1.0)
        ys = ()  # y_{t-1} of the whole head, written by every program of it: every key tile requested first
        for kt in tl.static_range(KT):
            ks = kt * BK + tl.arange(0, BK)
            if EVEN_K:  # no mask along the keys: 16-byte loads
                ymask = rmask[:, None]
            else:
                ymask = rmask[:, None] & (ks < D)[None, :]
            ys = ys + (tl.load(YX + ((t * B + rows[:, None]) * H + head) * D + ks[None, :], mask=ymask, other=0.0,
                               cache_modifier=CACHE),)
        acc = tl.zeros([BB, 4 * BN], tl.float32)
        for kt in tl.static_range(KT):
            acc = tl.dot(ys[kt], rt[kt], acc, input_precision=PREC)
        if HAS_RB:
            acc += bias
        q0, q1 = tl.split(tl.reshape(acc, [BB, BN, 2, 2]))  # column 4 j + 2 p + q: gate 2 p + q
        a0, a2 = tl.split(q0)
        a1, a3 = tl.split(q1)
        if STORE_P:
            _store_gates(P, rows, t, head, cols, m2, T, H, D, G, a0, a1, a2, a3)
        h, c, n, m = _next_state(CELL, HAS_KEEP, k, x0, x1, x2, x3, a0, a1, a2, a3, h, c, n, m)
        if HAS_KEEP:
            k = k_next
        tl.store(Y + ((rows[:, None] * T + t) * H + head) * D + cols[None, :], h.to(Y.dtype.element_ty), mask=m2)
        tl.store(YX + (((t + 1) * B + rows[:, None]) * H + head) * D + cols[None, :], h.to(YX.dtype.element_ty),
                 mask=m2)  # what the other programs read
        if STORE_STATE:
            _store_state(S, t + 1, rows, head, cols, m2, B, H, D, NS, h, c, n, m)
        x0, x1, x2, x3 = nx0, nx1, nx2, nx3
        tl.debug_barrier()  # the next step reads what every thread of this program wrote
        if BARRIER:  # ... and of the other programs sharing this head
            _grid_barrier(SYNC + tl.program_id(0) * H + head, (t + 1) * NSPLIT)
    if not STORE_STATE:
        _store_state(S, t_stop, rows, head, cols, m2, B, H, D, NS, h, c, n, m)


def split_resident_warps(block_n: int) -> int:
    """Warps per program: one per 16 of the ``4 * BN`` interleaved columns (4 at ``BN`` = 16, 8 at 32, 16 at 64).
    Every warp reads the whole ``y`` operand from shared memory each step, so fewer, wider warps move less: at a
    head of 768 in 16-column tiles one per 8 columns (8 warps) took 3.12 us a step against 2.74 with 4 (H200,
    bf16 LSTM, B 16). Triton stages the ``R`` slice in shared memory (module docstring); each warp reads only its
    own columns of it."""
    return max(4, min(16, block_n // 4))


def split_resident_key_block(D: int) -> int:
    """``BK``, the key rows of one tile of ``y`` and ``R``: the largest power of two up to 256 that divides ``D``
    (no mask along the keys, so ``y`` loads in 16-byte pieces, and the fewest tiles, each converted to the MMA
    operand layout in one pass); heads that are not a multiple of 16 take masked tiles of up to 256. Measured at a
    head of 768 (H200, bf16 LSTM, B 16, 4 warps), us a step: 2.74 with 256, 2.91 with 128, 3.17 with 64."""
    if D % 16:
        return min(256, triton.next_power_of_2(D))
    return min(256, D & -D)


def split_resident_bytes(D: int, block_n: int, block_k: int, itemsize: int) -> int:
    """Bytes of the ``R`` slice one program holds: ``KT * BK`` key rows by ``4 * BN`` interleaved columns."""
    return triton.cdiv(D, block_k) * block_k * 4 * block_n * itemsize


def split_resident_forward(
    cell: str, gx: torch.Tensor, R: torch.Tensor, rbias: torch.Tensor | None, state0: torch.Tensor,
    keep: torch.Tensor | None, store_all: bool, *, BB: int, BN: int, split: bool, num_warps: int,
) -> tuple[torch.Tensor, ...]:
    """The forward of :func:`.triton.rnn_scan` on this kernel: ``(y, final state, S, P)`` as the tiled one returns
    them (``S`` ``[T + 1, B, NS, H, D]``; ``P`` ``[B, T, H, G, D]`` when ``store_all``, else ``S``).

    ``split``: the ``cdiv(D, BN)`` programs of a head all run at once (the caller checked they fit the GPU) and meet
    at a grid barrier every step, one launch. Otherwise, with several column tiles, one launch per step. Key
    tiles: :func:`split_resident_key_block`."""
    B, T, H, G, D = gx.shape
    NS = CELLS[cell][1]
    BK = split_resident_key_block(D)
    tiles = triton.cdiv(D, BN)
    stepwise = tiles > 1 and not split
    store_state = store_all or stepwise
    S = gx.new_empty((T + 1, B, NS, H, D), dtype=torch.float32)
    S[0] = state0
    yx = gx.new_empty((T + 1, B, H, D), dtype=R.dtype)  # y_t rounded to R's dtype (the matmul's input): exchanged
    yx[0] = state0[:, 0]
    y = gx.new_empty(B, T, H, D)
    P = gx.new_empty(B, T, H, G, D, dtype=torch.float32) if store_all else S
    nb = triton.cdiv(B, BB)
    barrier = split and tiles > 1
    sync = torch.zeros(nb * H if barrier else 1, device=gx.device, dtype=torch.int32)
    meta = dict(
        CELL=_CELL_IDS[cell], G=G, NS=NS, BB=BB, BN=BN, BK=BK, KT=triton.cdiv(D, BK), EVEN_K=D % BK == 0,
        HAS_RB=rbias is not None, HAS_KEEP=keep is not None, STORE_STATE=store_state, STORE_P=store_all, PREC=_precision(R), NSPLIT=tiles,
        BARRIER=barrier, CACHE=".cg" if barrier else "", num_warps=num_warps,
        num_stages=1,  # no software pipelining: a load of S[t + 1] must not be issued before step t's barrier
    )
    args = (gx, R, rbias if rbias is not None else R, keep if keep is not None else gx, S, yx, y, P, sync, B, T,
            H, D)
    for t0, t1 in ([(t, t + 1) for t in range(T)] if stepwise else [(0, T)] if T else []):
        _rnn_fwd_split_resident_kernel[(nb, H, tiles)](*args, t0, t1, **meta)
    return y, S[T], S, P
