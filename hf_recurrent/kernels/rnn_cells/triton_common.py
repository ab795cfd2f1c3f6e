r"""What the cells' Triton kernels share: activations, pointers into the gate and state tensors, one step's
point-wise update of each cell, the grid barrier of split heads, and two host helpers.

A module of its own so that :mod:`.triton` (the tiled forward, the backward, autograd) imports the
register-resident forwards (:mod:`.triton_resident`, :mod:`.triton_split`), which import these, without a cycle.

Layouts (all contiguous): gates ``GX``, ``P`` ``[B, T, H, G, D]``; states ``S`` ``[slots, B, NS, H, D]`` float32
(slot ``t`` holds the state before step ``t``; state index 0 is ``y``, then ``c``, ``n``, ``m`` as the cell has
them). States a cell lacks are passed around as copies of ``h`` and never stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_CELL_IDS = {"lstm": 0, "gru": 1, "slstm": 2}


def _precision(R: torch.Tensor) -> str:
    """``tl.dot``'s input precision: IEEE for float32 weights (the float32 tests' tolerances), else bf16/fp16 MMA."""
    return "ieee" if R.dtype == torch.float32 else "tf32"


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _state_ptrs(S, slot, rows, s: tl.constexpr, head, cols, B, H, D, NS: tl.constexpr):
    return S + (((slot * B + rows[:, None]) * NS + s) * H + head) * D + cols[None, :]


@triton.jit
def _gate_ptrs(X, rows, t, head, g: tl.constexpr, cols, T, H, D, G: tl.constexpr):
    return X + (((rows[:, None] * T + t) * H + head) * G + g) * D + cols[None, :]


@triton.jit
def _load_state(S, slot, rows, head, cols, mask, B, H, D, NS: tl.constexpr, CACHE: tl.constexpr):
    """``(h, c, n, m)`` ``[BB, BD]`` float32 of slot ``slot``; those the cell lacks (``NS`` < 4) are ``h``."""
    h = tl.load(_state_ptrs(S, slot, rows, 0, head, cols, B, H, D, NS), mask=mask, other=0.0, cache_modifier=CACHE)
    c, n, m = h, h, h
    if NS > 1:
        c = tl.load(_state_ptrs(S, slot, rows, 1, head, cols, B, H, D, NS), mask=mask, other=0.0,
                    cache_modifier=CACHE)
    if NS > 2:
        n = tl.load(_state_ptrs(S, slot, rows, 2, head, cols, B, H, D, NS), mask=mask, other=0.0,
                    cache_modifier=CACHE)
        m = tl.load(_state_ptrs(S, slot, rows, 3, head, cols, B, H, D, NS), mask=mask, other=0.0,
                    cache_modifier=CACHE)
    return h, c, n, m


@triton.jit
def _store_state(S, slot, rows, head, cols, mask, B, H, D, NS: tl.constexpr, h, c, n, m):
    tl.store(_state_ptrs(S, slot, rows, 0, head, cols, B, H, D, NS), h, mask=mask)
    if NS > 1:
        tl.store(_state_ptrs(S, slot, rows, 1, head, cols, B, H, D, NS), c, mask=mask)
    if NS > 2:
        tl.store(_state_ptrs(S, slot, rows, 2, head, cols, B, H, D, NS), n, mask=mask)
        tl.store(_state_ptrs(S, slot, rows, 3, head, cols, B, H, D, NS), m, mask=mask)


@triton.jit
def _load_gates(X, rows, t, head, cols, mask, T, H, D, G: tl.constexpr):
    """Step ``t``'s ``G`` gate tiles ``[BB, BD]`` of ``X`` in its own dtype; a fourth is ``x2`` when ``G`` = 3."""
    x0 = tl.load(_gate_ptrs(X, rows, t, head, 0, cols, T, H, D, G), mask=mask, other=0.0)
    x1 = tl.load(_gate_ptrs(X, rows, t, head, 1, cols, T, H, D, G), mask=mask, other=0.0)
    x2 = tl.load(_gate_ptrs(X, rows, t, head, 2, cols, T, H, D, G), mask=mask, other=0.0)
    x3 = x2
    if G == 4:
        x3 = tl.load(_gate_ptrs(X, rows, t, head, 3, cols, T, H, D, G), mask=mask, other=0.0)
    return x0, x1, x2, x3


