r"""Fused one-token decode step of gated linear attention (Triton).

Per head: ``S <- diag(exp(g)) S + k^T v`` then ``o = scale * q S``, with ``S`` ``[K, V]`` float32 updated in place.
One program per (batch x head, block of ``V``): it reads its ``[K, BV]`` slice of the state once, writes it back once.
No host synchronisation and no allocation besides the output, so the step can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..triton_launch import pdl_options, wait_for_predecessor


@triton.jit
def _step_kernel(
    q, k, v, g, state, o, scale,
    s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_gb, s_gh,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DECAY: tl.constexpr,
    PDL: tl.constexpr,
):
    """``DECAY``: 0 none, 1 one log decay per head, 2 one per key. With ``PDL`` the state slice (written only by
    this kernel) is read while the previous kernel of the step still runs."""
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    kk = tl.arange(0, BK)
    vv = i_v * BV + tl.arange(0, BV)
    m_k, m_v = kk < K, vv < V
    p_s = state + i_bh.to(tl.int64) * (K * V) + kk[:, None] * V + vv[None, :]
    m_s = m_k[:, None] & m_v[None, :]
    b_s = tl.load(p_s, mask=m_s, other=0.0)
    wait_for_predecessor(PDL)
    b_q = tl.load(q + i_b * s_qb + i_h * s_qh + kk, mask=m_k, other=0.0).to(tl.float32)
    b_k = tl.load(k + i_b * s_kb + i_h * s_kh + kk, mask=m_k, other=0.0).to(tl.float32)
    b_v = tl.load(v + i_b * s_vb + i_h * s_vh + vv, mask=m_v, other=0.0).to(tl.float32)
    if DECAY == 2:
        b_s *= tl.exp(tl.load(g + i_b * s_gb + i_h * s_gh + kk, mask=m_k, other=0.0).to(tl.float32))[:, None]
    elif DECAY == 1:
        b_s *= tl.exp(tl.load(g + i_b * s_gb + i_h * s_gh).to(tl.float32))
    b_s += b_k[:, None] * b_v[None, :]
    tl.store(p_s, b_s, mask=m_s)
    b_o = tl.sum(b_q[:, None] * b_s, axis=0) * scale
    tl.store(o + i_bh.to(tl.int64) * V + vv, b_o.to(o.dtype.element_ty), mask=m_v)


def recurrent_gla_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None,
    state: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One token: ``state <- diag(exp(g)) state + k^T v`` (in place), returns ``o = scale * q state``.

    ``q, k`` ``[B, H, K]``, ``v`` ``[B, H, V]`` (any strides with a unit last stride), ``log_decay`` ``[B, H, K]``,
    ``[B, H]`` or None, ``state`` ``[B, H, K, V]`` float32 contiguous. Returns ``o`` ``[B, H, V]`` in ``v``'s dtype.
    """
    B, H, K = q.shape
    V = v.shape[-1]
    if not state.is_contiguous():
        raise ValueError("state must be contiguous (it is updated in place)")
    for name, x in (("q", q), ("k", k), ("v", v), ("log_decay", log_decay)):
        if x is not None and x.dim() == 3 and x.stride(-1) != 1:
            raise ValueError(f"{name} must have a unit stride along its last dimension")
    decay = 0 if log_decay is None else (1 if log_decay.dim() == 2 else 2)
    g = q if log_decay is None else log_decay
    o = torch.empty(B, H, V, device=v.device, dtype=v.dtype)
    BK = max(triton.next_power_of_2(K), 16)
    BV = min(max(triton.next_power_of_2(V), 16), 64 if BK <= 128 else 32)
    # batch x heads on the first grid axis: the second allows 65535 programs (GateLoop: 2048 heads x batch 64)
    _step_kernel[(B * H, triton.cdiv(V, BV))](
        q, k, v, g, state, o, scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), g.stride(0), g.stride(1),
        H=H, K=K, V=V, BK=BK, BV=BV, DECAY=decay, **pdl_options(v.device),
    )
    return o
