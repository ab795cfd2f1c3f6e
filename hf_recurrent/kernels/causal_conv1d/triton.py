"""Triton kernels of the causal depthwise conv1d (kernel width ``W`` 2..4): forward, backward, one-token step.

``x`` is read as ``[B, T, D]`` rows (contiguous), the carried ``tail`` as ``[B, D, W-1]``. Write ``xin(s)`` for the
input at time ``s`` of the extended sequence: ``x[s]`` for ``0 <= s < T``, ``tail[W-1+s]`` for ``-(W-1) <= s < 0``.
Forward: ``pre_t = b + sum_i w_i xin(t-W+1+i)``, ``y_t = act(pre_t)``. Backward recomputes ``pre`` where needed
(``dpre_t = dy_t act'(pre_t)``) and gives, over the extended range ``s`` in ``[-(W-1), T)``,
``dxin(s) = sum_i w_i dpre_{s+W-1-i}`` (``dx`` for ``s >= 0``, ``dtail`` for ``s < 0``); ``dw_i = sum_t dpre_t
xin(t-W+1+i)`` and ``db = sum_t dpre_t`` are per-(time block, batch) partial sums added up in PyTorch.
One program handles ``BLOCK_T`` steps x ``BLOCK_D`` channels of one batch row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_T = 64
BLOCK_D = 64


@triton.jit
def _xin(x, tail, i_b, rows, o_d, m_d, T, D, W: tl.constexpr, HAS_TAIL: tl.constexpr):
    """``xin(rows)`` ``[BT, BD]`` float32 (zeros outside ``[-(W-1), T)`` or without a tail)."""
    m_x = ((rows >= 0) & (rows < T))[:, None] & m_d[None, :]
    v = tl.load(x + (i_b * T + rows)[:, None] * D + o_d[None, :], mask=m_x, other=0.0).to(tl.float32)
    if HAS_TAIL:
        m_tail = ((rows < 0) & (rows >= 1 - W))[:, None] & m_d[None, :]
        o_tail = (i_b * D + o_d)[None, :] * (W - 1) + (rows + W - 1)[:, None]
        v += tl.load(tail + o_tail, mask=m_tail, other=0.0).to(tl.float32)
    return v


@triton.jit
def _pre(x, tail, weight, bias, i_b, rows, o_d, m_d, T, D,
         W: tl.constexpr, HAS_TAIL: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    for i in tl.static_range(W):
        w_i = tl.load(weight + o_d * W + i, mask=m_d, other=0.0).to(tl.float32)
        acc += w_i[None, :] * _xin(x, tail, i_b, rows - (W - 1) + i, o_d, m_d, T, D, W, HAS_TAIL)
    return acc


@triton.jit
def _dpre(x, tail, weight, bias, dy, i_b, rows, o_d, m_d, T, D,
          W: tl.constexpr, HAS_TAIL: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
          BT: tl.constexpr, BD: tl.constexpr):
    """``dL/dpre`` at ``rows`` (zero outside ``[0, T)``)."""
    m = ((rows >= 0) & (rows < T))[:, None] & m_d[None, :]
    g = tl.load(dy + (i_b * T + rows)[:, None] * D + o_d[None, :], mask=m, other=0.0).to(tl.float32)
    if SILU:
        pre = _pre(x, tail, weight, bias, i_b, rows, o_d, m_d, T, D, W, HAS_TAIL, HAS_BIAS, BT, BD)
        s = tl.sigmoid(pre)
        g = g * s * (1.0 + pre * (1.0 - s))
    return g


@triton.jit
def _fwd_kernel(x, tail, weight, bias, y, T, D,
                W: tl.constexpr, HAS_TAIL: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                BT: tl.constexpr, BD: tl.constexpr):
    i_t, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rows = i_t * BT + tl.arange(0, BT)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    pre = _pre(x, tail, weight, bias, i_b, rows, o_d, m_d, T, D, W, HAS_TAIL, HAS_BIAS, BT, BD)
    if SILU:
        pre = pre * tl.sigmoid(pre)
    m = (rows < T)[:, None] & m_d[None, :]
    tl.store(y + (i_b * T + rows)[:, None] * D + o_d[None, :], pre.to(y.dtype.element_ty), mask=m)


@triton.jit
def _bwd_kernel(x, tail, weight, bias, dy, dx, dtail, dw_part, db_part, T, D,
                W: tl.constexpr, HAS_TAIL: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                BT: tl.constexpr, BD: tl.constexpr):
    i_t, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rows = i_t * BT + tl.arange(0, BT)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    m = (rows < T)[:, None] & m_d[None, :]
    part = (i_b * tl.num_programs(0) + i_t) * D
    # dx: dxin(s) = sum_i w_i dpre(s + W-1-i)
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    for i in tl.static_range(W):
        w_i = tl.load(weight + o_d * W + i, mask=m_d, other=0.0).to(tl.float32)
        acc += w_i[None, :] * _dpre(x, tail, weight, bias, dy, i_b, rows + (W - 1) - i, o_d, m_d, T, D,
                                    W, HAS_TAIL, HAS_BIAS, SILU, BT, BD)
    tl.store(dx + (i_b * T + rows)[:, None] * D + o_d[None, :], acc.to(dx.dtype.element_ty), mask=m)
    # weight and bias: partial sums over this block's rows
    g = _dpre(x, tail, weight, bias, dy, i_b, rows, o_d, m_d, T, D, W, HAS_TAIL, HAS_BIAS, SILU, BT, BD)
    for i in tl.static_range(W):
        xs = _xin(x, tail, i_b, rows - (W - 1) + i, o_d, m_d, T, D, W, HAS_TAIL)
        tl.store(dw_part + (part + o_d) * W + i, tl.sum(g * xs, axis=0), mask=m_d)
    if HAS_BIAS:
        tl.store(db_part + part + o_d, tl.sum(g, axis=0), mask=m_d)
    # the tail: dxin(s) for s in [-(W-1), 0), done by the first time block
    if HAS_TAIL:
        if i_t == 0:
            s = tl.arange(0, 4) - (W - 1)
            acc_t = tl.zeros([4, BD], dtype=tl.float32)
            for i in tl.static_range(W):
                w_i = tl.load(weight + o_d * W + i, mask=m_d, other=0.0).to(tl.float32)
                acc_t += w_i[None, :] * _dpre(x, tail, weight, bias, dy, i_b, s + (W - 1) - i, o_d, m_d, T, D,
                                              W, HAS_TAIL, HAS_BIAS, SILU, 4, BD)
            m_s = (s < 0)[:, None] & m_d[None, :]
            o_tail = (i_b * D + o_d)[None, :] * (W - 1) + (s + W - 1)[:, None]
            tl.store(dtail + o_tail, acc_t.to(dtail.dtype.element_ty), mask=m_s)


@triton.jit
def _step_kernel(x, tail, weight, bias, y, D,
                 W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BD: tl.constexpr):
    i_d, i_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    x_t = tl.load(x + i_b * D + o_d, mask=m_d, other=0.0)
    acc = tl.load(weight + o_d * W + (W - 1), mask=m_d, other=0.0).to(tl.float32) * x_t.to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    o_tail = (i_b * D + o_d) * (W - 1)
    prev = tl.load(tail + o_tail, mask=m_d, other=0.0)
    for i in tl.static_range(W - 1):
        if i + 1 < W - 1:
            nxt = tl.load(tail + o_tail + i + 1, mask=m_d, other=0.0)
        else:
            nxt = x_t.to(prev.dtype)
        acc += tl.load(weight + o_d * W + i, mask=m_d, other=0.0).to(tl.float32) * prev.to(tl.float32)
        tl.store(tail + o_tail + i, nxt, mask=m_d)
        prev = nxt
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y + i_b * D + o_d, acc.to(y.dtype.element_ty), mask=m_d)


class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, tail, silu):
        x, weight, tail = x.contiguous(), weight.contiguous(), tail.contiguous()
        bias = None if bias is None else bias.contiguous()
        B, T, D = x.shape
        W = weight.shape[1]
        y = torch.empty_like(x)
        grid = (triton.cdiv(T, BLOCK_T), triton.cdiv(D, BLOCK_D), B)
        _fwd_kernel[grid](x, tail, weight, bias, y, T, D, W=W, HAS_TAIL=W > 1, HAS_BIAS=bias is not None,
                          SILU=silu, BT=BLOCK_T, BD=BLOCK_D)
        ctx.save_for_backward(x, weight, bias, tail)
        ctx.silu = silu
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, tail = ctx.saved_tensors
        B, T, D = x.shape
        W = weight.shape[1]
        n_t = triton.cdiv(T, BLOCK_T)
        dx = torch.empty_like(x)
        dtail = torch.zeros_like(tail)
        dw_part = x.new_empty(B * n_t, D, W, dtype=torch.float32)
        db_part = x.new_empty(B * n_t, D, dtype=torch.float32) if bias is not None else None
        _bwd_kernel[(n_t, triton.cdiv(D, BLOCK_D), B)](
            x, tail, weight, bias, dy.contiguous(), dx, dtail, dw_part, db_part, T, D,
            W=W, HAS_TAIL=W > 1, HAS_BIAS=bias is not None, SILU=ctx.silu, BT=BLOCK_T, BD=BLOCK_D,
        )
        db = None if bias is None else db_part.sum(0).to(bias.dtype)
        return dx, dw_part.sum(0).to(weight.dtype), db, dtail, None


def causal_conv1d(x, weight, bias, tail, silu: bool) -> torch.Tensor:
    """``y`` ``[B, T, D]``; differentiable in ``x``, ``weight``, ``bias`` and ``tail``."""
    if x.shape[1] == 0:
        return torch.empty_like(x)
    return _CausalConv1d.apply(x, weight, bias, tail.to(x.dtype), silu)


def causal_conv1d_step(x, weight, bias, tail, silu: bool) -> torch.Tensor:
    """One token; ``tail`` ``[B, D, W-1]`` (contiguous) is shifted in place."""
    if not tail.is_contiguous():
        raise ValueError("tail must be contiguous (it is updated in place)")
    B, D = x.shape
    W = weight.shape[1]
    y = torch.empty_like(x)
    _step_kernel[(triton.cdiv(D, BLOCK_D), B)](
        x.contiguous(), tail, weight.contiguous(), None if bias is None else bias.contiguous(), y, D,
        W=W, HAS_BIAS=bias is not None, SILU=silu, BD=BLOCK_D,
    )
    return y
