"""Triton kernels of the selective scan: forward, backward and the one-token decode step.

Layout: ``x, dt, z, y`` are ``[B*T, D]`` rows, ``B, C`` ``[B*T, N]`` rows (contiguous). One program owns a block of
``*_BLOCK_D`` channels of one sequence and walks its time axis in tiles of ``BLOCK_T`` steps. Inside a tile the
recurrence ``h_t = a_t h_{t-1} + b_t`` (``a = exp(delta A)``, ``b = delta x B``, tensors ``[BLOCK_T, *_BLOCK_D, N]`` in
registers) is solved with ``tl.associative_scan`` on pairs ``(a, b)``; the ``[*_BLOCK_D, N]`` state carries from tile
to tile. Nothing of size ``[T, D, N]`` is written: only ``y`` and, when a gradient is needed, the state at the
start of every tile (``[tiles, D, N]`` float32, ``N * 4 / BLOCK_T`` bytes per element of ``x``).

Backward walks the tiles in reverse. It recomputes the tile's states from the saved tile-start state and solves the
adjoint recurrence ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` (``g = dL/dh``) with a reverse scan; ``a_{t+1}`` is formed
from ``dt`` one row further on, so no register shift is needed. With ``a_t h_{t-1} = h_t - b_t``:

* ``dx_t = delta_t sum_n g_t B_t + D dy_t``, ``ddelta_t = x_t sum_n g_t B_t + sum_n g_t (h_t - b_t) A``;
* ``dA = sum_t g_t (h_t - b_t) delta_t``, ``dB_t = sum_d g_t delta_t x_t``, ``dC_t = sum_d dy_t h_t``;
* ``dh_0 = a_1 g_1``; ``d dt = ddelta * sigmoid(dt + bias)`` with the softplus.

``dB``/``dC`` sum over channel blocks with atomic adds (float32); ``dA``/``dD`` are per-sequence partial sums.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tuning knobs (read at call time; benchmarks/bench_selective_scan.py --sweep times alternatives). A tile tensor
# holds BLOCK_T * BLOCK_D * next_pow2(N) float32 elements; the backward keeps about twice as many of them live.
BLOCK_T = 16  # time steps per tile: forward and backward must agree (tile-start states are saved per tile)
FWD_BLOCK_D = 16  # channels per forward program
BWD_BLOCK_D = 16  # channels per backward program
FWD_WARPS = 4
BWD_WARPS = 8
STEP_BLOCK_D = 64


@triton.jit
def _combine(a1, b1, a2, b2):
    """``(a1, b1)`` then ``(a2, b2)``: ``h -> a2 (a1 h + b1) + b2``."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _step_size(v, SOFTPLUS: tl.constexpr):
    if SOFTPLUS:
        v = tl.where(v > 20.0, v, tl.log(1.0 + tl.exp(v)))
    return v


@triton.jit
def _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN: tl.constexpr, BT: tl.constexpr):
    if VARLEN:
        bos = tl.load(cu_seqlens + i_s).to(tl.int64)
        eos = tl.load(cu_seqlens + i_s + 1).to(tl.int64)
        tile0 = tl.load(tile_offsets + i_s).to(tl.int64)
    else:
        bos = i_s.to(tl.int64) * T
        eos = bos + T
        tile0 = i_s.to(tl.int64) * tl.cdiv(T, BT)
    return bos, eos, tile0


