r"""Triton kernels for chunked gated linear attention, forward and backward.

Maths (per head; see the package docstring): ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.

The sequence is cut into chunks of ``BT = 64`` tokens; inside a chunk ``G_t = sum_{s <= t} g_s`` is the cumulative
log decay from the chunk start (float32). With ``h`` the state entering the chunk and ``L`` its last row:

.. math::

    o_i = \mathrm{scale}\,\Big[(q_i \odot e^{G_i})\, h + \sum_{j \le i} A_{ij} v_j\Big], \qquad
    A_{ij} = \sum_k q_{ik} k_{jk} e^{G_{ik} - G_{jk}},

    h' = \mathrm{diag}(e^{G_L})\, h + \sum_j (k_j \odot e^{G_L - G_j})^\top v_j .

Every exponent is a difference ``G_a - G_b`` with ``a >= b`` (``<= 0``): nothing overflows, whatever the decay.
For vector decay ``A`` is built in sub-chunks of ``BC = 16`` rows: between sub-chunks through a reference row ``r``
between them, ``e^{G_i - G_j} = e^{G_i - G_r} e^{G_r - G_j}`` (both factors ``<= 1``, one matrix product); inside a
sub-chunk element by element. Scalar decay (one ``g`` per head) needs no sub-chunks: ``A = (q k^T) \odot e^{G_i - G_j}``.

Backward, with ``dh'`` the gradient of the state leaving the chunk (a reverse scan over chunks,
``dh = diag(e^{G_L}) dh' + scale \sum_i (q_i \odot e^{G_i})^\top do_i``) and ``dA_{ij} = do_i \cdot v_j``:

.. math::

    dq_i = \mathrm{scale}\Big[\sum_{j \le i} dA_{ij}\, k_j \odot e^{G_i - G_j} + e^{G_i} \odot (do_i h^\top)\Big], \quad
    dk_j = \mathrm{scale} \sum_{i \ge j} dA_{ij}\, q_i \odot e^{G_i - G_j} + e^{G_L - G_j} \odot (v_j\, dh'^\top),

    dv_j = \mathrm{scale} \sum_{i \ge j} A_{ij}\, do_i + (k_j \odot e^{G_L - G_j})\, dh', \quad
    dG_t = q_t \odot dq_t - k_t \odot dk_t + [t = L] \textstyle\sum_v (dh' \odot h')_{\cdot v},

and ``dg_t = \sum_{s \ge t} dG_s`` inside the chunk (summed over keys for scalar decay).

All sequences, padded batch or packed (``cu_seqlens``), are handled as packed: tensors are viewed as
``[total tokens, H, D]`` and chunks never cross a sequence boundary. States between chunks are stored in the input
dtype (float32 for float16/float32 inputs) and accumulated in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import triton_interpreting

BT = 64  # chunk length
BC = 16  # sub-chunk length (vector decay)

# log-decay kinds (constexpr DECAY)
_NONE, _SCALAR, _VECTOR = 0, 1, 2

# Launch settings tuned on the first call per shape; one setting under the CPU interpreter. Every tuned kernel only
# writes its outputs (no accumulation into them), so the trial runs leave no trace.
_CONFIGS = (
    [triton.Config({})]
    if triton_interpreting()
    else [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (1, 2)]
)
_KEY = ["H", "K", "V", "DECAY"]


@triton.jit
def _tile(base, row0, row_end, stride, col0, ncols, R: tl.constexpr, C: tl.constexpr):
    """``[R, C]`` tile of rows ``row0 + arange(R)`` (zero at and past ``row_end``) and columns ``col0 + arange(C)``."""
    r = row0 + tl.arange(0, R)
    c = col0 + tl.arange(0, C)
    m = (r < row_end)[:, None] & (c < ncols)[None, :]
    return tl.load(base + r.to(tl.int64)[:, None] * stride + c[None, :], mask=m, other=0.0)


@triton.jit
def _row(base, row, row_end, stride, col0, ncols, C: tl.constexpr):
    """Row ``row`` (zero if ``row >= row_end``), columns ``col0 + arange(C)``."""
    c = col0 + tl.arange(0, C)
    return tl.load(base + row.to(tl.int64) * stride + c, mask=(c < ncols) & (row < row_end), other=0.0)


@triton.jit
def _vec(base, row0, row_end, stride, R: tl.constexpr):
    """``[R]`` entries of rows ``row0 + arange(R)`` (zero at and past ``row_end``), one column."""
    r = row0 + tl.arange(0, R)
    return tl.load(base + r.to(tl.int64) * stride, mask=r < row_end, other=0.0)


@triton.jit
def _state_ptrs(base, idx, i_h, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, kk, vv):
    """Pointers to block ``(kk, vv)`` of state ``idx`` of head ``i_h`` in a ``[*, H, K, V]`` tensor."""
    return base + (idx * H + i_h).to(tl.int64) * (K * V) + kk[:, None] * V + vv[None, :]


@triton.jit
def _chunk_cumsum_kernel(
    x, y, cu_seqlens, chunk_indices, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
    REVERSE: tl.constexpr,
):
    """Cumulative sum along time inside each chunk (``REVERSE``: from the chunk end); ``x, y`` ``[tokens, H, D]``."""
    i_t, i_h = tl.program_id(0), tl.program_id(1)
    i_n, i_c = tl.load(chunk_indices + 2 * i_t), tl.load(chunk_indices + 2 * i_t + 1)
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    t0 = bos + i_c * BT
    r = t0 + tl.arange(0, BT)
    c = tl.arange(0, BD)
    m = (r < eos)[:, None] & (c < D)[None, :]
    off = (r.to(tl.int64) * H + i_h)[:, None] * D + c[None, :]
    b_x = tl.load(x + off, mask=m, other=0.0).to(tl.float32)
    b_y = tl.cumsum(b_x, axis=0)
    if REVERSE:
        b_y = tl.sum(b_x, axis=0)[None, :] - b_y + b_x
    tl.store(y + off, b_y.to(y.dtype.element_ty), mask=m)


@triton.autotune(_CONFIGS, key=_KEY)
@triton.jit
def _fwd_h_kernel(
    k, v, G, h0, hs, ht, cu_seqlens, chunk_offsets,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DECAY: tl.constexpr, HAS_H0: tl.constexpr,
):
    """States entering each chunk, then the final one: ``hs[off_n + c]`` for ``c = 0..NT_n`` and ``ht`` (float32)."""
    i_k, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    nt = tl.cdiv(eos - bos, BT)
    i_s0 = tl.load(chunk_offsets + i_n) + i_n
    kk = i_k * BK + tl.arange(0, BK)
    vv = i_v * BV + tl.arange(0, BV)
    m_kv = (kk < K)[:, None] & (vv < V)[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        b_h += tl.load(_state_ptrs(h0, i_n, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
    for i_c in range(nt):
        tl.store(_state_ptrs(hs, i_s0 + i_c, i_h, H, K, V, kk, vv), b_h.to(hs.dtype.element_ty), mask=m_kv)
        t0 = bos + i_c * BT
        last = tl.minimum(t0 + BT, eos) - 1
        b_k = _tile(k + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        b_v = _tile(v + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        if DECAY == 2:
            b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            g_last = _row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK)
            b_k = b_k * tl.exp(g_last[None, :] - b_g)
            b_h *= tl.exp(g_last)[:, None]
        elif DECAY == 1:
            b_g = _vec(G + i_h, t0, eos, H, BT)
            g_last = tl.load(G + last.to(tl.int64) * H + i_h)
            b_k = b_k * tl.exp(g_last - b_g)[:, None]
            b_h *= tl.exp(g_last)
        b_h += tl.dot(tl.trans(b_k.to(b_v.dtype)), b_v)
    tl.store(_state_ptrs(hs, i_s0 + nt, i_h, H, K, V, kk, vv), b_h.to(hs.dtype.element_ty), mask=m_kv)
    tl.store(_state_ptrs(ht, i_n, i_h, H, K, V, kk, vv), b_h, mask=m_kv)


@triton.autotune(_CONFIGS, key=_KEY)
@triton.jit
def _fwd_o_kernel(
    q, k, v, G, hs, o, cu_seqlens, chunk_indices, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, DECAY: tl.constexpr,
):
    """Output of one sub-chunk of ``BC`` rows: intra-chunk attention plus the contribution of the entering state."""
    NS: tl.constexpr = BT // BC
    i_s, i_h = tl.program_id(0), tl.program_id(1)
    i_t, i_a = i_s // NS, i_s % NS
    i_n, i_c = tl.load(chunk_indices + 2 * i_t), tl.load(chunk_indices + 2 * i_t + 1)
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    t0 = bos + i_c * BT
    ob = i_a * BC
    r0 = t0 + ob
    if r0 >= eos:
        return
    i_hs = tl.load(chunk_offsets + i_n) + i_n + i_c
    rb = tl.arange(0, BC)
    rt = tl.arange(0, BT)
    dt = v.dtype.element_ty

    b_A = tl.zeros([BC, BT], dtype=tl.float32)  # A[ob + i, j]
    for i_k in range(tl.cdiv(K, BK)):
        b_q = _tile(q + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
        b_k = _tile(k + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        if DECAY == 2:
            b_gq = _tile(G + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
            if i_a > 0:
                # earlier sub-chunks, through the reference row r0 - 1
                g_r = _row(G + i_h * K, r0 - 1, eos, H * K, i_k * BK, K, BK)
                b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
                b_qf = b_q * tl.exp(tl.minimum(b_gq - g_r[None, :], 0.0))
                b_kf = tl.where((rt < ob)[:, None], b_k * tl.exp(tl.minimum(g_r[None, :] - b_g, 0.0)), 0.0)
                b_A += tl.dot(b_qf.to(dt), tl.trans(b_kf.to(dt)))
            for j in range(BC):
                # diagonal sub-chunk, column ob + j, element by element
                b_kj = _row(k + i_h * K, r0 + j, eos, H * K, i_k * BK, K, BK).to(tl.float32)
                b_gj = _row(G + i_h * K, r0 + j, eos, H * K, i_k * BK, K, BK)
                b_e = tl.where((rb >= j)[:, None], tl.exp(tl.minimum(b_gq - b_gj[None, :], 0.0)), 0.0)
                b_s = tl.sum(b_q * b_kj[None, :] * b_e, axis=1)
                b_A += tl.where(rt[None, :] == ob + j, b_s[:, None], 0.0)
        else:
            b_A += tl.dot(b_q, tl.trans(b_k))
    if DECAY == 1:
        b_gq = _vec(G + i_h, r0, eos, H, BC)
        b_g = _vec(G + i_h, t0, eos, H, BT)
        m_A = (ob + rb)[:, None] >= rt[None, :]
        b_A = tl.where(m_A, b_A * tl.exp(tl.minimum(b_gq[:, None] - b_g[None, :], 0.0)), 0.0)
    elif DECAY == 0:
        b_A = tl.where((ob + rb)[:, None] >= rt[None, :], b_A, 0.0)

    for i_v in range(tl.cdiv(V, BV)):
        vv = i_v * BV + tl.arange(0, BV)
        b_v = _tile(v + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        b_o = tl.dot(b_A.to(dt), b_v)
        for i_k in range(tl.cdiv(K, BK)):
            kk = i_k * BK + tl.arange(0, BK)
            b_q = _tile(q + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
            if DECAY == 2:
                b_q = b_q * tl.exp(_tile(G + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK))
            elif DECAY == 1:
                b_q = b_q * tl.exp(b_gq)[:, None]
            m_kv = (kk < K)[:, None] & (vv < V)[None, :]
            b_h = tl.load(_state_ptrs(hs, i_hs, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
            b_o += tl.dot(b_q.to(dt), b_h.to(dt))
        r = r0 + rb
        p_o = o + (r.to(tl.int64) * H + i_h)[:, None] * V + vv[None, :]
        tl.store(p_o, (b_o * scale).to(o.dtype.element_ty), mask=(r < eos)[:, None] & (vv < V)[None, :])


@triton.autotune(_CONFIGS, key=_KEY)
@triton.jit
def _bwd_dh_kernel(
    q, do, G, dht, dhs, dh0, cu_seqlens, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DECAY: tl.constexpr, HAS_DHT: tl.constexpr,
):
    """Reverse scan of state gradients: ``dhs[off_n + c]`` is the gradient of the state leaving chunk ``c``."""
    i_k, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    nt = tl.cdiv(eos - bos, BT)
    i_s0 = tl.load(chunk_offsets + i_n)
    kk = i_k * BK + tl.arange(0, BK)
    vv = i_v * BV + tl.arange(0, BV)
    m_kv = (kk < K)[:, None] & (vv < V)[None, :]
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        b_dh += tl.load(_state_ptrs(dht, i_n, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
    for i in range(nt):
        i_c = nt - 1 - i
        tl.store(_state_ptrs(dhs, i_s0 + i_c, i_h, H, K, V, kk, vv), b_dh.to(dhs.dtype.element_ty), mask=m_kv)
        t0 = bos + i_c * BT
        last = tl.minimum(t0 + BT, eos) - 1
        b_q = _tile(q + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK) * scale
        b_do = _tile(do + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        if DECAY == 2:
            b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            g_last = _row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK)
            b_q = b_q * tl.exp(b_g)
            b_dh *= tl.exp(g_last)[:, None]
        elif DECAY == 1:
            b_g = _vec(G + i_h, t0, eos, H, BT)
            g_last = tl.load(G + last.to(tl.int64) * H + i_h)
            b_q = b_q * tl.exp(b_g)[:, None]
            b_dh *= tl.exp(g_last)
        b_dh += tl.dot(tl.trans(b_q.to(b_do.dtype)), b_do)
    tl.store(_state_ptrs(dh0, i_n, i_h, H, K, V, kk, vv), b_dh, mask=m_kv)


@triton.autotune(_CONFIGS, key=_KEY)
@triton.jit
def _bwd_kernel(
    q, k, v, G, hs, do, dhs, dq, dk, dv, dG, cu_seqlens, chunk_indices, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, DECAY: tl.constexpr,
):
    """``dq, dk, dv`` and ``dG`` (before the reverse cumulative sum) of one sub-chunk of ``BC`` rows."""
    NS: tl.constexpr = BT // BC
    i_s, i_h = tl.program_id(0), tl.program_id(1)
    i_t, i_a = i_s // NS, i_s % NS
    i_n, i_c = tl.load(chunk_indices + 2 * i_t), tl.load(chunk_indices + 2 * i_t + 1)
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    t0 = bos + i_c * BT
    ob = i_a * BC
    r0 = t0 + ob
    if r0 >= eos:
        return
    last = tl.minimum(t0 + BT, eos) - 1  # last row of the chunk
    e = tl.minimum(r0 + BC, eos) - 1  # last row of this sub-chunk
    i_hs = tl.load(chunk_offsets + i_n) + i_n + i_c  # state entering the chunk; + 1: leaving it
    i_dh = tl.load(chunk_offsets + i_n) + i_c
    rb = tl.arange(0, BC)
    rt = tl.arange(0, BT)
    r = r0 + rb
    dt = v.dtype.element_ty

    # dA[ob + i, j] (rows of this sub-chunk) and dA[i, ob + j] (its columns), causal
    b_dAr = tl.zeros([BC, BT], dtype=tl.float32)
    b_dAc = tl.zeros([BT, BC], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        b_do_a = _tile(do + i_h * V, r0, eos, H * V, i_v * BV, V, BC, BV)
        b_v_a = _tile(v + i_h * V, r0, eos, H * V, i_v * BV, V, BC, BV)
        b_do = _tile(do + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        b_v = _tile(v + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        b_dAr += tl.dot(b_do_a, tl.trans(b_v))
        b_dAc += tl.dot(b_do, tl.trans(b_v_a))
    m_r = (ob + rb)[:, None] >= rt[None, :]
    m_c = rt[:, None] >= (ob + rb)[None, :]
    b_dAr = tl.where(m_r, b_dAr, 0.0)
    b_dAc = tl.where(m_c, b_dAc, 0.0)
    if DECAY == 1:
        b_gq = _vec(G + i_h, r0, eos, H, BC)
        b_g = _vec(G + i_h, t0, eos, H, BT)
        g_last = tl.load(G + last.to(tl.int64) * H + i_h)
        b_dAr = b_dAr * tl.exp(tl.minimum(b_gq[:, None] - b_g[None, :], 0.0))
        b_dAc = b_dAc * tl.exp(tl.minimum(b_g[:, None] - b_gq[None, :], 0.0))

    b_Ac = tl.zeros([BT, BC], dtype=tl.float32)  # A[i, ob + j]; for vector decay only rows after the sub-chunk
    b_Ad = tl.zeros([BC, BC], dtype=tl.float32)  # A[ob + i, ob + j] (vector decay)
    b_dgs = tl.zeros([BC], dtype=tl.float32)  # dG (scalar decay)
    for i_k in range(tl.cdiv(K, BK)):
        kk = i_k * BK + tl.arange(0, BK)
        b_q_a = _tile(q + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
        b_k_a = _tile(k + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
        b_q = _tile(q + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        b_k = _tile(k + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        b_dqi = tl.zeros([BC, BK], dtype=tl.float32)
        b_dki = tl.zeros([BC, BK], dtype=tl.float32)
        if DECAY == 2:
            b_ga = _tile(G + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
            b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            g_last = _row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK)
            if i_a > 0:
                # columns of earlier sub-chunks, through the reference row r0 - 1
                g_r = _row(G + i_h * K, r0 - 1, eos, H * K, i_k * BK, K, BK)
                b_kf = tl.where((rt < ob)[:, None], b_k * tl.exp(tl.minimum(g_r[None, :] - b_g, 0.0)), 0.0)
                b_dqi += tl.dot(b_dAr.to(dt), b_kf.to(dt)) * tl.exp(tl.minimum(b_ga - g_r[None, :], 0.0))
            if e < last:
                # rows of later sub-chunks, through the reference row e
                g_r = _row(G + i_h * K, e, eos, H * K, i_k * BK, K, BK)
                b_qf = tl.where((t0 + rt > e)[:, None], b_q * tl.exp(tl.minimum(b_g - g_r[None, :], 0.0)), 0.0)
                b_kf = b_k_a * tl.exp(tl.minimum(g_r[None, :] - b_ga, 0.0))
                b_dki += tl.dot(tl.trans(b_dAc).to(dt), b_qf.to(dt)) * tl.exp(tl.minimum(g_r[None, :] - b_ga, 0.0))
                b_Ac += tl.dot(b_qf.to(dt), tl.trans(b_kf.to(dt)))
            for j in range(BC):
                # diagonal sub-chunk, element by element
                b_kj = _row(k + i_h * K, r0 + j, eos, H * K, i_k * BK, K, BK).to(tl.float32)
                b_gj = _row(G + i_h * K, r0 + j, eos, H * K, i_k * BK, K, BK)
                b_e = tl.where((rb >= j)[:, None], tl.exp(tl.minimum(b_ga - b_gj[None, :], 0.0)), 0.0)
                b_Ad += tl.where(rb[None, :] == j, tl.sum(b_q_a * b_kj[None, :] * b_e, axis=1)[:, None], 0.0)
                b_c = tl.sum(tl.where(rt[None, :] == ob + j, b_dAr, 0.0), axis=1)  # dA[ob + i, ob + j]
                b_dqi += b_c[:, None] * b_kj[None, :] * b_e
                b_dkj = tl.sum(b_c[:, None] * b_q_a * b_e, axis=0)
                b_dki += tl.where(rb[:, None] == j, b_dkj[None, :], 0.0)
        else:
            b_dqi += tl.dot(b_dAr.to(dt), b_k)
            b_dki += tl.dot(tl.trans(b_dAc).to(dt), b_q)
            b_Ac += tl.dot(b_q, tl.trans(b_k_a))

        # contributions of the entering state h and of the gradient dh' of the leaving one
        b_dqh = tl.zeros([BC, BK], dtype=tl.float32)
        b_dkh = tl.zeros([BC, BK], dtype=tl.float32)
        b_x = tl.zeros([BK], dtype=tl.float32)
        for i_v in range(tl.cdiv(V, BV)):
            vv = i_v * BV + tl.arange(0, BV)
            m_kv = (kk < K)[:, None] & (vv < V)[None, :]
            b_do_a = _tile(do + i_h * V, r0, eos, H * V, i_v * BV, V, BC, BV)
            b_v_a = _tile(v + i_h * V, r0, eos, H * V, i_v * BV, V, BC, BV)
            b_h = tl.load(_state_ptrs(hs, i_hs, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
            b_dh = tl.load(_state_ptrs(dhs, i_dh, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
            b_dqh += tl.dot(b_do_a, tl.trans(b_h.to(dt)))
            b_dkh += tl.dot(b_v_a, tl.trans(b_dh.to(dt)))
            if DECAY > 0:
                if last <= e:
                    b_he = tl.load(_state_ptrs(hs, i_hs + 1, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
                    b_x += tl.sum(b_he.to(tl.float32) * b_dh.to(tl.float32), axis=1)
        if DECAY == 2:
            b_dq = scale * (b_dqi + b_dqh * tl.exp(b_ga))
            b_dk = scale * b_dki + b_dkh * tl.exp(g_last[None, :] - b_ga)
        elif DECAY == 1:
            b_dq = scale * (b_dqi + b_dqh * tl.exp(b_gq)[:, None])
            b_dk = scale * b_dki + b_dkh * tl.exp(g_last - b_gq)[:, None]
        else:
            b_dq = scale * (b_dqi + b_dqh)
            b_dk = scale * b_dki + b_dkh
        m_rk = (r < eos)[:, None] & (kk < K)[None, :]
        p_qk = (r.to(tl.int64) * H + i_h)[:, None] * K + kk[None, :]
        tl.store(dq + p_qk, b_dq.to(dq.dtype.element_ty), mask=m_rk)
        tl.store(dk + p_qk, b_dk.to(dk.dtype.element_ty), mask=m_rk)
        if DECAY > 0:
            b_dg = b_q_a * b_dq - b_k_a * b_dk + tl.where((r == last)[:, None], b_x[None, :], 0.0)
            if DECAY == 2:
                tl.store(dG + p_qk, b_dg, mask=m_rk)
            else:
                b_dgs += tl.sum(b_dg, axis=1)
    if DECAY == 1:
        tl.store(dG + r.to(tl.int64) * H + i_h, b_dgs, mask=r < eos)
    if DECAY == 1:
        b_Ac = tl.where(m_c, b_Ac * tl.exp(tl.minimum(b_g[:, None] - b_gq[None, :], 0.0)), 0.0)
    elif DECAY == 0:
        b_Ac = tl.where(m_c, b_Ac, 0.0)

    for i_v in range(tl.cdiv(V, BV)):
        vv = i_v * BV + tl.arange(0, BV)
        b_do = _tile(do + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        b_dv = tl.dot(tl.trans(b_Ac).to(dt), b_do)
        if DECAY == 2:
            b_do_a = _tile(do + i_h * V, r0, eos, H * V, i_v * BV, V, BC, BV)
            b_dv += tl.dot(tl.trans(b_Ad).to(dt), b_do_a)
        b_dv *= scale
        for i_k in range(tl.cdiv(K, BK)):
            kk = i_k * BK + tl.arange(0, BK)
            b_k_a = _tile(k + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
            if DECAY == 2:
                b_ga = _tile(G + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
                g_last = _row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK)
                b_k_a = b_k_a * tl.exp(g_last[None, :] - b_ga)
            elif DECAY == 1:
                b_k_a = b_k_a * tl.exp(g_last - b_gq)[:, None]
            m_kv = (kk < K)[:, None] & (vv < V)[None, :]
            b_dh = tl.load(_state_ptrs(dhs, i_dh, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
            b_dv += tl.dot(b_k_a.to(dt), b_dh.to(dt))
        p_v = dv + (r.to(tl.int64) * H + i_h)[:, None] * V + vv[None, :]
        tl.store(p_v, b_dv.to(dv.dtype.element_ty), mask=(r < eos)[:, None] & (vv < V)[None, :])


def _block(d: int) -> int:
    """Block size covering a head dim: its next power of two (at least 16), at most 128."""
    return min(max(triton.next_power_of_2(d), 16), 128)


def _chunk_meta(B: int, T: int, cu_seqlens: torch.Tensor | None, device: torch.device):
    """``(cu_seqlens int32 [N+1], chunk_indices int32 [NT, 2] = (sequence, chunk in it), chunk_offsets int32 [N])``.

    Without ``cu_seqlens`` the batch is seen as ``B`` packed sequences of length ``T`` (no host synchronisation).
    """
    if cu_seqlens is None:
        nt = triton.cdiv(T, BT)
        cu = torch.arange(B + 1, device=device, dtype=torch.int32) * T
        seq = torch.arange(B, device=device, dtype=torch.int32).repeat_interleave(nt)
        idx = torch.arange(nt, device=device, dtype=torch.int32).repeat(B)
        offsets = torch.arange(B, device=device, dtype=torch.int32) * nt
        return cu, torch.stack([seq, idx], dim=1).contiguous(), offsets
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    nts = [triton.cdiv(n, BT) for n in lens]
    seq = [i for i, n in enumerate(nts) for _ in range(n)]
    idx = [c for n in nts for c in range(n)]
    offsets = [0]
    for n in nts[:-1]:
        offsets.append(offsets[-1] + n)
    as_int = dict(device=device, dtype=torch.int32)
    indices = torch.tensor([seq, idx], **as_int).T.contiguous().view(-1, 2)
    return cu_seqlens.to(**as_int), indices, torch.tensor(offsets, **as_int)


def _chunk_cumsum(x: torch.Tensor, cu: torch.Tensor, indices: torch.Tensor, reverse: bool, dtype) -> torch.Tensor:
    """Cumulative sum over time inside chunks of ``x`` ``[tokens, H, D]`` (from the chunk end if ``reverse``)."""
    _, H, D = x.shape
    y = torch.empty_like(x, dtype=dtype)
    _chunk_cumsum_kernel[(indices.shape[0], H)](
        x, y, cu, indices, H=H, D=D, BD=max(triton.next_power_of_2(D), 16), BT=BT, REVERSE=reverse
    )
    return y


class _ChunkGLA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens):
        B, T, H, K = q.shape
        V = v.shape[-1]
        dt = v.dtype
        q, k, v = (x.to(dt).reshape(B * T, H, -1).contiguous() for x in (q, k, v))
        cu, indices, offsets = _chunk_meta(B, T, cu_seqlens, q.device)
        N, NT = cu.numel() - 1, indices.shape[0]
        decay = _NONE if log_decay is None else (_SCALAR if log_decay.dim() == 3 else _VECTOR)
        if decay == _NONE:
            G = q.new_empty(1, dtype=torch.float32)
        else:
            G = _chunk_cumsum(log_decay.reshape(B * T, H, -1), cu, indices, False, torch.float32)
        h0 = None if initial_state is None else initial_state.float().contiguous()
        hs = q.new_empty(NT + N, H, K, V, dtype=torch.bfloat16 if dt == torch.bfloat16 else torch.float32)
        ht = q.new_empty(N, H, K, V, dtype=torch.float32)
        BK, BV = _block(K), _block(V)
        _fwd_h_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BV), N * H)](
            k, v, G, h0, hs, ht, cu, offsets, H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, DECAY=decay, HAS_H0=h0 is not None
        )
        o = torch.empty_like(v)
        _fwd_o_kernel[(NT * (BT // BC), H)](
            q, k, v, G, hs, o, cu, indices, offsets, scale, H=H, K=K, V=V, BT=BT, BC=BC, BK=BK, BV=BV, DECAY=decay
        )
        ctx.save_for_backward(q, k, v, G, hs, cu, indices, offsets)
        ctx.meta = (B, T, scale, decay, log_decay.dtype if log_decay is not None else None, h0 is not None)
        ctx.set_materialize_grads(False)
        return o.view(B, T, H, V), (ht if output_final_state else None)

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, G, hs, cu, indices, offsets = ctx.saved_tensors
        B, T, scale, decay, g_dtype, has_h0 = ctx.meta
        TT, H, K = q.shape
        V = v.shape[-1]
        N, NT = cu.numel() - 1, indices.shape[0]
        do = torch.zeros_like(v) if do is None else do.to(v.dtype).reshape(TT, H, V).contiguous()
        dht = None if dht is None else dht.float().contiguous()
        BK, BV = _block(K), _block(V)
        dhs = q.new_empty(NT, H, K, V, dtype=hs.dtype)
        dh0 = q.new_empty(N, H, K, V, dtype=torch.float32)
        _bwd_dh_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BV), N * H)](
            q, do, G, dht, dhs, dh0, cu, offsets, scale,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, DECAY=decay, HAS_DHT=dht is not None,
        )
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dG = None if decay == _NONE else torch.empty_like(G)
        _bwd_kernel[(NT * (BT // BC), H)](
            q, k, v, G, hs, do, dhs, dq, dk, dv, dG, cu, indices, offsets, scale,
            H=H, K=K, V=V, BT=BT, BC=BC, BK=BK, BV=BV, DECAY=decay,
        )
        dg = None
        if decay != _NONE:
            dg = _chunk_cumsum(dG, cu, indices, True, g_dtype)
            dg = dg.view(B, T, H) if decay == _SCALAR else dg.view(B, T, H, K)
        return (
            dq.view(B, T, H, K), dk.view(B, T, H, K), dv.view(B, T, H, V), dg, None,
            dh0 if has_h0 else None, None, None,
        )


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked gated linear attention with Triton kernels, differentiable in every tensor input.

    ``q, k`` ``[B, T, H, K]``, ``v`` ``[B, T, H, V]``, ``log_decay`` ``[B, T, H, K]`` / ``[B, T, H]`` / None,
    ``initial_state`` ``[N, H, K, V]``, ``cu_seqlens`` int ``[N + 1]`` (then ``B == 1``). Returns ``o``
    ``[B, T, H, V]`` in ``v``'s dtype and, if ``output_final_state``, the final state ``[N, H, K, V]`` float32.
    """
    return _ChunkGLA.apply(q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens)
