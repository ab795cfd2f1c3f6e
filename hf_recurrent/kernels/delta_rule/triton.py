"""Fused recurrent Triton kernels of the generalised delta rule (maths in :mod:`hf_recurrent.kernels.delta_rule`).

One program per (sequence, head, block of ``BV`` value columns): the columns of ``M [K, V]`` evolve independently
(``M_t[:, j] = e^{log w} * M[:, j] + b (a . M[:, j]) + k v_j``), so the float32 state block ``[K, BV]`` stays in
registers for the whole sequence. The forward stores the state every ``CHUNK`` steps; the backward walks the
chunks in reverse, recomputes each chunk's states from its checkpoint into a scratch buffer, then goes back through
it with the adjoint ``dM``:

    dM += scale r do^T;   dr = scale M_t do;   dlog_w = e^{log w} * rowsum(M_{t-1} * dM);   s = M_{t-1}^T a;
    db = dM s;   e = dM^T b;   da = M_{t-1} e;   dk = dM v;   dv = dM^T k;   dM <- e^{log w} * dM + a e^T.

Gradients over ``K`` are summed across value blocks on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 16


@triton.jit
def _fwd_kernel(
    r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, s0_ptr, o_ptr, final_ptr, ckpt_ptr, cu_ptr, scale, T, NC,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, CHUNK_T: tl.constexpr,
    HAS_INIT: tl.constexpr, STORE_FINAL: tl.constexpr, SAVE: tl.constexpr, VARLEN: tl.constexpr,
):
    iv, inh = tl.program_id(0), tl.program_id(1)
    n, h = inh // H, inh % H
    if VARLEN:
        bos = tl.load(cu_ptr + n).to(tl.int32)
        length = tl.load(cu_ptr + n + 1).to(tl.int32) - bos
    else:
        bos = n * T
        length = T
    ok = tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    mk, mv = ok < K, ov < V
    mkv = mk[:, None] & mv[None, :]
    state_off = inh * K * V + ok[:, None] * V + ov[None, :]
    if HAS_INIT:
        M = tl.load(s0_ptr + state_off, mask=mkv, other=0.0)
    else:
        M = tl.zeros([BK, BV], dtype=tl.float32)
    for t in range(length):
        if SAVE:
            if t % CHUNK_T == 0:
                tl.store(ckpt_ptr + (inh * NC + t // CHUNK_T) * K * V + ok[:, None] * V + ov[None, :], M, mask=mkv)
        row = (bos + t) * H + h
        rt = tl.load(r_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
        wt = tl.load(w_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
        kt = tl.load(k_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
        at = tl.load(a_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
        bt = tl.load(b_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + row * V + ov, mask=mv, other=0.0).to(tl.float32)
        sa = tl.sum(at[:, None] * M, axis=0)
        M = tl.exp(wt)[:, None] * M + bt[:, None] * sa[None, :] + kt[:, None] * vt[None, :]
        ot = tl.sum(rt[:, None] * M, axis=0) * scale
        tl.store(o_ptr + row * V + ov, ot.to(o_ptr.dtype.element_ty), mask=mv)
    if STORE_FINAL:
        tl.store(final_ptr + state_off, M, mask=mkv)


@triton.jit
def _bwd_kernel(
    r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, do_ptr, dfinal_ptr, ckpt_ptr, scratch_ptr, cu_ptr,
    dr_ptr, dw_ptr, dk_ptr, da_ptr, db_ptr, dv_ptr, ds0_ptr, scale, T, NC, NV, ROWS,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, CHUNK_T: tl.constexpr,
    HAS_DFINAL: tl.constexpr, VARLEN: tl.constexpr,
):
    iv, inh = tl.program_id(0), tl.program_id(1)
    n, h = inh // H, inh % H
    if VARLEN:
        bos = tl.load(cu_ptr + n).to(tl.int32)
        length = tl.load(cu_ptr + n + 1).to(tl.int32) - bos
    else:
        bos = n * T
        length = T
    ok = tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    mk, mv = ok < K, ov < V
    mkv = mk[:, None] & mv[None, :]
    tile = ok[:, None] * V + ov[None, :]
    scratch = scratch_ptr + (inh * NV + iv) * CHUNK_T * K * V
    if HAS_DFINAL:
        dM = tl.load(dfinal_ptr + inh * K * V + tile, mask=mkv, other=0.0)
    else:
        dM = tl.zeros([BK, BV], dtype=tl.float32)
    n_chunks = tl.cdiv(length, CHUNK_T)
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        t0 = c * CHUNK_T
        steps = tl.minimum(length - t0, CHUNK_T)
        M = tl.load(ckpt_ptr + (inh * NC + c) * K * V + tile, mask=mkv, other=0.0)
        for j in range(steps):
            tl.store(scratch + j * K * V + tile, M, mask=mkv)
            row = (bos + t0 + j) * H + h
            wt = tl.load(w_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            kt = tl.load(k_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            at = tl.load(a_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            bt = tl.load(b_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            vt = tl.load(v_ptr + row * V + ov, mask=mv, other=0.0).to(tl.float32)
            sa = tl.sum(at[:, None] * M, axis=0)
            M = tl.exp(wt)[:, None] * M + bt[:, None] * sa[None, :] + kt[:, None] * vt[None, :]
        tl.debug_barrier()
        for jj in range(steps):
            j = steps - 1 - jj
            row = (bos + t0 + j) * H + h
            Mp = tl.load(scratch + j * K * V + tile, mask=mkv, other=0.0)
            rt = tl.load(r_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            wt = tl.load(w_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            kt = tl.load(k_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            at = tl.load(a_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            bt = tl.load(b_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
            vt = tl.load(v_ptr + row * V + ov, mask=mv, other=0.0).to(tl.float32)
            dot = tl.load(do_ptr + row * V + ov, mask=mv, other=0.0).to(tl.float32)
            decay = tl.exp(wt)
            sa = tl.sum(at[:, None] * Mp, axis=0)
            Mt = decay[:, None] * Mp + bt[:, None] * sa[None, :] + kt[:, None] * vt[None, :]
            dM += scale * rt[:, None] * dot[None, :]
            e = tl.sum(bt[:, None] * dM, axis=0)
            part = (iv * ROWS + row) * K + ok  # [NV, B * T * H, K]: partial sums over this value block
            tl.store(dr_ptr + part, scale * tl.sum(Mt * dot[None, :], axis=1), mask=mk)
            tl.store(dw_ptr + part, decay * tl.sum(Mp * dM, axis=1), mask=mk)
            tl.store(db_ptr + part, tl.sum(dM * sa[None, :], axis=1), mask=mk)
            tl.store(da_ptr + part, tl.sum(Mp * e[None, :], axis=1), mask=mk)
            tl.store(dk_ptr + part, tl.sum(dM * vt[None, :], axis=1), mask=mk)
            tl.store(dv_ptr + row * V + ov, tl.sum(dM * kt[:, None], axis=0).to(dv_ptr.dtype.element_ty), mask=mv)
            dM = decay[:, None] * dM + at[:, None] * e[None, :]
        tl.debug_barrier()
    tl.store(ds0_ptr + inh * K * V + tile, dM, mask=mkv)


def _meta(k, v, cu_seqlens):
    B, T, H, K = k.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    longest = T if cu_seqlens is None else int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if N else 0
    BK = triton.next_power_of_2(K)
    BV = min(triton.next_power_of_2(V), 32)  # [K, 32] float32 tiles: fewer registers, more programs
    return B, T, H, K, V, N, triton.cdiv(max(longest, 1), CHUNK), BK, BV, triton.cdiv(V, BV)


def _run_forward(r, w, k, v, a, b, scale, s0, final, cu_seqlens, save: bool):
    B, T, H, K, V, N, NC, BK, BV, NV = _meta(k, v, cu_seqlens)
    o = torch.empty_like(v)
    ckpt = torch.empty(N * H, NC, K, V, dtype=torch.float32, device=k.device) if save else o
    _fwd_kernel[(NV, N * H)](
        r, w, k, v, a, b, s0 if s0 is not None else o, o, final if final is not None else o, ckpt,
        cu_seqlens if cu_seqlens is not None else o, scale, T, NC, H=H, K=K, V=V, BK=BK, BV=BV, CHUNK_T=CHUNK,
        HAS_INIT=s0 is not None, STORE_FINAL=final is not None, SAVE=save, VARLEN=cu_seqlens is not None,
    )
    return o, (ckpt if save else None)


class _FusedRecurrent(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, w, k, v, a, b, scale, initial_state, output_final_state, cu_seqlens):
        r, w, k, v, a, b = (x.contiguous() for x in (r, w, k, v, a, b))
        B, T, H, K, V, N, *_ = _meta(k, v, cu_seqlens)
        s0 = None if initial_state is None else initial_state.float().contiguous()
        final = torch.empty(N, H, K, V, dtype=torch.float32, device=k.device) if output_final_state else None
        save = any(ctx.needs_input_grad)
        o, ckpt = _run_forward(r, w, k, v, a, b, scale, s0, final, cu_seqlens, save)
        if save:
            ctx.save_for_backward(r, w, k, v, a, b, ckpt, cu_seqlens)
            ctx.scale, ctx.has_init = scale, initial_state is not None
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        r, w, k, v, a, b, ckpt, cu_seqlens = ctx.saved_tensors
        B, T, H, K, V, N, NC, BK, BV, NV = _meta(k, v, cu_seqlens)
        parts = [torch.empty(NV, B, T, H, K, dtype=torch.float32, device=k.device) for _ in range(5)]
        dv = torch.empty_like(v)
        ds0 = torch.empty(N, H, K, V, dtype=torch.float32, device=k.device)
        scratch = torch.empty(N * H * NV, CHUNK, K, V, dtype=torch.float32, device=k.device)
        _bwd_kernel[(NV, N * H)](
            r, w, k, v, a, b, do.contiguous(), dfinal.contiguous() if dfinal is not None else do, ckpt, scratch,
            cu_seqlens if cu_seqlens is not None else do, *parts, dv, ds0, ctx.scale, T, NC, NV, B * T * H,
            H=H, K=K, V=V, BK=BK, BV=BV, CHUNK_T=CHUNK, HAS_DFINAL=dfinal is not None, VARLEN=cu_seqlens is not None,
        )
        dr, dw, dk, da, db = (p.sum(0) for p in parts)
        grads = (dr.to(r.dtype), dw.to(w.dtype), dk.to(k.dtype), dv, da.to(a.dtype), db.to(b.dtype))
        return (*grads, None, ds0 if ctx.has_init else None, None, None)


def fused_recurrent(r, log_w, k, v, a, b, scale, initial_state, output_final_state, cu_seqlens):
    """Triton forward (and backward through autograd); arguments as
    :func:`hf_recurrent.kernels.delta_rule.generalized_delta_rule`."""
    return _FusedRecurrent.apply(r, log_w, k, v, a, b, scale, initial_state, output_final_state, cu_seqlens)


def fused_recurrent_step(r, log_w, k, v, a, b, state, scale):
    """One Triton decode step on ``[B, H, *]`` inputs; ``state [B, H, K, V]`` read and updated in place."""
    o, _ = _run_forward(*(x[:, None].contiguous() for x in (r, log_w, k, v, a, b)), scale, state, state, None, False)
    return o[:, 0]
