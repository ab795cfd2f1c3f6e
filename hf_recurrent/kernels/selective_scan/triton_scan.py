r"""The ``"scan"`` design of the selective-scan Triton kernels, the default: forward, backward and their launchers.

Chosen by ``DESIGN = "scan"`` in :mod:`.triton`, which holds the maths, the saved-state scheme, the dispatch and the
tuning knobs this design reads at call time (``BLOCK_T`` and ``SCAN_*``).

``"scan"`` (default). A program owns ``SCAN_*_BLOCK_D`` channels and solves each tile with ``tl.associative_scan`` on
``(a, b)`` pairs of a ``[BLOCK_T, BLOCK_D, BN]`` register tensor (the adjoint with a reverse scan, ``a_{t+1}``
formed from the next row of ``dt``); ``dB``/``dC`` are summed over channel blocks by float32 atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import _bounds, _c, _f32, _Grads, _Problem, _step_size


@triton.jit
def _combine(a1, b1, a2, b2):
    """``(a1, b1)`` then ``(a2, b2)``: ``h -> a2 (a1 h + b1) + b2``."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _scan_fwd_kernel(
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
def _scan_bwd_kernel(
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


# ----------------------------------------------------------------------------------------------------------------
# Host side.


def _scan_forward(p: _Problem, h0: torch.Tensor | None, y: torch.Tensor, hT: torch.Tensor | None,
                  ckpt: torch.Tensor | None) -> None:
    from . import triton as knobs  # the tuning knobs, read at call time (tests and the benchmark set them)

    T, dim, N = p.x.shape[1], p.x.shape[2], p.A.shape[1]
    _scan_fwd_kernel[(triton.cdiv(dim, knobs.SCAN_FWD_BLOCK_D), p.n_seq)](
        p.x, p.dt, p.A, _c(p.B), _c(p.C), p.D, p.z, p.dt_bias, y, h0, hT, ckpt, p.cu_seqlens, p.tile_offsets, T,
        dim, N,
        HAS_H0=h0 is not None, STORE_HT=hT is not None, SAVE=ckpt is not None, BT=p.block_t, BD=knobs.SCAN_FWD_BLOCK_D,
        BN=triton.next_power_of_2(N), num_warps=knobs.SCAN_FWD_WARPS, **p.flags(),
    )


def _scan_backward(p: _Problem, ckpt: torch.Tensor, dy: torch.Tensor, dhT: torch.Tensor | None) -> _Grads:
    from . import triton as knobs  # the tuning knobs, read at call time (tests and the benchmark set them)

    batch, T, dim = p.x.shape
    N = p.A.shape[1]
    g = _Grads(
        dx=torch.empty_like(p.x), ddt=_f32(p, batch, T, dim), dA=_f32(p, p.n_seq, dim, N),
        dB=p.x.new_zeros(batch, T, N, dtype=torch.float32), dC=p.x.new_zeros(batch, T, N, dtype=torch.float32),
        dD=_f32(p, p.n_seq, dim) if p.D is not None else None, dz=torch.empty_like(p.z) if p.z is not None else None,
        dh0=_f32(p, p.n_seq, dim, N),
    )
    _scan_bwd_kernel[(triton.cdiv(dim, knobs.SCAN_BWD_BLOCK_D), p.n_seq)](
        p.x, p.dt, p.A, _c(p.B), _c(p.C), p.D, p.z, p.dt_bias, ckpt, p.cu_seqlens, p.tile_offsets, dy, dhT,
        g.dx, g.ddt, g.dB, g.dC, g.dz, g.dA, g.dD, g.dh0, T, dim, N,
        HAS_DHT=dhT is not None, BT=p.block_t, BD=knobs.SCAN_BWD_BLOCK_D, BN=triton.next_power_of_2(N),
        num_warps=knobs.SCAN_BWD_WARPS, **p.flags(),
    )
    return g
