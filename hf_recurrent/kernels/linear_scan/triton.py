"""Triton kernels of the element-wise linear scan: one program per (sequence, head, block of channels), a
sequential walk over time (the recurrence is element-wise, so the walk is bound by memory bandwidth, with the
state in registers), forward and reverse."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _scan_fwd_kernel(LOG_A, Bv, H0, Y, HT, T, HD, BD: tl.constexpr):
    seq = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    mask = cols < HD
    h = tl.load(H0 + seq * HD + cols, mask=mask, other=0.0)
    base = seq * T * HD + cols
    for t in range(T):
        a = tl.exp(tl.load(LOG_A + base + t * HD, mask=mask, other=0.0).to(tl.float32))
        h = a * h + tl.load(Bv + base + t * HD, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + base + t * HD, h.to(Y.dtype.element_ty), mask=mask)
    tl.store(HT + seq * HD + cols, h, mask=mask)


@triton.jit
def _scan_bwd_kernel(LOG_A, H0, Y, DY, DHT, DLOG_A, DB, DH0, T, HD, BD: tl.constexpr):
    seq = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    mask = cols < HD
    dh = tl.load(DHT + seq * HD + cols, mask=mask, other=0.0)
    base = seq * T * HD + cols
    for tt in range(T):
        t = T - 1 - tt
        dh += tl.load(DY + base + t * HD, mask=mask, other=0.0).to(tl.float32)
        a = tl.exp(tl.load(LOG_A + base + t * HD, mask=mask, other=0.0).to(tl.float32))
        if t > 0:
            h_prev = tl.load(Y + base + (t - 1) * HD, mask=mask, other=0.0).to(tl.float32)
        else:
            h_prev = tl.load(H0 + seq * HD + cols, mask=mask, other=0.0)
        tl.store(DB + base + t * HD, dh, mask=mask)
        tl.store(DLOG_A + base + t * HD, dh * a * h_prev, mask=mask)
        dh = dh * a
    tl.store(DH0 + seq * HD + cols, dh, mask=mask)


def _grid(B: int, H: int, D: int) -> tuple[tuple[int, int], int]:
    # Narrow blocks: many programs in flight (the loads of later steps do not wait for the state, they pipeline).
    BD = min(256, triton.next_power_of_2(H * D))
    return (B, triton.cdiv(H * D, BD)), BD


def _forward(log_a, b, h0):
    B, T, H, D = b.shape
    y = torch.empty_like(b)
    ht = torch.empty(B, H, D, device=b.device, dtype=torch.float32)
    grid, BD = _grid(B, H, D)
    _scan_fwd_kernel[grid](log_a, b, h0, y, ht, T, H * D, BD=BD)
    return y, ht


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_a, b, h0):
        y, ht = _forward(log_a, b, h0)
        ctx.save_for_backward(log_a, h0, y)
        return y, ht

    @staticmethod
    def backward(ctx, dy, dht):
        log_a, h0, y = ctx.saved_tensors
        B, T, H, D = y.shape
        dlog_a = torch.empty(B, T, H, D, device=y.device, dtype=torch.float32)
        db = torch.empty_like(dlog_a)
        dh0 = torch.empty_like(h0)
        dht = torch.zeros_like(h0) if dht is None else dht.float().contiguous()
        grid, BD = _grid(B, H, D)
        _scan_bwd_kernel[grid](log_a, h0, y, dy.contiguous(), dht, dlog_a, db, dh0, T, H * D, BD=BD)
        return dlog_a.to(log_a.dtype), db.to(y.dtype), dh0


def linear_scan(log_a, b, state):
    """Triton counterpart of :func:`reference.linear_scan` (same arguments, same results)."""
    log_a, b, state = log_a.contiguous(), b.contiguous(), state.float().contiguous()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (log_a, b, state)):
        return _LinearScan.apply(log_a, b, state)
    return _forward(log_a, b, state)
