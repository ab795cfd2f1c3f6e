r"""Triton kernels for chunked gated linear attention, forward and backward.

Maths (per head; see the package docstring): ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.

The sequence is cut into chunks of ``BT = 64`` tokens; inside a chunk ``G_t = sum_{s <= t} g_s`` is the cumulative
log decay from the chunk start (float32). With ``h`` the state entering the chunk and ``L`` its last row:

.. math::

    o_i = \mathrm{scale}\,\Big[(q_i \odot e^{G_i})\, h + \sum_{j \le i} A_{ij} v_j\Big], \qquad
    A_{ij} = \sum_k q_{ik} k_{jk} e^{G_{ik} - G_{jk}},

    h' = \mathrm{diag}(e^{G_L})\, h + \sum_j (k_j \odot e^{G_L - G_j})^\top v_j .

For vector decay ``A`` is a matrix product through a reference value ``c`` per key,
``e^{G_i - G_j} = e^{G_i - c} e^{c - G_j}``. Path 1 (every chunk of usual gates): ``c`` is the mid-range of the
chunk, ``(G_first + G_last) / 2``, so each factor lies within ``e^{+-s/2}`` with ``s`` the chunk's decay spread
``max_k (G_first - G_last)`` (computed with the cumulative sum, one number per chunk and head); the chunk takes this
path when ``s <= FAST_SPREAD`` (60, or 8 for float16 operands), where no factor can overflow or underflow, and
``A = (q e^{G - c})(k e^{c - G})^T`` is one product, as for scalar decay. Path 2 (the other chunks, any decay):
sub-chunks of ``BC = 16`` rows; between sub-chunks through a reference row ``r`` between them (both factors ``<= 1``,
one product); inside a sub-chunk element by element, every exponent a difference ``G_a - G_b`` with ``a >= b``
(``<= 0``). Path 1 is the whole-chunk kernels (one program per chunk and head, also for scalar and no decay), path 2
the ``*_sub_kernel`` launches; each skips the chunks of the other. Scalar decay (one ``g`` per head):
``A = (q k^T) \odot e^{G_i - G_j}``.

Backward, with ``dh'`` the gradient of the state leaving the chunk (a reverse scan over chunks,
``dh = diag(e^{G_L}) dh' + scale \sum_i (q_i \odot e^{G_i})^\top do_i``) and ``dA_{ij} = do_i \cdot v_j``:

.. math::

    dq_i = \mathrm{scale}\Big[\sum_{j \le i} dA_{ij}\, k_j \odot e^{G_i - G_j} + e^{G_i} \odot (do_i h^\top)\Big], \quad
    dk_j = \mathrm{scale} \sum_{i \ge j} dA_{ij}\, q_i \odot e^{G_i - G_j} + e^{G_L - G_j} \odot (v_j\, dh'^\top),

    dv_j = \mathrm{scale} \sum_{i \ge j} A_{ij}\, do_i + (k_j \odot e^{G_L - G_j})\, dh', \quad
    dG_t = q_t \odot dq_t - k_t \odot dk_t + [t = L] \textstyle\sum_v (dh' \odot h')_{\cdot v},

and ``dg_t = \sum_{s \ge t} dG_s`` inside the chunk (summed over keys for scalar decay), computed by the kernels
that compute ``dq, dk``. On path 1, ``A`` (as it entered the forward's product, in ``v``'s dtype) is stored by the
forward for ``dv``; ``dq, dk, dg`` (one program per key tile for vector decay) and ``dv`` (one per value tile) are two
launches.

All sequences, padded batch or packed (``cu_seqlens``), are handled as packed: tensors are viewed as
``[total tokens, H, D]`` and chunks never cross a sequence boundary. States between chunks are stored in the input
dtype (float32 for float16/float32 inputs) and accumulated in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import autotuning, triton_interpreting

BT = 64  # chunk length
BC = 16  # sub-chunk length of the vector-decay fallback (chunks of strong decay)
STATE_BK, STATE_BV = 64, 64  # state tile of the two scans over chunks (smaller tiles: more programs in flight)

# log-decay kinds (constexpr DECAY)
_NONE, _SCALAR, _VECTOR = 0, 1, 2

# Launch settings tuned on the first call per shape; one setting under the CPU interpreter. Every tuned kernel only
# writes its outputs (no accumulation into them), so the trial runs leave no trace.
_CONFIGS = (
    [triton.Config({})]
    if triton_interpreting()
    else [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (1, 2)][: None if autotuning() else 1]
)
_KEY = ["H", "K", "V", "DECAY"]
_KEY_STATE = _KEY + ["BK", "BV"]
_KEY_SUB = ["H", "K", "V"]  # the sub-chunk kernels are vector decay only (Triton >= 3.7 checks keys are arguments)
# Output and gradient kernels (whole chunks of 64 rows) also tune their key/value tiles (BK, BV): wider float32
# tiles spill registers. Under the interpreter, 16-wide tiles: several tiles per head dim, so the loops over them are
# tested. On a GPU every candidate is kept and ``_prune_chunk`` picks (one of) them per call shape and dtype.
_CHUNK_CANDIDATES = [
    triton.Config({"BK": bk, "BV": bv}, num_warps=w, num_stages=s)
    for bk, bv, w, s in (
        (32, 32, 4, 2), (32, 64, 4, 2), (64, 64, 4, 2), (32, 32, 8, 1), (32, 64, 8, 1), (64, 64, 8, 1), (64, 64, 8, 2),
        (64, 128, 8, 2),
    )
]
_CHUNK_CONFIGS = [triton.Config({"BK": 16, "BV": 16})] if triton_interpreting() else _CHUNK_CANDIDATES
# The sub-chunk kernels of vector decay (16 rows at a time; chunks of strong decay only, rarely taken): one setting.
_SUB_CONFIGS = (
    [triton.Config({"BK": 16, "BV": 16})]
    if triton_interpreting()
    else [triton.Config({"BK": 32, "BV": 64}, num_warps=8, num_stages=1)]
)


def _prune_chunk(configs, named_args, **kwargs):
    """Tiles no wider than needed; the first of those only, unless autotuning.

    The 16-bit output kernel without ``STORE_A`` (a forward that records no gradient: prefill, evaluation) runs on 8
    warps only: on an H200 with Triton 3.6 that specialisation built for 4 warps returned wrong outputs (0.25-0.87
    relative error, K 64-256), where 8 warps, the ``STORE_A`` specialisation, float32 and the CPU interpreter are
    right to rounding (``tests/gpu/test_linear_attention_configs_gpu.py`` forces every candidate).
    """
    bk_cap = max(_block(kwargs["K"]), 32)
    bv_cap = max(_block(kwargs["V"]), 32)
    kept = [c for c in configs if c.kwargs["BK"] <= bk_cap and c.kwargs["BV"] <= bv_cap]
    if kwargs.get("STORE_A") is False and named_args["k"].dtype != torch.float32:
        kept = [c for c in kept if c.num_warps == 8]
    kept = kept or [c for c in configs if c.num_warps == 8][:1]
    return kept if autotuning() else kept[:1]


@triton.jit
def _dot(a, b):
    """``a @ b`` accumulated in float32; float32 operands multiply in full float32 (not TF32): float32 means float32."""
    if a.dtype == tl.float32:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


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
    in_rows = (c * 0 + row) < row_end  # a tensor, not a scalar: Triton 3.9's interpreter needs a bool-array mask
    return tl.load(base + row.to(tl.int64) * stride + c, mask=(c < ncols) & in_rows, other=0.0)


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
def _state_terms(do, v, hs, dhs, i_hs, i_dh, i_h, row0, row_end, kk, want_x,
                 H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, BK: tl.constexpr,
                 BV: tl.constexpr, X_ENTERING: tl.constexpr, X_LEAVING: tl.constexpr):
    r"""The state parts of a backward, for ``R`` rows from ``row0`` and the key tile ``kk``: ``(do h^T, v dh'^T, x)``
    with ``h`` the state entering the chunk (``hs[i_hs]``) and ``dh'`` the gradient of the one leaving it
    (``dhs[i_dh]``); ``x = sum_v (s \odot dh')`` over the value columns, ``s`` being ``h`` (``X_ENTERING``) or, when
    ``want_x``, the state leaving the chunk, ``hs[i_hs + 1]`` (``X_LEAVING``); zeros otherwise."""
    dt = v.dtype.element_ty
    b_dqh = tl.zeros([R, BK], dtype=tl.float32)
    b_dkh = tl.zeros([R, BK], dtype=tl.float32)
    b_x = tl.zeros([BK], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        vv = i_v * BV + tl.arange(0, BV)
        m_kv = (kk < K)[:, None] & (vv < V)[None, :]
        b_do = _tile(do + i_h * V, row0, row_end, H * V, i_v * BV, V, R, BV)
        b_v = _tile(v + i_h * V, row0, row_end, H * V, i_v * BV, V, R, BV)
        b_h = tl.load(_state_ptrs(hs, i_hs, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
        b_dh = tl.load(_state_ptrs(dhs, i_dh, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
        b_dqh += _dot(b_do, tl.trans(b_h.to(dt)))
        b_dkh += _dot(b_v, tl.trans(b_dh.to(dt)))
        if X_ENTERING:
            b_x += tl.sum(b_h.to(tl.float32) * b_dh.to(tl.float32), axis=1)
        if X_LEAVING:
            if want_x:
                b_he = tl.load(_state_ptrs(hs, i_hs + 1, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
                b_x += tl.sum(b_he.to(tl.float32) * b_dh.to(tl.float32), axis=1)
    return b_dqh, b_dkh, b_x


@triton.jit
def _chunk_cumsum_kernel(
    x, y, spread, cu_seqlens, chunk_indices, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
    SPREAD: tl.constexpr,
):
    """Cumulative sum along time inside each chunk; ``x, y`` ``[tokens, H, D]``. ``SPREAD``: also the chunk's decay
    spread ``max_d (y_first - y_last)`` into ``spread`` ``[chunks, H]`` (which path the vector-decay kernels take)."""
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
    tl.store(y + off, b_y.to(y.dtype.element_ty), mask=m)
    if SPREAD:
        # y_first - y_last = -(sum of the rows after the first); rows past the end are zero
        b_s = tl.sum(tl.where((tl.arange(0, BT) > 0)[:, None], b_x, 0.0), axis=0)
        tl.store(spread + i_t * H + i_h, tl.max(-b_s, axis=0))


@triton.jit
def _state_program(K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """``(key tile, value tile, sequence * H + head)`` of a state-scan program. One flat grid axis: the last factor
    can exceed the 65535 programs a second or third axis allows (2048 one-channel heads x batch 64, GateLoop), and
    the tiles of one head stay neighbours."""
    nk, nv = tl.cdiv(K, BK), tl.cdiv(V, BV)
    pid = tl.program_id(0)
    return (pid % (nk * nv)) // nv, pid % nv, pid // (nk * nv)


@triton.autotune(_CONFIGS, key=_KEY_STATE)
@triton.jit
def _fwd_h_kernel(
    k, v, G, h0, hs, ht, cu_seqlens, chunk_offsets,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DECAY: tl.constexpr, HAS_H0: tl.constexpr,
):
    """States entering each chunk, then the final one: ``hs[off_n + c]`` for ``c = 0..NT_n`` and ``ht`` (float32)."""
    i_k, i_v, i_nh = _state_program(K, V, BK, BV)
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
        b_h += _dot(tl.trans(b_k.to(b_v.dtype)), b_v)
    tl.store(_state_ptrs(hs, i_s0 + nt, i_h, H, K, V, kk, vv), b_h.to(hs.dtype.element_ty), mask=m_kv)
    tl.store(_state_ptrs(ht, i_n, i_h, H, K, V, kk, vv), b_h, mask=m_kv)


@triton.autotune(_CHUNK_CONFIGS, key=_KEY + ["STORE_A"], prune_configs_by={"early_config_prune": _prune_chunk})
@triton.jit
def _fwd_o_kernel(
    q, k, v, G, spread, hs, o, A, cu_seqlens, chunk_indices, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DECAY: tl.constexpr, FAST_SPREAD: tl.constexpr, STORE_A: tl.constexpr,
):
    """Output of one whole chunk whose ``A`` is one matrix product (every chunk but those of vector decay with a
    spread above ``FAST_SPREAD``, left to :func:`_fwd_o_sub_kernel`): ``A`` over key tiles, then per value tile
    ``o = scale [A v + (q e^G) h]``. ``STORE_A``: also ``A`` (causal, decay applied; ``v``'s dtype, as it enters
    the product) into ``A`` ``[tokens, H, BT]`` for the backward's ``dv``."""
    i_t, i_h = tl.program_id(0), tl.program_id(1)
    if DECAY == 2:
        if tl.load(spread + i_t * H + i_h) > FAST_SPREAD:
            return
    i_n, i_c = tl.load(chunk_indices + 2 * i_t), tl.load(chunk_indices + 2 * i_t + 1)
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    t0 = bos + i_c * BT
    last = tl.minimum(t0 + BT, eos) - 1
    i_hs = tl.load(chunk_offsets + i_n) + i_n + i_c
    rt = tl.arange(0, BT)
    r = t0 + rt
    dt = v.dtype.element_ty

    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        b_q = _tile(q + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        b_k = _tile(k + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        if DECAY == 2:
            # one reference value per key, the chunk's mid-range c: factors within e^{+-spread/2}
            b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            g_c = 0.5 * (_row(G + i_h * K, t0, eos, H * K, i_k * BK, K, BK)
                         + _row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK))
            b_qf = b_q * tl.exp(tl.minimum(b_g - g_c[None, :], 0.5 * FAST_SPREAD))
            b_kf = b_k * tl.exp(tl.minimum(g_c[None, :] - b_g, 0.5 * FAST_SPREAD))
            b_A += _dot(b_qf.to(dt), tl.trans(b_kf.to(dt)))
        else:
            b_A += _dot(b_q, tl.trans(b_k))
    m_A = rt[:, None] >= rt[None, :]
    if DECAY == 1:
        b_gs = _vec(G + i_h, t0, eos, H, BT)
        b_A = b_A * tl.exp(tl.minimum(b_gs[:, None] - b_gs[None, :], 0.0))
    b_A = tl.where(m_A, b_A, 0.0).to(dt)
    if STORE_A:
        p_A = A + (r.to(tl.int64) * H + i_h)[:, None] * BT + rt[None, :]
        tl.store(p_A, b_A, mask=(r < eos)[:, None])

    for i_v in range(tl.cdiv(V, BV)):
        vv = i_v * BV + tl.arange(0, BV)
        b_o = _dot(b_A, _tile(v + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV))
        for i_k in range(tl.cdiv(K, BK)):
            kk = i_k * BK + tl.arange(0, BK)
            b_q = _tile(q + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            if DECAY == 2:
                b_q = b_q * tl.exp(_tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK))
            elif DECAY == 1:
                b_q = b_q * tl.exp(b_gs)[:, None]
            m_kv = (kk < K)[:, None] & (vv < V)[None, :]
            b_h = tl.load(_state_ptrs(hs, i_hs, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
            b_o += _dot(b_q.to(dt), b_h.to(dt))
        p_o = o + (r.to(tl.int64) * H + i_h)[:, None] * V + vv[None, :]
        tl.store(p_o, (b_o * scale).to(o.dtype.element_ty), mask=(r < eos)[:, None] & (vv < V)[None, :])


@triton.jit
def _fwd_o_sub_rows(
    q, k, v, G, hs, o, i_h, t0, ob, eos, i_hs, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr,
):
    """Vector decay, sub-chunk path: output of the ``BC`` rows from ``t0 + ob``; exponents ``<= 0`` only."""
    r0 = t0 + ob
    rb = tl.arange(0, BC)
    rt = tl.arange(0, BT)
    dt = v.dtype.element_ty
    b_A = tl.zeros([BC, BT], dtype=tl.float32)  # A[ob + i, j]
    for i_k in range(tl.cdiv(K, BK)):
        b_q = _tile(q + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
        b_gq = _tile(G + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
        if ob > 0:
            # earlier sub-chunks, through the reference row r0 - 1
            b_k = _tile(k + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            g_r = _row(G + i_h * K, r0 - 1, eos, H * K, i_k * BK, K, BK)
            b_qf = b_q * tl.exp(tl.minimum(b_gq - g_r[None, :], 0.0))
            b_kf = tl.where((rt < ob)[:, None], b_k * tl.exp(tl.minimum(g_r[None, :] - b_g, 0.0)), 0.0)
            b_A += _dot(b_qf.to(dt), tl.trans(b_kf.to(dt)))
        for j in range(BC):
            # diagonal sub-chunk, column ob + j, element by element
            b_kj = _row(k + i_h * K, r0 + j, eos, H * K, i_k * BK, K, BK).to(tl.float32)
            b_gj = _row(G + i_h * K, r0 + j, eos, H * K, i_k * BK, K, BK)
            b_e = tl.where((rb >= j)[:, None], tl.exp(tl.minimum(b_gq - b_gj[None, :], 0.0)), 0.0)
            b_s = tl.sum(b_q * b_kj[None, :] * b_e, axis=1)
            b_A += tl.where(rt[None, :] == ob + j, b_s[:, None], 0.0)
    b_A = tl.where((ob + rb)[:, None] >= rt[None, :], b_A, 0.0).to(dt)

    r = r0 + rb
    for i_v in range(tl.cdiv(V, BV)):
        vv = i_v * BV + tl.arange(0, BV)
        b_o = _dot(b_A, _tile(v + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV))
        for i_k in range(tl.cdiv(K, BK)):
            kk = i_k * BK + tl.arange(0, BK)
            b_q = _tile(q + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
            b_q = b_q * tl.exp(_tile(G + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK))
            m_kv = (kk < K)[:, None] & (vv < V)[None, :]
            b_h = tl.load(_state_ptrs(hs, i_hs, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
            b_o += _dot(b_q.to(dt), b_h.to(dt))
        p_o = o + (r.to(tl.int64) * H + i_h)[:, None] * V + vv[None, :]
        tl.store(p_o, (b_o * scale).to(o.dtype.element_ty), mask=(r < eos)[:, None] & (vv < V)[None, :])


@triton.autotune(_SUB_CONFIGS, key=_KEY_SUB)
@triton.jit
def _fwd_o_sub_kernel(
    q, k, v, G, spread, hs, o, cu_seqlens, chunk_indices, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, FAST_SPREAD: tl.constexpr,
):
    """Vector decay, the chunks :func:`_fwd_o_kernel` leaves: sub-chunk by sub-chunk through :func:`_fwd_o_sub_rows`."""
    i_t, i_h = tl.program_id(0), tl.program_id(1)
    if tl.load(spread + i_t * H + i_h) <= FAST_SPREAD:
        return
    i_n, i_c = tl.load(chunk_indices + 2 * i_t), tl.load(chunk_indices + 2 * i_t + 1)
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    t0 = bos + i_c * BT
    i_hs = tl.load(chunk_offsets + i_n) + i_n + i_c
    for i_a in range(BT // BC):
        if t0 + i_a * BC < eos:
            _fwd_o_sub_rows(q, k, v, G, hs, o, i_h, t0, i_a * BC, eos, i_hs, scale, H, K, V, BT, BC, BK, BV)


@triton.autotune(_CONFIGS, key=_KEY_STATE)
@triton.jit
def _bwd_dh_kernel(
    q, do, G, dht, dhs, dh0, cu_seqlens, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DECAY: tl.constexpr, HAS_DHT: tl.constexpr,
):
    """Reverse scan of state gradients: ``dhs[off_n + c]`` is the gradient of the state leaving chunk ``c``."""
    i_k, i_v, i_nh = _state_program(K, V, BK, BV)
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
        b_dh += _dot(tl.trans(b_q.to(b_do.dtype)), b_do)
    tl.store(_state_ptrs(dh0, i_n, i_h, H, K, V, kk, vv), b_dh, mask=m_kv)


@triton.autotune(_CHUNK_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune_chunk})
@triton.jit
def _bwd_kernel(
    q, k, v, G, spread, hs, do, dhs, dq, dk, dg, cu_seqlens, chunk_indices, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DECAY: tl.constexpr, FAST_SPREAD: tl.constexpr,
):
    r"""``dq, dk`` and ``dg`` of one whole chunk whose ``A`` is one matrix product (every chunk but those of vector
    decay with a spread above ``FAST_SPREAD``, left to :func:`_bwd_sub_kernel`); vector decay: one key tile
    (program axis 2), else every key tile (``dG`` sums over keys).

    ``dg``, the reverse cumulative sum of ``dG`` over the chunk, is computed here. The last row's state term needs no
    load of ``h' = diag(e^{G_L}) h + sum_j (k_j \odot e^{G_L - G_j})^T v_j``:
    ``sum_v (dh' \odot h')_{\cdot v} = e^{G_L} \odot sum_v (dh' \odot h)_{\cdot v} + sum_j k_j \odot dk^h_j`` with
    ``dk^h_j = e^{G_L - G_j} \odot (v_j dh'^T)`` the state part of ``dk_j``."""
    i_t, i_h = tl.program_id(0), tl.program_id(1)
    if DECAY == 2:
        if tl.load(spread + i_t * H + i_h) > FAST_SPREAD:
            return
    i_n, i_c = tl.load(chunk_indices + 2 * i_t), tl.load(chunk_indices + 2 * i_t + 1)
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    t0 = bos + i_c * BT
    last = tl.minimum(t0 + BT, eos) - 1  # last row of the chunk
    i_hs = tl.load(chunk_offsets + i_n) + i_n + i_c  # state entering the chunk
    i_dh = tl.load(chunk_offsets + i_n) + i_c  # gradient of the state leaving it
    rt = tl.arange(0, BT)
    r = t0 + rt
    m_A = rt[:, None] >= rt[None, :]
    dt = v.dtype.element_ty

    # dA = scale * do v^T, causal (scalar decay: times e^{G_i - G_j})
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        b_do = _tile(do + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        b_v = _tile(v + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        b_dA += _dot(b_do, tl.trans(b_v))
    if DECAY == 1:
        b_gs = _vec(G + i_h, t0, eos, H, BT)
        gs_last = tl.load(G + last.to(tl.int64) * H + i_h)
        b_dA = b_dA * tl.exp(tl.minimum(b_gs[:, None] - b_gs[None, :], 0.0))
    b_dA = tl.where(m_A, b_dA * scale, 0.0).to(dt)

    if DECAY == 2:
        k_lo = tl.program_id(2)
        k_hi = k_lo + 1
    else:
        k_lo = 0
        k_hi = tl.cdiv(K, BK)
    b_dgs = tl.zeros([BT], dtype=tl.float32)  # dG (scalar decay)
    for i_k in range(k_lo, k_hi):
        kk = i_k * BK + tl.arange(0, BK)
        b_q = _tile(q + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        b_k = _tile(k + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        if DECAY == 2:
            b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            g_last = _row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK)
            g_c = 0.5 * (_row(G + i_h * K, t0, eos, H * K, i_k * BK, K, BK) + g_last)
            b_eq = tl.exp(tl.minimum(b_g - g_c[None, :], 0.5 * FAST_SPREAD))  # e^{G - c}
            b_ek = tl.exp(tl.minimum(g_c[None, :] - b_g, 0.5 * FAST_SPREAD))  # e^{c - G}
            b_dq = _dot(b_dA, (b_k * b_ek).to(dt)) * b_eq
            b_dk = _dot(tl.trans(b_dA), (b_q * b_eq).to(dt)) * b_ek
        else:
            b_dq = _dot(b_dA, b_k)
            b_dk = _dot(tl.trans(b_dA), b_q)

        # contributions of the entering state h and of the gradient dh' of the leaving one
        b_dqh, b_dkh, b_x = _state_terms(do, v, hs, dhs, i_hs, i_dh, i_h, t0, eos, kk, True,
                                         H, K, V, BT, BK, BV, DECAY > 0, False)
        if DECAY == 2:
            # e^G = e^{G - c} e^c and e^{G_L - G} = e^{c - G} e^{G_L - c}: no further exponential of the tile
            b_dq += scale * b_dqh * b_eq * tl.exp(g_c)[None, :]
            b_dkh = b_dkh * b_ek * tl.exp(g_last - g_c)[None, :]
            b_x = b_x * tl.exp(g_last) + tl.sum(b_k.to(tl.float32) * b_dkh, axis=0)
        elif DECAY == 1:
            b_dq += scale * b_dqh * tl.exp(b_gs)[:, None]
            b_dkh = b_dkh * tl.exp(gs_last - b_gs)[:, None]
            b_xs = tl.sum(b_x, axis=0) * tl.exp(gs_last) + tl.sum(tl.sum(b_k.to(tl.float32) * b_dkh, axis=1), axis=0)
        else:
            b_dq += scale * b_dqh
        b_dk += b_dkh
        m_rk = (r < eos)[:, None] & (kk < K)[None, :]
        p_qk = (r.to(tl.int64) * H + i_h)[:, None] * K + kk[None, :]
        tl.store(dq + p_qk, b_dq.to(dq.dtype.element_ty), mask=m_rk)
        tl.store(dk + p_qk, b_dk.to(dk.dtype.element_ty), mask=m_rk)
        if DECAY == 2:
            b_dg = tl.cumsum(b_q * b_dq - b_k * b_dk, axis=0, reverse=True) + b_x[None, :]
            tl.store(dg + p_qk, b_dg.to(dg.dtype.element_ty), mask=m_rk)
        elif DECAY == 1:
            b_dgs += tl.sum(b_q * b_dq - b_k * b_dk, axis=1) + tl.where(r == last, b_xs, 0.0)
    if DECAY == 1:
        b_dgs = tl.cumsum(b_dgs, axis=0, reverse=True)
        tl.store(dg + r.to(tl.int64) * H + i_h, b_dgs.to(dg.dtype.element_ty), mask=r < eos)


@triton.autotune(_CHUNK_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune_chunk})
@triton.jit
def _bwd_dv_kernel(
    k, G, spread, A, do, dhs, dv, cu_seqlens, chunk_indices, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DECAY: tl.constexpr, FAST_SPREAD: tl.constexpr,
):
    """``dv = scale A^T do + (k e^{G_L - G}) dh'`` of one value tile (program axis 2) of one whole chunk, with the
    chunk's ``A`` (causal, decay applied) stored by :func:`_fwd_o_kernel`; the chunks it leaves as
    :func:`_bwd_kernel` does."""
    i_t, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if DECAY == 2:
        if tl.load(spread + i_t * H + i_h) > FAST_SPREAD:
            return
    i_n, i_c = tl.load(chunk_indices + 2 * i_t), tl.load(chunk_indices + 2 * i_t + 1)
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    t0 = bos + i_c * BT
    last = tl.minimum(t0 + BT, eos) - 1
    i_dh = tl.load(chunk_offsets + i_n) + i_c
    r = t0 + tl.arange(0, BT)
    vv = i_v * BV + tl.arange(0, BV)
    dt = dv.dtype.element_ty

    b_A = _tile(A + i_h * BT, t0, eos, H * BT, 0, BT, BT, BT)
    b_dv = _dot(tl.trans(b_A), _tile(do + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)) * scale
    if DECAY == 1:
        b_gs = _vec(G + i_h, t0, eos, H, BT)
        b_kd = tl.exp(tl.load(G + last.to(tl.int64) * H + i_h) - b_gs)  # e^{G_L - G}
    for i_k in range(tl.cdiv(K, BK)):
        kk = i_k * BK + tl.arange(0, BK)
        b_k = _tile(k + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        if DECAY == 2:
            b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
            b_k = b_k * tl.exp(_row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK)[None, :] - b_g)
        elif DECAY == 1:
            b_k = b_k * b_kd[:, None]
        m_kv = (kk < K)[:, None] & (vv < V)[None, :]
        b_dh = tl.load(_state_ptrs(dhs, i_dh, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
        b_dv += _dot(b_k.to(dt), b_dh.to(dt))
    p_v = dv + (r.to(tl.int64) * H + i_h)[:, None] * V + vv[None, :]
    tl.store(p_v, b_dv.to(dv.dtype.element_ty), mask=(r < eos)[:, None] & (vv < V)[None, :])


@triton.jit
def _bwd_sub_rows(
    q, k, v, G, hs, do, dhs, dq, dk, dv, dG, i_h, t0, ob, eos, last, i_hs, i_dh, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr,
):
    """Vector decay, sub-chunk path: ``dq, dk, dv`` and ``dG`` (before the reverse cumulative sum) of the ``BC`` rows
    from ``t0 + ob``; exponents ``<= 0`` only (see the module docstring)."""
    r0 = t0 + ob
    e = tl.minimum(r0 + BC, eos) - 1  # last row of this sub-chunk
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
        b_dAr += _dot(b_do_a, tl.trans(b_v))
        b_dAc += _dot(b_do, tl.trans(b_v_a))
    m_c = rt[:, None] >= (ob + rb)[None, :]
    b_dAr = tl.where((ob + rb)[:, None] >= rt[None, :], b_dAr, 0.0)
    b_dAc = tl.where(m_c, b_dAc, 0.0)

    b_Ac = tl.zeros([BT, BC], dtype=tl.float32)  # A[i, ob + j] for rows i after the sub-chunk
    b_Ad = tl.zeros([BC, BC], dtype=tl.float32)  # A[ob + i, ob + j]
    for i_k in range(tl.cdiv(K, BK)):
        kk = i_k * BK + tl.arange(0, BK)
        b_q_a = _tile(q + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
        b_k_a = _tile(k + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
        b_q = _tile(q + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        b_k = _tile(k + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        b_ga = _tile(G + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
        b_g = _tile(G + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK)
        g_last = _row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK)
        b_dqi = tl.zeros([BC, BK], dtype=tl.float32)
        b_dki = tl.zeros([BC, BK], dtype=tl.float32)
        if ob > 0:
            # columns of earlier sub-chunks, through the reference row r0 - 1
            g_r = _row(G + i_h * K, r0 - 1, eos, H * K, i_k * BK, K, BK)
            b_kf = tl.where((rt < ob)[:, None], b_k * tl.exp(tl.minimum(g_r[None, :] - b_g, 0.0)), 0.0)
            b_dqi += _dot(b_dAr.to(dt), b_kf.to(dt)) * tl.exp(tl.minimum(b_ga - g_r[None, :], 0.0))
        if e < last:
            # rows of later sub-chunks, through the reference row e
            g_r = _row(G + i_h * K, e, eos, H * K, i_k * BK, K, BK)
            b_qf = tl.where((t0 + rt > e)[:, None], b_q * tl.exp(tl.minimum(b_g - g_r[None, :], 0.0)), 0.0)
            b_kf = b_k_a * tl.exp(tl.minimum(g_r[None, :] - b_ga, 0.0))
            b_dki += _dot(tl.trans(b_dAc).to(dt), b_qf.to(dt)) * tl.exp(tl.minimum(g_r[None, :] - b_ga, 0.0))
            b_Ac += _dot(b_qf.to(dt), tl.trans(b_kf.to(dt)))
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

        # contributions of the entering state h and of the gradient dh' of the leaving one h'
        b_dqh, b_dkh, b_x = _state_terms(do, v, hs, dhs, i_hs, i_dh, i_h, r0, eos, kk, last <= e,
                                         H, K, V, BC, BK, BV, False, True)
        b_dq = scale * (b_dqi + b_dqh * tl.exp(b_ga))
        b_dk = scale * b_dki + b_dkh * tl.exp(g_last[None, :] - b_ga)
        m_rk = (r < eos)[:, None] & (kk < K)[None, :]
        p_qk = (r.to(tl.int64) * H + i_h)[:, None] * K + kk[None, :]
        tl.store(dq + p_qk, b_dq.to(dq.dtype.element_ty), mask=m_rk)
        tl.store(dk + p_qk, b_dk.to(dk.dtype.element_ty), mask=m_rk)
        b_dg = b_q_a * b_dq - b_k_a * b_dk + tl.where((r == last)[:, None], b_x[None, :], 0.0)
        tl.store(dG + p_qk, b_dg, mask=m_rk)
    b_Ac = tl.where(m_c, b_Ac, 0.0)

    for i_v in range(tl.cdiv(V, BV)):
        vv = i_v * BV + tl.arange(0, BV)
        b_do = _tile(do + i_h * V, t0, eos, H * V, i_v * BV, V, BT, BV)
        b_do_a = _tile(do + i_h * V, r0, eos, H * V, i_v * BV, V, BC, BV)
        b_dv = (_dot(tl.trans(b_Ac).to(dt), b_do) + _dot(tl.trans(b_Ad).to(dt), b_do_a)) * scale
        for i_k in range(tl.cdiv(K, BK)):
            kk = i_k * BK + tl.arange(0, BK)
            b_k_a = _tile(k + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
            b_ga = _tile(G + i_h * K, r0, eos, H * K, i_k * BK, K, BC, BK)
            g_last = _row(G + i_h * K, last, eos, H * K, i_k * BK, K, BK)
            b_k_a = b_k_a * tl.exp(g_last[None, :] - b_ga)
            m_kv = (kk < K)[:, None] & (vv < V)[None, :]
            b_dh = tl.load(_state_ptrs(dhs, i_dh, i_h, H, K, V, kk, vv), mask=m_kv, other=0.0)
            b_dv += _dot(b_k_a.to(dt), b_dh.to(dt))
        p_v = dv + (r.to(tl.int64) * H + i_h)[:, None] * V + vv[None, :]
        tl.store(p_v, b_dv.to(dv.dtype.element_ty), mask=(r < eos)[:, None] & (vv < V)[None, :])


@triton.autotune(_SUB_CONFIGS, key=_KEY_SUB)
@triton.jit
def _bwd_sub_kernel(
    q, k, v, G, spread, hs, do, dhs, dq, dk, dv, dG, dg, cu_seqlens, chunk_indices, chunk_offsets, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, FAST_SPREAD: tl.constexpr,
):
    """Vector decay, the chunks :func:`_bwd_kernel` leaves (decay spread above ``FAST_SPREAD``): sub-chunk by
    sub-chunk through :func:`_bwd_sub_rows`, which write ``dG`` (float32; may be ``dg`` itself), then ``dg`` as its
    reverse cumulative sum over the chunk."""
    i_t, i_h = tl.program_id(0), tl.program_id(1)
    if tl.load(spread + i_t * H + i_h) <= FAST_SPREAD:
        return
    i_n, i_c = tl.load(chunk_indices + 2 * i_t), tl.load(chunk_indices + 2 * i_t + 1)
    bos, eos = tl.load(cu_seqlens + i_n), tl.load(cu_seqlens + i_n + 1)
    t0 = bos + i_c * BT
    last = tl.minimum(t0 + BT, eos) - 1
    i_hs = tl.load(chunk_offsets + i_n) + i_n + i_c
    i_dh = tl.load(chunk_offsets + i_n) + i_c
    for i_a in range(BT // BC):
        if t0 + i_a * BC < eos:
            _bwd_sub_rows(q, k, v, G, hs, do, dhs, dq, dk, dv, dG, i_h, t0, i_a * BC, eos, last, i_hs, i_dh, scale,
                          H, K, V, BT, BC, BK, BV)
    tl.debug_barrier()  # dG rows written by other threads of this program
    r = t0 + tl.arange(0, BT)
    for i_k in range(tl.cdiv(K, BK)):
        kk = i_k * BK + tl.arange(0, BK)
        b_dg = tl.cumsum(_tile(dG + i_h * K, t0, eos, H * K, i_k * BK, K, BT, BK), axis=0, reverse=True)
        p_qk = (r.to(tl.int64) * H + i_h)[:, None] * K + kk[None, :]
        tl.store(dg + p_qk, b_dg.to(dg.dtype.element_ty), mask=(r < eos)[:, None] & (kk < K)[None, :])


def _fast_spread(dtype: torch.dtype) -> float:
    """Largest in-chunk decay spread ``max_k (G_first - G_last)`` taken by the one-product path (vector decay).

    Its operands are scaled by ``e^{+-spread/2}``: up to ``e^30`` for bfloat16/float32 (float32's exponent range),
    ``e^4`` for float16 (range ``6.5e4``)."""
    return 8.0 if dtype == torch.float16 else 60.0


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


def _chunk_cumsum(x: torch.Tensor, cu: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 cumulative sum over time inside chunks of ``x`` ``[tokens, H, D]``, and each chunk's decay spread
    ``max_d (y_first - y_last)`` ``[chunks, H]`` float32 (computed for ``D > 1``, vector decay, only)."""
    _, H, D = x.shape
    y = torch.empty_like(x, dtype=torch.float32)
    spread = x.new_empty(indices.shape[0], H, dtype=torch.float32)
    _chunk_cumsum_kernel[(indices.shape[0], H)](
        x, y, spread, cu, indices, H=H, D=D, BD=max(triton.next_power_of_2(D), 16), BT=BT, SPREAD=D > 1
    )
    return y, spread


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
            G = spread = q.new_empty(1, dtype=torch.float32)
        else:
            # contiguous(): a broadcast decay (RetNet's fixed per-head gamma, expanded) has zero strides
            G, spread = _chunk_cumsum(log_decay.reshape(B * T, H, -1).contiguous(), cu, indices)
        h0 = None if initial_state is None else initial_state.float().contiguous()
        hs = q.new_empty(NT + N, H, K, V, dtype=torch.bfloat16 if dt == torch.bfloat16 else torch.float32)
        ht = q.new_empty(N, H, K, V, dtype=torch.float32)
        BK, BV = _block(K), _block(V)
        SK, SV = min(BK, STATE_BK), min(BV, STATE_BV)
        _fwd_h_kernel[(triton.cdiv(K, SK) * triton.cdiv(V, SV) * N * H,)](
            k, v, G, h0, hs, ht, cu, offsets, H=H, K=K, V=V, BT=BT, BK=SK, BV=SV, DECAY=decay, HAS_H0=h0 is not None
        )
        o = torch.empty_like(v)
        store_a = any(ctx.needs_input_grad)
        A = q.new_empty(B * T, H, BT) if store_a else None
        # vector decay: each chunk on one of two paths, by its decay spread; each launch skips the other's chunks
        _fwd_o_kernel[(NT, H)](
            q, k, v, G, spread, hs, o, A, cu, indices, offsets, scale,
            H=H, K=K, V=V, BT=BT, DECAY=decay, FAST_SPREAD=_fast_spread(dt), STORE_A=store_a,
        )
        if decay == _VECTOR:
            _fwd_o_sub_kernel[(NT, H)](
                q, k, v, G, spread, hs, o, cu, indices, offsets, scale,
                H=H, K=K, V=V, BT=BT, BC=BC, FAST_SPREAD=_fast_spread(dt),
            )
        ctx.save_for_backward(q, k, v, G, spread, hs, A, cu, indices, offsets)
        ctx.meta = (B, T, scale, decay, log_decay.dtype if log_decay is not None else None, h0 is not None)
        ctx.set_materialize_grads(False)
        return o.view(B, T, H, V), (ht if output_final_state else None)

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, G, spread, hs, A, cu, indices, offsets = ctx.saved_tensors
        B, T, scale, decay, g_dtype, has_h0 = ctx.meta
        TT, H, K = q.shape
        V = v.shape[-1]
        N, NT = cu.numel() - 1, indices.shape[0]
        do = torch.zeros_like(v) if do is None else do.to(v.dtype).reshape(TT, H, V).contiguous()
        dht = None if dht is None else dht.float().contiguous()
        BK, BV = _block(K), _block(V)
        dhs = q.new_empty(NT, H, K, V, dtype=hs.dtype)
        dh0 = q.new_empty(N, H, K, V, dtype=torch.float32)
        SK, SV = min(BK, STATE_BK), min(BV, STATE_BV)
        _bwd_dh_kernel[(triton.cdiv(K, SK) * triton.cdiv(V, SV) * N * H,)](
            q, do, G, dht, dhs, dh0, cu, offsets, scale,
            H=H, K=K, V=V, BT=BT, BK=SK, BV=SV, DECAY=decay, HAS_DHT=dht is not None,
        )
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dg = None if decay == _NONE else torch.empty_like(G, dtype=g_dtype)
        spread_max = _fast_spread(v.dtype)
        _bwd_kernel[lambda meta: (NT, H, triton.cdiv(K, meta["BK"]) if decay == _VECTOR else 1)](
            q, k, v, G, spread, hs, do, dhs, dq, dk, dg, cu, indices, offsets, scale,
            H=H, K=K, V=V, BT=BT, DECAY=decay, FAST_SPREAD=spread_max,
        )
        _bwd_dv_kernel[lambda meta: (NT, H, triton.cdiv(V, meta["BV"]))](
            k, G, spread, A, do, dhs, dv, cu, indices, offsets, scale,
            H=H, K=K, V=V, BT=BT, DECAY=decay, FAST_SPREAD=spread_max,
        )
        if decay == _VECTOR:
            # dG before its cumulative sum, float32 (dg itself if float32): only the sub-chunk path writes it
            dG = dg if dg.dtype == torch.float32 else torch.empty_like(G)
            _bwd_sub_kernel[(NT, H)](
                q, k, v, G, spread, hs, do, dhs, dq, dk, dv, dG, dg, cu, indices, offsets, scale,
                H=H, K=K, V=V, BT=BT, BC=BC, FAST_SPREAD=spread_max,
            )
        if dg is not None:
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