@triton.jit
def _store_gates(X, rows, t, head, cols, mask, T, H, D, G: tl.constexpr, x0, x1, x2, x3):
    tl.store(_gate_ptrs(X, rows, t, head, 0, cols, T, H, D, G), x0, mask=mask)
    tl.store(_gate_ptrs(X, rows, t, head, 1, cols, T, H, D, G), x1, mask=mask)
    tl.store(_gate_ptrs(X, rows, t, head, 2, cols, T, H, D, G), x2, mask=mask)
    if G == 4:
        tl.store(_gate_ptrs(X, rows, t, head, 3, cols, T, H, D, G), x3, mask=mask)


@triton.jit
def _cell_update(CELL: tl.constexpr, x0, x1, x2, x3, a0, a1, a2, a3, h, c, n, m):
    """One step of the cell (maths in the package docstring), float32: gate inputs ``x_g`` (``gx``), recurrent
    parts ``a_g`` (``y_{t-1} R_g + r_g``) and the old state ``(h, c, n, m)`` -> the new one; states the cell lacks
    pass through unchanged."""
    if CELL == 0:  # LSTM
        c = _sigmoid(x1 + a1) * c + _sigmoid(x0 + a0) * _tanh(x2 + a2)
        h = _sigmoid(x3 + a3) * _tanh(c)
    elif CELL == 1:  # GRU
        z = _sigmoid(x1 + a1)
        h = (1.0 - z) * _tanh(x2 + _sigmoid(x0 + a0) * a2) + z * h
    else:  # sLSTM
        ri = x0 + a0
        log_f = _logsigmoid(x1 + a1) + m
        m_new = tl.where(n == 0.0, ri, tl.maximum(ri, log_f))
        i = tl.exp(ri - m_new)
        f = tl.exp(log_f - m_new)
        c = f * c + i * _tanh(x2 + a2)
        n = tl.maximum(f * n + i, 1.0)
        h = _sigmoid(x3 + a3) * c / n
        m = m_new
    return h, c, n, m


@triton.jit
def _column_tile(B, D, BB: tl.constexpr, BN: tl.constexpr):
    """The tile of a program of a head split into column tiles, grid ``(batch blocks, H, column tiles)``:
    ``(head, rows, row mask, first column, columns, [BB, BN] mask)``, rows int64 (offsets into ``[T, B, ...]``
    buffers can pass 2**31)."""
    head = tl.program_id(1)
    rows = (tl.program_id(0) * BB + tl.arange(0, BB)).to(tl.int64)
    rmask = rows < B
    c0 = tl.program_id(2) * BN
    cols = c0 + tl.arange(0, BN)
    return head, rows, rmask, c0, cols, rmask[:, None] & (cols < D)[None, :]


