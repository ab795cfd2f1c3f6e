r"""Split-resident backward: the gradient of a head wider than one tile, split over one program per ``BN`` of its
state's columns, each program holding its rows of the recurrent weights on the chip for the whole sequence.

Walking the sequence backwards, step ``t`` needs the gradient of ``y_t``: the incoming ``dy_t``, the part that
does not pass through ``R`` (the GRU's ``z dh``) and the recurrent part

.. math::

    \mathrm{d}y_t \mathrel{+}= \sum_g \mathrm{d}P_{t+1,g} R_g^\top
    \quad (\text{row } k: \textstyle\sum_{g,j} \mathrm{d}P_{t+1,g,j} R_{g,k,j}),

a product over *all* ``G * D`` gate columns of step ``t + 1``. So a program owns the state columns ``k`` of its
tile for every step — ``dy``, ``dc``, ``dn`` carried in registers, no other program touches them — and holds
``R[head, g, k, :]`` for its ``k`` and every gate (loaded once, a tuple of ``G * KT`` tiles ``[BK, BN]``: Triton
stages them in shared memory, like the forward's slice). One iteration, for ``t`` from ``T - 1`` down to ``-1``:

1. the recurrent part from ``dP_{t+1}`` of the whole head (skipped at ``t = T - 1``), which every program wrote in
   the previous iteration to an exchange buffer ``DPX`` ``[2, B, H, G, D]`` (slot ``t % 2``) in ``R``'s dtype (the
   matmul's input: what the tiled backward rounds it to anyway, half the bytes of float32), read with ``.cg`` loads
   (L2) after the grid barrier. Two slots suffice: the slot written in iteration ``i + 1`` was last read in
   iteration ``i``, and no program starts ``i + 1`` before every program has passed the barrier ending ``i``;
2. the point-wise gradients of step ``t`` for the program's columns (:func:`.triton_common._cell_grads`; skipped
   at ``t = -1``): ``dgx``, ``dP`` (float32, for the weight gradient) and its copy in ``DPX``;
3. a grid barrier: ``dP_t`` of every program is written.

The last iteration (``t = -1``) only adds ``dP_0``'s recurrent part: the gradient of the initial state. The loads
of step ``t``'s gate inputs, pre-activations, old state and ``dy_t`` are issued before the product, so their latency
hides behind it. Against the tiled backward (:mod:`.triton`, which re-reads ``R`` and float32 ``dP`` tiles every
step): one program per column tile always, ``R`` read from global memory once.

The carried gradients enter and leave through ``DS`` (``[B, NS, H, D]`` float32: ``d final state`` in, ``d initial
state`` out). Testing on the CPU, as the forward: programs of one head run one after another under the interpreter,
so there the host launches one iteration at a time (the kernel boundary is the barrier; the carry goes through
``DS``); heads of one tile run in one launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import CELLS
from .triton_common import (_CELL_IDS, _cell_grads, _column_tile, _grid_barrier, _load_gates, _load_state,
                            _precision, _store_gates, _store_state)
from .triton_split import split_resident_key_block


@triton.jit
def _load_rt_slice(R, head, k0, D, G: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KT: tl.constexpr):
    """``R[head, g, k0:k0 + BN, :]`` transposed, as a tuple of ``G * KT`` tiles ``[BK, BN]`` (tile ``g * KT + jt``:
    rows ``j = jt * BK ...``), zero outside ``D``."""
    ks = k0 + tl.arange(0, BN)
    tiles = ()
    for g in tl.static_range(G):
        for jt in tl.static_range(KT):
            js = jt * BK + tl.arange(0, BK)
            ptrs = R + ((head * G + g) * D + ks[None, :]) * D + js[:, None]
            tiles = tiles + (tl.load(ptrs, mask=(js < D)[:, None] & (ks < D)[None, :], other=0.0),)
    return tiles


@triton.jit
def _rnn_bwd_split_resident_kernel(
    GX, R, KEEP, S, P, DY, DS, DGX, DP, DPX, SYNC, B, T, H, D, i_start, i_stop,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    KT: tl.constexpr, EVEN_K: tl.constexpr, HAS_KEEP: tl.constexpr, PREC: tl.constexpr, NSPLIT: tl.constexpr,
    BARRIER: tl.constexpr, CACHE: tl.constexpr,
):
    head, rows, rmask, k0, cols, m2 = _column_tile(B, D, BB, BN)
    rt = _load_rt_slice(R, head, k0, D, G, BN, BK, KT)  # once: the program's rows of R, all gates
    dh, dc, dn, _ = _load_state(DS, 0, rows, head, cols, m2, B, H, D, NS, "")  # d of the state after step T - 1
    for i in range(i_start, i_stop):  # iteration i: step t = T - 1 - i (phase 2 of step t + 1, phase 1 of t)
        t = T - 1 - i
        ts = tl.maximum(t, 0)  # (t = -1: no step; its loads are repeated ones of step 0, unused)
        keep = rmask[:, None]  # (unused without HAS_KEEP)
        if HAS_KEEP:
            keep = tl.load(KEEP + rows * T + ts, mask=rmask, other=1.0)[:, None] > 0.5
        dy = tl.load(DY + ((rows[:, None] * T + ts) * H + head) * D + cols[None, :], mask=m2, other=0.0)
        x0, x1, x2, x3 = _load_gates(GX, rows, ts, head, cols, m2, T, H, D, G)
        a0, a1, a2, a3 = _load_gates(P, rows, ts, head, cols, m2, T, H, D, G)
        h_old, c_old, n_old, m_old = _load_state(S, ts, rows, head, cols, m2, B, H, D, NS, "")
        if i > 0:  # dy_t += sum_g dP_{t+1, g} R_g^T, dP_{t+1} of the whole head
            acc = tl.zeros([BB, BN], tl.float32)
            dpx_rows = DPX + ((((t + 1) % 2) * B + rows[:, None]) * H + head) * G * D  # [BB, 1]: slot of step t + 1
            for g in tl.static_range(G):
                dps = ()  # every key tile of this gate requested before the products
                for jt in tl.static_range(KT):
                    js = jt * BK + tl.arange(0, BK)
                    if EVEN_K:
                        dmask = rmask[:, None]
                    else:
                        dmask = rmask[:, None] & (js < D)[None, :]
                    dps = dps + (tl.load(dpx_rows + g * D + js[None, :], mask=dmask, other=0.0, cache_modifier=CACHE),)
                for jt in tl.static_range(KT):
                    acc = tl.dot(dps[jt], rt[g * KT + jt], acc, input_precision=PREC)
            dh += acc
        if t >= 0:
            d0, d1, d2, d3, p2, dh, dc, dn = _cell_grads(
                CELL, HAS_KEEP, keep, x0.to(tl.float32), x1.to(tl.float32), x2.to(tl.float32), x3.to(tl.float32),
                a0, a1, a2, a3, h_old, c_old, n_old, m_old, dh + dy.to(tl.float32), dc, dn)
            _store_gates(DGX, rows, t, head, cols, m2, T, H, D, G, d0, d1, d2, d3)
            _store_gates(DP, rows, t, head, cols, m2, T, H, D, G, d0, d1, p2, d3)
            dpx = DPX + ((((t % 2) * B + rows[:, None]) * H + head) * G) * D + cols[None, :]  # what the others read
            tl.store(dpx, d0.to(DPX.dtype.element_ty), mask=m2)
            tl.store(dpx + D, d1.to(DPX.dtype.element_ty), mask=m2)
            tl.store(dpx + 2 * D, p2.to(DPX.dtype.element_ty), mask=m2)
            if G == 4:
                tl.store(dpx + 3 * D, d3.to(DPX.dtype.element_ty), mask=m2)
        tl.debug_barrier()  # the next iteration reads what every thread of this program wrote
        if BARRIER:  # ... and of the other programs sharing this head
            _grid_barrier(SYNC + tl.program_id(0) * H + head, (i + 1) * NSPLIT)
    _store_state(DS, 0, rows, head, cols, m2, B, H, D, NS, dh, dc, dn, tl.zeros([BB, BN], tl.float32))


def split_resident_backward_warps(block_n: int) -> int:
    """Warps per program: the product's output is ``[16, BN]``, one warp per 8 of its columns (more would repeat the
    same columns, each reading all of ``dP`` from shared memory; at 2 warps and a head of 768 ptxas keeps 255
    registers and spills a few bytes, and it is still the fastest). Measured (H200, bf16 LSTM layer with its input
    projection, B 16, T 1024, 16-column tiles), forward+backward ms: heads of 768 12.79 with 2 warps, 13.71 with 4,
    16.80 with 8 (the tiled backward: 16.00); heads of 256 8.49, 8.61, 9.49 (tiled: 9.75)."""
    return max(1, block_n // 8)


def split_resident_backward(
    cell: str, gx: torch.Tensor, R: torch.Tensor, keep: torch.Tensor | None, S: torch.Tensor, P: torch.Tensor,
    dy: torch.Tensor, dfinal: torch.Tensor | None, *, BB: int, BN: int, split: bool, num_warps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward of :func:`.triton.rnn_scan` on this kernel, from the forward's states ``S`` ``[T + 1, B, NS, H,
    D]`` and pre-activations ``P`` ``[B, T, H, G, D]``: ``(dgx, dP, d initial state)``, ``dgx`` and ``dP`` float32
    ``[B, T, H, G, D]`` as the tiled backward returns them.

    ``split``: the ``cdiv(D, BN)`` programs of a head all run at once (the caller checked they fit the GPU) and meet
    at a grid barrier every iteration, one launch. Otherwise, with several column tiles, one launch per iteration.
    Key tiles as the forward's (:func:`.triton_split.split_resident_key_block`)."""
    B, T, H, G, D = gx.shape
    NS = CELLS[cell][1]
    BK = split_resident_key_block(D)
    tiles = triton.cdiv(D, BN)
    DS = torch.zeros((B, NS, H, D), device=gx.device, dtype=torch.float32)
    if dfinal is not None:
        DS.copy_(dfinal)
    dgx = torch.empty_like(P)
    dp = torch.empty_like(P)
    dpx = gx.new_empty((2, B, H, G, D), dtype=R.dtype)
    nb = triton.cdiv(B, BB)
    barrier = split and tiles > 1
    sync = torch.zeros(nb * H if barrier else 1, device=gx.device, dtype=torch.int32)
    meta = dict(
        CELL=_CELL_IDS[cell], G=G, NS=NS, BB=BB, BN=BN, BK=BK, KT=triton.cdiv(D, BK), EVEN_K=D % BK == 0,
        HAS_KEEP=keep is not None, PREC=_precision(R), NSPLIT=tiles, BARRIER=barrier,
        CACHE=".cg" if barrier else "", num_warps=num_warps,
        num_stages=1,  # no software pipelining: a load of dP_{t+1} must not be issued before the barrier
    )
    args = (gx, R, keep if keep is not None else gx, S, P, dy, DS, dgx, dp, dpx, sync, B, T, H, D)
    stepwise = tiles > 1 and not split
    for i0, i1 in ([(i, i + 1) for i in range(T + 1)] if stepwise else [(0, T + 1)]):
        _rnn_bwd_split_resident_kernel[(nb, H, tiles)](*args, i0, i1, **meta)
    return dgx, dp, DS
