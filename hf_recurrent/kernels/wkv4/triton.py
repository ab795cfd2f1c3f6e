"""Triton kernels of RWKV-4's WKV: forward, backward and the decode step (maths in :mod:`hf_recurrent.kernels.wkv4`).

One program per (sequence, block of channels) walks the sequence with the float32 state ``(a, b, p)`` in registers.
The forward saves the state before every step (``[B, T, 3, C]`` float32, the size of three activations), from
which the backward walks back with the adjoints of the un-scaled sums ``A = a e^p``, ``B = b e^p``, kept scaled by
``e^p`` so that nothing overflows:

    gv_t = gA' e^{k-p'} + go e^{u+k-q} / den,   gk_t = (gA' v + gB') e^{k-p'} + go e^{u+k-q} (v - o) / den,
    gu  += go e^{u+k-q} (v - o) / den,          gw  += (gA' a + gB' b) e^{p+w-p'},
    gA   = gA' e^{p+w-p'} + go e^{p-q} / den,   gB   = gB' e^{p+w-p'} - go o e^{p-q} / den.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_C = 64


@triton.jit
def _wkv4_fwd_kernel(
    w_ptr, u_ptr, k_ptr, v_ptr, mask_ptr, s0_ptr, o_ptr, saved_ptr, final_ptr, cu_ptr, T, C,
    HAS_MASK: tl.constexpr, HAS_INIT: tl.constexpr, SAVE: tl.constexpr, STORE_FINAL: tl.constexpr,
    VARLEN: tl.constexpr, BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    if VARLEN:
        bos = tl.load(cu_ptr + b).to(tl.int32)
        length = tl.load(cu_ptr + b + 1).to(tl.int32) - bos
    else:
        bos = b * T
        length = T
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    cm = c < C
    w = tl.load(w_ptr + c, mask=cm, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + c, mask=cm, other=0.0).to(tl.float32)
    if HAS_INIT:
        aa = tl.load(s0_ptr + b * 3 * C + c, mask=cm, other=0.0)
        bb = tl.load(s0_ptr + b * 3 * C + C + c, mask=cm, other=0.0)
        pp = tl.load(s0_ptr + b * 3 * C + 2 * C + c, mask=cm, other=-1e38)
    else:
        aa = tl.zeros([BLOCK], dtype=tl.float32)
        bb = tl.zeros([BLOCK], dtype=tl.float32)
        pp = tl.full([BLOCK], -1e38, dtype=tl.float32)
    for t in range(length):
        off = (bos + t) * C + c
        kt = tl.load(k_ptr + off, mask=cm, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + off, mask=cm, other=0.0).to(tl.float32)
        if SAVE:
            base = (bos + t) * 3 * C + c
            tl.store(saved_ptr + base, aa, mask=cm)
            tl.store(saved_ptr + base + C, bb, mask=cm)
            tl.store(saved_ptr + base + 2 * C, pp, mask=cm)
        q = tl.maximum(pp, u + kt)
        e1 = tl.exp(pp - q)
        e2 = tl.exp(u + kt - q)
        ot = (e1 * aa + e2 * vt) / (e1 * bb + e2)
        q2 = tl.maximum(pp + w, kt)
        f1 = tl.exp(pp + w - q2)
        f2 = tl.exp(kt - q2)
        na = f1 * aa + f2 * vt
        nb = f1 * bb + f2
        if HAS_MASK:
            keep = tl.load(mask_ptr + bos + t) != 0
            ot = tl.where(keep, ot, 0.0)
            aa = tl.where(keep, na, aa)
            bb = tl.where(keep, nb, bb)
            pp = tl.where(keep, q2, pp)
        else:
            aa, bb, pp = na, nb, q2
        tl.store(o_ptr + off, ot.to(o_ptr.dtype.element_ty), mask=cm)
    if STORE_FINAL:
        tl.store(final_ptr + b * 3 * C + c, aa, mask=cm)
        tl.store(final_ptr + b * 3 * C + C + c, bb, mask=cm)
        tl.store(final_ptr + b * 3 * C + 2 * C + c, pp, mask=cm)


@triton.jit
def _wkv4_bwd_kernel(
    w_ptr, u_ptr, k_ptr, v_ptr, mask_ptr, saved_ptr, do_ptr, dk_ptr, dv_ptr, dw_ptr, du_ptr, ds0_ptr, cu_ptr, T, C,
    HAS_MASK: tl.constexpr, VARLEN: tl.constexpr, BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    if VARLEN:
        bos = tl.load(cu_ptr + b).to(tl.int32)
        length = tl.load(cu_ptr + b + 1).to(tl.int32) - bos
    else:
        bos = b * T
        length = T
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    cm = c < C
    w = tl.load(w_ptr + c, mask=cm, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + c, mask=cm, other=0.0).to(tl.float32)
    ga = tl.zeros([BLOCK], dtype=tl.float32)
    gb = tl.zeros([BLOCK], dtype=tl.float32)
    gw = tl.zeros([BLOCK], dtype=tl.float32)
    gu = tl.zeros([BLOCK], dtype=tl.float32)
    aa = tl.zeros([BLOCK], dtype=tl.float32)
    bb = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(length):
        t = length - 1 - i
        off = (bos + t) * C + c
        base = (bos + t) * 3 * C + c
        aa = tl.load(saved_ptr + base, mask=cm, other=0.0)
        bb = tl.load(saved_ptr + base + C, mask=cm, other=0.0)
        pp = tl.load(saved_ptr + base + 2 * C, mask=cm, other=0.0)
        kt = tl.load(k_ptr + off, mask=cm, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + off, mask=cm, other=0.0).to(tl.float32)
        go = tl.load(do_ptr + off, mask=cm, other=0.0).to(tl.float32)
        q = tl.maximum(pp, u + kt)
        e1 = tl.exp(pp - q)
        e2 = tl.exp(u + kt - q)
        den = e1 * bb + e2
        ot = (e1 * aa + e2 * vt) / den
        q2 = tl.maximum(pp + w, kt)
        f1 = tl.exp(pp + w - q2)
        f2 = tl.exp(kt - q2)
        gcur = go * e2 / den
        gvt = ga * f2 + gcur
        gkt = (ga * vt + gb) * f2 + gcur * (vt - ot)
        gut = gcur * (vt - ot)
        gwt = (ga * aa + gb * bb) * f1
        nga = ga * f1 + go * e1 / den
        ngb = gb * f1 - go * ot * e1 / den
        if HAS_MASK:
            keep = tl.load(mask_ptr + bos + t) != 0
            gvt = tl.where(keep, gvt, 0.0)
            gkt = tl.where(keep, gkt, 0.0)
            gut = tl.where(keep, gut, 0.0)
            gwt = tl.where(keep, gwt, 0.0)
            nga = tl.where(keep, nga, ga)
            ngb = tl.where(keep, ngb, gb)
        ga, gb = nga, ngb
        gu += gut
        gw += gwt
        tl.store(dk_ptr + off, gkt.to(dk_ptr.dtype.element_ty), mask=cm)
        tl.store(dv_ptr + off, gvt.to(dv_ptr.dtype.element_ty), mask=cm)
    tl.store(dw_ptr + b * C + c, gw, mask=cm)
    tl.store(du_ptr + b * C + c, gu, mask=cm)
    tl.store(ds0_ptr + b * 3 * C + c, ga, mask=cm)
    tl.store(ds0_ptr + b * 3 * C + C + c, gb, mask=cm)
    tl.store(ds0_ptr + b * 3 * C + 2 * C + c, ga * aa + gb * bb, mask=cm)


def _forward(w, u, k, v, mask, initial_state, save: bool, store_final: bool, cu_seqlens=None):
    B, T, H, D = k.shape
    C = H * D
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    k, v = k.contiguous(), v.contiguous()
    o = torch.empty_like(v)
    saved = torch.empty(B, T, 3, C, dtype=torch.float32, device=k.device) if save else o
    final = torch.empty(N, 3, H, D, dtype=torch.float32, device=k.device) if store_final else o
    s0 = initial_state.contiguous() if initial_state is not None else o
    m = mask.to(torch.int32).contiguous() if mask is not None else o
    grid = (N, triton.cdiv(C, BLOCK_C))
    _wkv4_fwd_kernel[grid](
        w.contiguous(), u.contiguous(), k, v, m, s0, o, saved, final, cu_seqlens if cu_seqlens is not None else o,
        T, C, HAS_MASK=mask is not None, HAS_INIT=initial_state is not None, SAVE=save, STORE_FINAL=store_final,
        VARLEN=cu_seqlens is not None, BLOCK=BLOCK_C,
    )
    return o, (saved if save else None), (final if store_final else None)


class _WKV4(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, u, k, v, mask, initial_state, output_final_state, cu_seqlens):
        needs_grad = any(ctx.needs_input_grad[:4]) or ctx.needs_input_grad[5]
        o, saved, final = _forward(w, u, k, v, mask, initial_state, needs_grad, output_final_state, cu_seqlens)
        if needs_grad:
            ctx.save_for_backward(w, u, k, v, mask, saved, cu_seqlens)
        ctx.has_init = initial_state is not None
        if final is not None:
            ctx.mark_non_differentiable(final)
        return o, final

    @staticmethod
    def backward(ctx, do, _dfinal):
        w, u, k, v, mask, saved, cu_seqlens = ctx.saved_tensors
        B, T, H, D = k.shape
        C = H * D
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        dw = torch.empty(N, C, dtype=torch.float32, device=k.device)
        du = torch.empty_like(dw)
        ds0 = torch.empty(N, 3, H, D, dtype=torch.float32, device=k.device)
        m = mask.to(torch.int32).contiguous() if mask is not None else dk
        _wkv4_bwd_kernel[(N, triton.cdiv(C, BLOCK_C))](
            w.contiguous(), u.contiguous(), k.contiguous(), v.contiguous(), m, saved, do.contiguous(), dk, dv,
            dw, du, ds0, cu_seqlens if cu_seqlens is not None else dk, T, C, HAS_MASK=mask is not None,
            VARLEN=cu_seqlens is not None, BLOCK=BLOCK_C,
        )
        dw = dw.sum(0).view(H, D).to(w.dtype)
        du = du.sum(0).view(H, D).to(u.dtype)
        return dw, du, dk, dv, None, (ds0 if ctx.has_init else None), None, None


def wkv4(w, u, k, v, mask, initial_state, output_final_state, cu_seqlens=None):
    """Triton WKV over a sequence; arguments as :func:`hf_recurrent.kernels.wkv4.wkv4`."""
    return _WKV4.apply(w, u, k, v, mask, initial_state, output_final_state, cu_seqlens)


def wkv4_step(w, u, k, v, state):
    """One Triton decode step (``T = 1``) on ``[B, H, D]`` inputs; ``state`` is read and updated in place."""
    B, H, D = k.shape
    o = torch.empty_like(v)
    _wkv4_fwd_kernel[(B, triton.cdiv(H * D, BLOCK_C))](
        w.contiguous(), u.contiguous(), k.contiguous(), v.contiguous(), o, state, o, o, state, o, 1, H * D,
        HAS_MASK=False, HAS_INIT=True, SAVE=False, STORE_FINAL=True, VARLEN=False, BLOCK=BLOCK_C,
    )
    return o