@triton.jit
def _grid_barrier(counter, target):
    """Wait until the ``NSPLIT`` programs of one head have all arrived (``target`` arrivals in total so far).

    All of them are resident at once (the launch checks that the grid fits the GPU's multiprocessors); states they
    exchange are read with ``.cg`` loads (L2, coherent across multiprocessors). The spin is bounded, so a broken
    assumption gives wrong numbers (which the tests catch) rather than a hang.
    """
    tl.atomic_add(counter, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
    spins = 0
    while (seen < target) & (spins < 1_048_576):  # legitimate waits are a few microseconds; this is ~0.5 s
        seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
        spins += 1
    tl.debug_barrier()


@triton.jit
def _keep_state(keep, h, c, n, m, h_old, c_old, n_old, m_old):
    """Where ``keep`` (``[BB, 1]``) is false (padding) the old state carries over."""
    return (tl.where(keep, h, h_old), tl.where(keep, c, c_old), tl.where(keep, n, n_old),
            tl.where(keep, m, m_old))


@triton.jit
def _next_state(CELL: tl.constexpr, HAS_KEEP: tl.constexpr, keep, x0, x1, x2, x3, a0, a1, a2, a3, h, c, n, m):
    """:func:`_cell_update` from gate inputs ``x_g`` of any float dtype; with ``HAS_KEEP``, rows whose ``keep``
    (``[BB]``) is 0 (padding) keep their old state."""
    h_new, c_new, n_new, m_new = _cell_update(
        CELL, x0.to(tl.float32), x1.to(tl.float32), x2.to(tl.float32), x3.to(tl.float32), a0, a1, a2, a3, h, c, n, m)
    if HAS_KEEP:
        h_new, c_new, n_new, m_new = _keep_state(keep[:, None] > 0.5, h_new, c_new, n_new, m_new, h, c, n, m)
    return h_new, c_new, n_new, m_new


@triton.jit
def _cell_grads(CELL: tl.constexpr, HAS_KEEP: tl.constexpr, keep, x0, x1, x2, x3, a0, a1, a2, a3, h_old, c_old,
                n_old, m_old, dh, dc, dn):
    """Gradients through one step of the cell, float32 (the backward of :func:`_cell_update`, sLSTM's stabiliser
    ``m`` a constant): gate inputs ``x_g``, recurrent parts ``a_g``, the state before the step and the gradients
    ``dh, dc, dn`` of the state after it (those a cell lacks: any tile, unused) ->

    ``(d_0 .. d_3, p_2, dh_old, dc_old, dn_old)``: ``d_g`` the gradient of gate ``g``'s input part ``gx``; the
    recurrent part's is the same but for the GRU's candidate gate, ``p_2 = d_2 r``; ``dh_old`` the gradient of
    ``y_{t-1}`` except the part through ``R`` (the GRU's ``z dh``, zero otherwise), ``dc_old, dn_old`` those of
    ``c_{t-1}, n_{t-1}``. With ``HAS_KEEP``, where ``keep`` (``[BB, 1]``) is false (padding) the state's gradients
    pass through unchanged and the gates' are zero."""
    if CELL == 0:  # LSTM
        i, f = _sigmoid(x0 + a0), _sigmoid(x1 + a1)
        z, o = _tanh(x2 + a2), _sigmoid(x3 + a3)
        tc = _tanh(f * c_old + i * z)
        dct = dc + dh * o * (1.0 - tc * tc)
        d0 = dct * z * i * (1.0 - i)
        d1 = dct * c_old * f * (1.0 - f)
        d2 = dct * i * (1.0 - z * z)
        d3 = dh * tc * o * (1.0 - o)
        dc_old = dct * f
        dn_old = dn
        dh_old = tl.zeros_like(dh)
        p2 = d2
    elif CELL == 1:  # GRU
        r, z = _sigmoid(x0 + a0), _sigmoid(x1 + a1)
        n = _tanh(x2 + r * a2)
        d2 = dh * (1.0 - z) * (1.0 - n * n)
        d0 = d2 * a2 * r * (1.0 - r)
        d1 = dh * (h_old - n) * z * (1.0 - z)
        d3 = d2  # no fourth gate
        p2 = d2 * r
        dh_old = dh * z
        dc_old, dn_old = dc, dn
    else:  # sLSTM
        ri = x0 + a0
        sf = _sigmoid(x1 + a1)
        log_f = _logsigmoid(x1 + a1) + m_old
        m = tl.where(n_old == 0.0, ri, tl.maximum(ri, log_f))
        i = tl.exp(ri - m)
        f = tl.exp(log_f - m)
        z = _tanh(x2 + a2)
        o = _sigmoid(x3 + a3)
        c = f * c_old + i * z
        n_pre = f * n_old + i
        n = tl.maximum(n_pre, 1.0)
        dct = dc + dh * o / n
        dnt = tl.where(n_pre >= 1.0, dn - dh * o * c / (n * n), 0.0)
        d0 = (dct * z + dnt) * i
        d1 = (dct * c_old + dnt * n_old) * f * (1.0 - sf)
        d2 = dct * i * (1.0 - z * z)
        d3 = dh * c / n * o * (1.0 - o)
        dc_old = dct * f
        dn_old = dnt * f
        dh_old = tl.zeros_like(dh)
        p2 = d2
    if HAS_KEEP:
        dh_old, dc_old, dn_old = tl.where(keep, dh_old, dh), tl.where(keep, dc_old, dc), tl.where(keep, dn_old, dn)
        d0, d1, d2 = tl.where(keep, d0, 0.0), tl.where(keep, d1, 0.0), tl.where(keep, d2, 0.0)
        d3, p2 = tl.where(keep, d3, 0.0), tl.where(keep, p2, 0.0)
    return d0, d1, d2, d3, p2, dh_old, dc_old, dn_old
