r"""Fused one-token decode step of gated linear attention (Triton).

Per head: ``S <- diag(exp(g)) S + k^T v`` then ``o = scale * q S``, with ``S`` ``[K, V]`` float32 updated in place.
One program per (batch x head, block of ``V``): it reads its ``[K, BV]`` slice of the state once, writes it back once.
No host synchronisation and no allocation besides the output, so the step can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import cuda_properties
from ..fused_layers.triton import log_sigmoid_gate
from ..triton_launch import pdl_options, wait_for_predecessor
from .low_rank_decay import LowRankLogDecay


@triton.jit
def _step_kernel(
    q, k, v, g, state, o, scale, gw, gb, normalizer, clamp_min, R,
    s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_gb, s_gh,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DECAY: tl.constexpr,
    BR: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, PDL: tl.constexpr,
):
    """``DECAY``: 0 none, 1 one log decay per head, 2 one per key, 3 one per key from its low-rank projection
    (``g`` holds ``x`` ``[B, R]``; ``gw`` ``[H*K, R]``, ``gb``: see :class:`LowRankLogDecay`). With ``PDL`` the state
    slice (written only by this kernel) and the projection's weights are read while the previous kernel runs."""
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    kk = tl.arange(0, BK)
    vv = i_v * BV + tl.arange(0, BV)
    m_k, m_v = kk < K, vv < V
    p_s = state + i_bh.to(tl.int64) * (K * V) + kk[:, None] * V + vv[None, :]
    m_s = m_k[:, None] & m_v[None, :]
    b_s = tl.load(p_s, mask=m_s, other=0.0)
    if DECAY == 3:
        rr = tl.arange(0, BR)
        m_r = rr < R
        b_w = tl.load(gw + (i_h * K + kk)[:, None] * R + rr[None, :], mask=m_k[:, None] & m_r[None, :],
                      other=0.0).to(tl.float32)
        if HAS_BIAS:
            b_bias = tl.load(gb + i_h * K + kk, mask=m_k, other=0.0).to(tl.float32)
    wait_for_predecessor(PDL)
    b_q = tl.load(q + i_b * s_qb + i_h * s_qh + kk, mask=m_k, other=0.0).to(tl.float32)
    b_k = tl.load(k + i_b * s_kb + i_h * s_kh + kk, mask=m_k, other=0.0).to(tl.float32)
    b_v = tl.load(v + i_b * s_vb + i_h * s_vh + vv, mask=m_v, other=0.0).to(tl.float32)
    if DECAY == 2:
        b_s *= tl.exp(tl.load(g + i_b * s_gb + i_h * s_gh + kk, mask=m_k, other=0.0).to(tl.float32))[:, None]
    elif DECAY == 1:
        b_s *= tl.exp(tl.load(g + i_b * s_gb + i_h * s_gh).to(tl.float32))
    elif DECAY == 3:
        b_x = tl.load(g + i_b * s_gb + rr, mask=m_r, other=0.0)
        z = tl.sum(b_w * b_x.to(tl.float32)[None, :], axis=1)
        if HAS_BIAS:
            z += b_bias
        b_s *= tl.exp(log_sigmoid_gate(z.to(b_x.dtype).to(tl.float32), normalizer, clamp_min, HAS_CLAMP))[:, None]
    b_s += b_k[:, None] * b_v[None, :]
    tl.store(p_s, b_s, mask=m_s)
    b_o = tl.sum(b_q[:, None] * b_s, axis=0) * scale
    tl.store(o + i_bh.to(tl.int64) * V + vv, b_o.to(o.dtype.element_ty), mask=m_v)


def recurrent_gla_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | LowRankLogDecay | None,
    state: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One token: ``state <- diag(exp(g)) state + k^T v`` (in place), returns ``o = scale * q state``.

    ``q, k`` ``[B, H, K]``, ``v`` ``[B, H, V]`` (any strides with a unit last stride), ``log_decay`` ``[B, H, K]``,
    ``[B, H]``, a :class:`LowRankLogDecay` with ``x`` ``[B, R]`` or None, ``state`` ``[B, H, K, V]`` float32
    contiguous. Returns ``o`` ``[B, H, V]`` in ``v``'s dtype.
    """
    low_rank = log_decay if isinstance(log_decay, LowRankLogDecay) else None
    B, H, K = q.shape
    V = v.shape[-1]
    if not state.is_contiguous():
        raise ValueError("state must be contiguous (it is updated in place)")
    for name, x in (("q", q), ("k", k), ("v", v), ("log_decay", None if low_rank is not None else log_decay)):
        if x is not None and x.dim() == 3 and x.stride(-1) != 1:
            raise ValueError(f"{name} must have a unit stride along its last dimension")
    o = torch.empty(B, H, V, device=v.device, dtype=v.dtype)
    BK = max(triton.next_power_of_2(K), 16)
    BV = min(max(triton.next_power_of_2(V), 16), 64 if BK <= 128 else 32)
    if v.is_cuda:  # narrower value blocks until every multiprocessor streams a slice of the state
        while BV > 16 and B * H * triton.cdiv(V, BV) < cuda_properties(v.device).multi_processor_count:
            BV //= 2
    programs = B * H * triton.cdiv(V, BV)
    if low_rank is not None and v.is_cuda and programs > 2 * cuda_properties(v.device).multi_processor_count:
        # each program evaluates its keys' decay: past two programs a multiprocessor (large batches) those
        # repeated reads of the gate's weights cost more than the launch they save
        log_decay, low_rank = low_rank.materialize(H), None
    elif low_rank is not None:
        log_decay = low_rank.x.contiguous()
    decay = 3 if low_rank is not None else 0 if log_decay is None else (1 if log_decay.dim() == 2 else 2)
    g = q if log_decay is None else log_decay
    R = 1 if low_rank is None else g.shape[-1]
    # batch x heads on the first grid axis: the second allows 65535 programs (GateLoop: 2048 heads x batch 64)
    _step_kernel[(B * H, triton.cdiv(V, BV))](
        q, k, v, g, state, o, scale,
        None if low_rank is None else low_rank.weight.contiguous(), None if low_rank is None else low_rank.bias,
        1.0 if low_rank is None else float(low_rank.normalizer),
        0.0 if low_rank is None or low_rank.clamp_min is None else float(low_rank.clamp_min), R,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), g.stride(0), g.stride(1),
        H=H, K=K, V=V, BK=BK, BV=BV, DECAY=decay, BR=triton.next_power_of_2(R),
        HAS_BIAS=low_rank is not None and low_rank.bias is not None,
        HAS_CLAMP=low_rank is not None and low_rank.clamp_min is not None,
        **pdl_options(v.device, programs),
    )
    return o