@triton.jit
def _fwd_kernel(
    x, dt, A, Bm, Cm, Dp, z, dt_bias, y, h0, hT, ckpt, cu_seqlens, tile_offsets,
    T, D, N,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, SAVE: tl.constexpr, VARLEN: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    bos, eos, tile0 = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, BT)
    o_d = i_d * BD + tl.arange(0, BD)
    o_n = tl.arange(0, BN)
    m_d, m_n = o_d < D, o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    A_t = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_D:
        D_t = tl.load(Dp + o_d, mask=m_d, other=0.0).to(tl.float32)
    state_off = i_s.to(tl.int64) * D * N
    if HAS_H0:
        h = tl.load(h0 + state_off + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BD, BN], dtype=tl.float32)
    r = tl.arange(0, BT)
    n_tiles = tl.cdiv(eos - bos, BT)
    for k in range(0, n_tiles):
        rows = bos + k * BT + r
        m_t = rows < eos
        m_td = m_t[:, None] & m_d[None, :]
        m_tn = m_t[:, None] & m_n[None, :]
        o_td = rows[:, None] * D + o_d[None, :]
        o_tn = rows[:, None] * N + o_n[None, :]
        if SAVE:
            tl.store(ckpt + (tile0 + k) * D * N + o_dn, h, mask=m_dn)
        x_t = tl.load(x + o_td, mask=m_td, other=0.0).to(tl.float32)
        v = tl.load(dt + o_td, mask=m_td, other=0.0).to(tl.float32)
        if HAS_BIAS:
            v = v + bias[None, :]
        delta = tl.where(m_td, _step_size(v, SOFTPLUS), 0.0)
        B_t = tl.load(Bm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
        C_t = tl.load(Cm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
        a = tl.exp(delta[:, :, None] * A_t[None, :, :])
        b = (delta * x_t)[:, :, None] * B_t[:, None, :]
        a_cum, b_cum = tl.associative_scan((a, b), 0, _combine)
        hs = b_cum + a_cum * h[None, :, :]
        out = tl.sum(hs * C_t[:, None, :], axis=2)
        if HAS_D:
            out += D_t[None, :] * x_t
        if HAS_Z:
            z_t = tl.load(z + o_td, mask=m_td, other=0.0).to(tl.float32)
            out *= z_t * tl.sigmoid(z_t)
        tl.store(y + o_td, out.to(y.dtype.element_ty), mask=m_td)
        h = tl.sum(tl.where((r == BT - 1)[:, None, None], hs, 0.0), axis=0)
    if STORE_HT:
        tl.store(hT + state_off + o_dn, h, mask=m_dn)


@triton.jit
def _bwd_kernel(
    x, dt, A, Bm, Cm, Dp, z, dt_bias, ckpt, cu_seqlens, tile_offsets, dy, dhT,
    dx, ddt, dB, dC, dz, dA_part, dD_part, dh0,
    T, D, N,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_DHT: tl.constexpr, VARLEN: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    bos, eos, tile0 = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, BT)
    o_d = i_d * BD + tl.arange(0, BD)
    o_n = tl.arange(0, BN)
    m_d, m_n = o_d < D, o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    A_t = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_D:
        D_t = tl.load(Dp + o_d, mask=m_d, other=0.0).to(tl.float32)
    state_off = i_s.to(tl.int64) * D * N
    if HAS_DHT:
        g_next = tl.load(dhT + state_off + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        g_next = tl.zeros([BD, BN], dtype=tl.float32)
    dA_acc = tl.zeros([BD, BN], dtype=tl.float32)
    dD_acc = tl.zeros([BD], dtype=tl.float32)
    dh_first = tl.zeros([BD, BN], dtype=tl.float32)
    r = tl.arange(0, BT)
    n_tiles = tl.cdiv(eos - bos, BT)
    for kk in range(0, n_tiles):
        k = n_tiles - 1 - kk
        rows = bos + k * BT + r
        m_t = rows < eos
        m_td = m_t[:, None] & m_d[None, :]
        m_tn = m_t[:, None] & m_n[None, :]
        o_td = rows[:, None] * D + o_d[None, :]
        o_tn = rows[:, None] * N + o_n[None, :]
        x_t = tl.load(x + o_td, mask=m_td, other=0.0).to(tl.float32)
        v = tl.load(dt + o_td, mask=m_td, other=0.0).to(tl.float32) + bias[None, :]
        delta = tl.where(m_td, _step_size(v, SOFTPLUS), 0.0)
        m_next = (rows + 1 < eos)[:, None] & m_d[None, :]
        v_next = tl.load(dt + o_td + D, mask=m_next, other=0.0).to(tl.float32) + bias[None, :]
        delta_next = tl.where(m_next, _step_size(v_next, SOFTPLUS), 0.0)
        B_t = tl.load(Bm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
        C_t = tl.load(Cm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
        dout = tl.load(dy + o_td, mask=m_td, other=0.0).to(tl.float32)

        h = tl.load(ckpt + (tile0 + k) * D * N + o_dn, mask=m_dn, other=0.0)
        a = tl.exp(delta[:, :, None] * A_t[None, :, :])
        b = (delta * x_t)[:, :, None] * B_t[:, None, :]
        a_cum, b_cum = tl.associative_scan((a, b), 0, _combine)
        hs = b_cum + a_cum * h[None, :, :]

        if HAS_Z:
            z_t = tl.load(z + o_td, mask=m_td, other=0.0).to(tl.float32)
            sig_z = tl.sigmoid(z_t)
            y_t = tl.sum(hs * C_t[:, None, :], axis=2)
            if HAS_D:
                y_t += D_t[None, :] * x_t
            tl.store(dz + o_td, (dout * y_t * sig_z * (1.0 + z_t * (1.0 - sig_z))).to(dz.dtype.element_ty), mask=m_td)
            dout = dout * z_t * sig_z

        a_next = tl.exp(delta_next[:, :, None] * A_t[None, :, :])
        c = dout[:, :, None] * C_t[:, None, :]
        a_rev, c_rev = tl.associative_scan((a_next, c), 0, _combine, reverse=True)
        g = c_rev + a_rev * g_next[None, :, :]

        gB = tl.sum(g * B_t[:, None, :], axis=2)
        ah = hs - b  # a_t * h_{t-1}
        g_ah = g * ah
        ddelta = x_t * gB + tl.sum(g_ah * A_t[None, :, :], axis=2)
        dA_acc += tl.sum(g_ah * delta[:, :, None], axis=0)
        dx_t = delta * gB
        if HAS_D:
            dx_t += D_t[None, :] * dout
            dD_acc += tl.sum(dout * x_t, axis=0)
        tl.store(dx + o_td, dx_t.to(dx.dtype.element_ty), mask=m_td)
        if SOFTPLUS:
            ddelta = ddelta * tl.sigmoid(v)
        tl.store(ddt + o_td, ddelta, mask=m_td)
        tl.atomic_add(dB + o_tn, tl.sum(g * (delta * x_t)[:, :, None], axis=1), mask=m_tn)
        tl.atomic_add(dC + o_tn, tl.sum(dout[:, :, None] * hs, axis=1), mask=m_tn)

        first = (r == 0)[:, None, None]
        g_next = tl.sum(tl.where(first, g, 0.0), axis=0)
        dh_first = tl.sum(tl.where(first, a * g, 0.0), axis=0)
    tl.store(dA_part + state_off + o_dn, dA_acc, mask=m_dn)
    if HAS_D:
        tl.store(dD_part + i_s.to(tl.int64) * D + o_d, dD_acc, mask=m_d)
    if n_tiles == 0:
        dh_first = g_next
    tl.store(dh0 + state_off + o_dn, dh_first, mask=m_dn)


@triton.jit
def _step_kernel(
    x, dt, A, Bm, Cm, Dp, z, dt_bias, state, y,
    D, N,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    BD: tl.constexpr, BN: tl.constexpr,
):
    i_d, i_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    o_d = i_d * BD + tl.arange(0, BD)
    o_n = tl.arange(0, BN)
    m_d, m_n = o_d < D, o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    x_t = tl.load(x + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    v = tl.load(dt + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    delta = _step_size(v, SOFTPLUS)
    A_t = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    B_t = tl.load(Bm + i_b * N + o_n, mask=m_n, other=0.0).to(tl.float32)
    C_t = tl.load(Cm + i_b * N + o_n, mask=m_n, other=0.0).to(tl.float32)
    h = tl.load(state + i_b * D * N + o_dn, mask=m_dn, other=0.0)
    h = tl.exp(delta[:, None] * A_t) * h + (delta * x_t)[:, None] * B_t[None, :]
    tl.store(state + i_b * D * N + o_dn, h, mask=m_dn)
    out = tl.sum(h * C_t[None, :], axis=1)
    if HAS_D:
        out += tl.load(Dp + o_d, mask=m_d, other=0.0).to(tl.float32) * x_t
    if HAS_Z:
        z_t = tl.load(z + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
        out *= z_t * tl.sigmoid(z_t)
    tl.store(y + i_b * D + o_d, out.to(y.dtype.element_ty), mask=m_d)


def _tiles(batch: int, T: int, cu_seqlens: torch.Tensor | None, bt: int) -> tuple[int, torch.Tensor | None, int]:
    """(number of sequences, per-sequence first tile index or None, total tiles)."""
    if cu_seqlens is None:
        return batch, None, batch * triton.cdiv(T, bt)
    counts = (cu_seqlens[1:] - cu_seqlens[:-1] + bt - 1) // bt
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return cu_seqlens.numel() - 1, offsets[:-1].contiguous(), int(offsets[-1])


def _c(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, softplus, h0, output_final_state, cu_seqlens, save):
        x, dt, A, B, C, D, z, dt_bias, h0 = map(_c, (x, dt, A, B, C, D, z, dt_bias, h0))
        batch, T, dim = x.shape
        N = A.shape[1]
        bt, bd = BLOCK_T, FWD_BLOCK_D  # read at call time (tests shrink them for the interpreter)
        n_seq, tile_offsets, n_tiles = _tiles(batch, T, cu_seqlens, bt)
        y = torch.empty_like(x)
        hT = x.new_empty(n_seq, dim, N, dtype=torch.float32) if output_final_state else None
        ckpt = x.new_empty(n_tiles, dim, N, dtype=torch.float32) if save else None
        grid = (triton.cdiv(dim, bd), n_seq)
        _fwd_kernel[grid](
            x, dt, A, B, C, D, z, dt_bias, y, h0, hT, ckpt, cu_seqlens, tile_offsets, T, dim, N,
            SOFTPLUS=softplus, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
            HAS_H0=h0 is not None, STORE_HT=output_final_state, SAVE=save, VARLEN=cu_seqlens is not None,
            BT=bt, BD=bd, BN=triton.next_power_of_2(N), num_warps=FWD_WARPS,
        )
        if save:
            ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, ckpt, cu_seqlens, tile_offsets)
            ctx.softplus, ctx.n_seq, ctx.has_h0, ctx.block_t = softplus, n_seq, h0 is not None, bt
            ctx.h0_dtype = None if h0 is None else h0.dtype
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, dt, A, B, C, D, z, dt_bias, ckpt, cu_seqlens, tile_offsets = ctx.saved_tensors
        batch, T, dim = x.shape
        N = A.shape[1]
        f32 = dict(dtype=torch.float32)
        dx = torch.empty_like(x)
        ddt = x.new_empty(batch, T, dim, **f32)
        dB = x.new_zeros(batch, T, N, **f32)
        dC = x.new_zeros(batch, T, N, **f32)
        dz = torch.empty_like(z) if z is not None else None
        dA_part = x.new_empty(ctx.n_seq, dim, N, **f32)
        dD_part = x.new_empty(ctx.n_seq, dim, **f32) if D is not None else None
        dh0 = x.new_empty(ctx.n_seq, dim, N, **f32)
        bt, bd = ctx.block_t, BWD_BLOCK_D
        grid = (triton.cdiv(dim, bd), ctx.n_seq)
        _bwd_kernel[grid](
            x, dt, A, B, C, D, z, dt_bias, ckpt, cu_seqlens, tile_offsets, dy.contiguous(), _c(dhT),
            dx, ddt, dB, dC, dz, dA_part, dD_part, dh0, T, dim, N,
            SOFTPLUS=ctx.softplus, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
            HAS_DHT=dhT is not None, VARLEN=cu_seqlens is not None,
            BT=bt, BD=bd, BN=triton.next_power_of_2(N), num_warps=BWD_WARPS,
        )
        dbias = ddt.sum((0, 1)).to(dt_bias.dtype) if dt_bias is not None else None
        return (
            dx, ddt.to(dt.dtype), dA_part.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            None if D is None else dD_part.sum(0).to(D.dtype), dz, dbias, None,
            dh0.to(ctx.h0_dtype) if ctx.has_h0 else None, None, None, None,
        )


def selective_scan(x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens):
    """Triton forward (and backward through autograd); arguments and shapes as in the package docstring.

    Tile-start states are saved for the backward only when a gradient will be asked for.
    """
    tensors = (x, dt, A, B, C, D, z, dt_bias, initial_state)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return _SelectiveScan.apply(
        x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens, save
    )


def selective_scan_step(x, dt, A, B, C, state, D, z, dt_bias, dt_softplus):
    """One fused decode step; ``state`` ``[B, D, N]`` float32 contiguous is updated in place."""
    if not state.is_contiguous():
        raise ValueError("state must be contiguous (it is updated in place)")
    batch, dim = x.shape
    N = A.shape[1]
    y = torch.empty_like(x)
    grid = (triton.cdiv(dim, STEP_BLOCK_D), batch)
    _step_kernel[grid](
        _c(x), _c(dt), _c(A), _c(B), _c(C), _c(D), _c(z), _c(dt_bias), state, y, dim, N,
        SOFTPLUS=dt_softplus, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        BD=STEP_BLOCK_D, BN=triton.next_power_of_2(N),
    )
    return y
