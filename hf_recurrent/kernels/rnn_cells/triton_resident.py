r"""Register-resident forward for heads of one tile (``D <= BD``, ``BD`` up to :data:`.triton.RESIDENT_MAX_D`).

One program per (block of ``BB`` batch rows, head) walks over time with everything a step needs on the chip:

* the head's recurrent tiles ``R_g`` (``[BD, BD]`` each, ``G`` of them) are loaded once, before the time loop;
* the state ``(y, c, n, m)`` (``[BB, BD]`` float32 each) is carried by the loop; ``y_{t-1}`` goes to ``tl.dot``
  from registers, rounded to ``R``'s dtype, so a step has no global-memory round trip on its critical path;
* step ``t + 1``'s gate inputs (and keep flags) are loaded while step ``t`` computes (software prefetch through
  loop-carried tiles).

Per step: ``P_g = y_{t-1} R_g + r_g`` (float32 accumulation), the cell's point-wise update in float32, ``y_t`` stored.
In training (``STORE_ALL``) it also stores every state ``S[t + 1]`` and the pre-activations ``P``, in the layouts of
the tiled forward, so the backward of :mod:`.triton` runs unchanged; otherwise only the final state (slot 1).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import CELLS
from .triton_common import (_CELL_IDS, _load_gates, _load_state, _next_state, _precision, _store_gates,
                            _store_state)


@triton.jit
def _load_keep(KEEP, rows, rmask, t, T):
    return tl.load(KEEP + rows * T + t, mask=rmask, other=1.0)


@triton.jit
def _load_tile(R, head, g: tl.constexpr, cols, cmask, D, G: tl.constexpr):
    """``R[head, g]`` as a ``[BD, BD]`` tile (input index first), zero outside ``D x D``."""
    ptrs = R + ((head * G + g) * D + cols[:, None]) * D + cols[None, :]
    return tl.load(ptrs, mask=cmask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def _load_bias(RB, head, g: tl.constexpr, cols, cmask, D, G: tl.constexpr, HAS_RB: tl.constexpr):
    """``r_g`` as ``[1, BD]`` float32 (zeros without a recurrent bias)."""
    if HAS_RB:
        b = tl.load(RB + (head * G + g) * D + cols, mask=cmask, other=0.0).to(tl.float32)
    else:
        b = tl.zeros_like(cols).to(tl.float32)
    return b[None, :]


@triton.jit
def _rnn_fwd_resident_kernel(
    GX, R, RB, KEEP, S, Y, P, B, T, H, D,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, BB: tl.constexpr, BD: tl.constexpr,
    HAS_RB: tl.constexpr, HAS_KEEP: tl.constexpr, STORE_ALL: tl.constexpr, PREC: tl.constexpr,
):
    head = tl.program_id(1)
    rows = (tl.program_id(0) * BB + tl.arange(0, BB)).to(tl.int64)
    rmask = rows < B
    cols = tl.arange(0, BD)
    cmask = cols < D
    m2 = rmask[:, None] & cmask[None, :]
    r0 = _load_tile(R, head, 0, cols, cmask, D, G)
    r1 = _load_tile(R, head, 1, cols, cmask, D, G)
    r2 = _load_tile(R, head, 2, cols, cmask, D, G)
    b0 = _load_bias(RB, head, 0, cols, cmask, D, G, HAS_RB)
    b1 = _load_bias(RB, head, 1, cols, cmask, D, G, HAS_RB)
    b2 = _load_bias(RB, head, 2, cols, cmask, D, G, HAS_RB)
    r3, b3 = r2, b2
    if G == 4:
        r3 = _load_tile(R, head, 3, cols, cmask, D, G)
        b3 = _load_bias(RB, head, 3, cols, cmask, D, G, HAS_RB)
    h, c, n, m = _load_state(S, 0, rows, head, cols, m2, B, H, D, NS, "")
    x0, x1, x2, x3 = _load_gates(GX, rows, 0, head, cols, m2, T, H, D, G)
    k = tl.full([BB], 1.0, tl.float32)  # every row kept (without KEEP)
    if HAS_KEEP:
        k = _load_keep(KEEP, rows, rmask, 0, T)
    for t in range(T):
        t_next = tl.minimum(t + 1, T - 1)  # the last step prefetches itself again: no masked-out tail
        nx0, nx1, nx2, nx3 = _load_gates(GX, rows, t_next, head, cols, m2, T, H, D, G)
        if HAS_KEEP:
            k_next = _load_keep(KEEP, rows, rmask, t_next, T)
        y = h.to(R.dtype.element_ty)
        a0 = tl.dot(y, r0, input_precision=PREC) + b0
        a1 = tl.dot(y, r1, input_precision=PREC) + b1
        a2 = tl.dot(y, r2, input_precision=PREC) + b2
        a3 = a2
        if G == 4:
            a3 = tl.dot(y, r3, input_precision=PREC) + b3
        if STORE_ALL:
            _store_gates(P, rows, t, head, cols, m2, T, H, D, G, a0, a1, a2, a3)
        h, c, n, m = _next_state(CELL, HAS_KEEP, k, x0, x1, x2, x3, a0, a1, a2, a3, h, c, n, m)
        if HAS_KEEP:
            k = k_next
        tl.store(Y + ((rows[:, None] * T + t) * H + head) * D + cols[None, :], h.to(Y.dtype.element_ty), mask=m2)
        if STORE_ALL:
            _store_state(S, t + 1, rows, head, cols, m2, B, H, D, NS, h, c, n, m)
        x0, x1, x2, x3 = nx0, nx1, nx2, nx3
    if not STORE_ALL:
        _store_state(S, 1, rows, head, cols, m2, B, H, D, NS, h, c, n, m)


def resident_warps(block_d: int, itemsize: int) -> int:
    """Warps per program: enough that the four ``R_g`` tiles come to about 128 registers a thread (each warp holds
    its own columns of them): 4 for 16-bit ``R`` at 64, 8 at 128; 4 for float32 at 64."""
    return max(4, 4 * block_d * block_d * itemsize // (128 * 4 * 32))


def resident_forward(
    cell: str, gx: torch.Tensor, R: torch.Tensor, rbias: torch.Tensor | None, state0: torch.Tensor,
    keep: torch.Tensor | None, store_all: bool, block_d: int, num_warps: int,
) -> tuple[torch.Tensor, ...]:
    """The forward of :func:`.triton.rnn_scan` for ``D <= block_d``: ``(y, final state, S, P)`` as the tiled one
    returns them (``S`` ``[T + 1, B, NS, H, D]`` and ``P`` ``[B, T, H, G, D]`` when ``store_all``)."""
    B, T, H, G, D = gx.shape
    NS = CELLS[cell][1]
    BB = 16
    S = gx.new_empty((T + 1 if store_all else 2, B, NS, H, D), dtype=torch.float32)
    S[0] = state0
    y = gx.new_empty(B, T, H, D)
    P = gx.new_empty(B, T, H, G, D, dtype=torch.float32) if store_all else S
    _rnn_fwd_resident_kernel[(triton.cdiv(B, BB), H)](
        gx, R, rbias if rbias is not None else R, keep if keep is not None else gx, S, y, P, B, T, H, D,
        CELL=_CELL_IDS[cell], G=G, NS=NS, BB=BB, BD=block_d, HAS_RB=rbias is not None, HAS_KEEP=keep is not None,
        STORE_ALL=store_all, PREC=_precision(R), num_warps=num_warps,
    )
    return y, S[T] if store_all else S[1], S, P
