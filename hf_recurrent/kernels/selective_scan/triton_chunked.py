r"""The ``"sequential"`` design's entry points, with time-parallel chunking for grids too small to fill the GPU.

A program of the sequential design (:mod:`.triton_sequential`) walks the whole of one sequence for one block of
channels, so its grid is ``sequences x channel blocks``: at batch 1 x T 16384, d_inner 2048, 64 one-warp programs
on a 132-SM H200, each walking 16k steps (16 ms forward against 0.7 ms for the same tokens as 8 x 2048). Chunking
splits every sequence into segments of ``L`` steps (``SEQ_CHUNK``, a multiple of ``BLOCK_T``; the last segment of a
sequence ragged) and runs the segments in parallel. The recurrence is affine in the state, which makes this exact
(no approximation beyond float32 rounding). With ``P_c = prod_{t in c} a_t = exp(A sum_{t in c} delta_t)`` per
(channel, state) for segment ``c`` of a sequence:

Forward.

1. Per (segment, channel block), :func:`_chunk_fwd_kernel`: the segment's final state from a zero start,
   ``hloc_c``, and ``sum_{t in c} delta_t`` per channel.
2. Per sequence, :func:`_combine_kernel` walks its segments in order: the state at the start of segment ``c`` is
   ``H_{c-1}``, with ``H_0 = h_0`` (the given initial state) and ``H_c = P_c H_{c-1} + hloc_c``; the sequence's
   final state is ``H_{last}``.
3. The sequential forward over the segments as packed sequences (segment offsets in the ``cu_seqlens`` slot),
   started from ``H_{c-1}``: ``y`` and the saved states. As ``L`` is a multiple of ``BLOCK_T``, each segment's tiles
   are its sequence's tiles and the saved states land where an unchunked forward puts them: the backward may chunk
   or not, independently of the forward.

Backward, with ``q_t`` (the gradient passed to ``h_{t-1}``) as in :mod:`.triton`: ``q_t = a_t (C_t dy'_t +
q_{t+1})``, ``dy' = dy silu(z)``, is affine in ``q`` too.

1. Per (segment, channel block), :func:`_chunk_bwd_kernel`: the gradient at the segment's start from a zero
   gradient at its end, ``qloc_c`` (``q`` walked back over the segment from ``q = 0``), and ``sum delta``.
2. Per sequence, :func:`_combine_kernel` walks the segments in reverse: the gradient of segment ``c``'s final state
   is ``G_c``, with ``G_{last} = dL/dh_T`` (or 0) and ``G_{c-1} = P_c G_c + qloc_c``; ``dh_0 = P_1 G_1 + qloc_1``.
3. The sequential backward over the segments with the end gradients ``G_c`` and the forward's saved states: ``dx,
   ddt, dz, dB, dC`` per row as unchunked; ``dA``, ``dD`` per segment, summed over segments by the caller as it
   sums over sequences (both are shared by all sequences); its per-segment ``dh0`` is dropped for step 2's.

Cost: steps 1 and 3 each walk every step once (the forward's step 1 without outputs, the backward's with ``BN``
``exp2`` and ``2 BN`` multiply-adds per step and channel), so chunking roughly doubles the work to multiply the
programs by ``T / L``; step 2 touches ``[segments, D, N]`` float32 a few times. It pays when the grid is small:
``SEQ_CHUNK = None`` (the default) chunks into segments of ``SEQ_CHUNK_AUTO`` steps (512) when the unchunked grid,
``sequences x channel blocks``, has fewer programs than ``SEQ_CHUNK_PROGRAMS`` (default: the GPU's SM count);
forward and backward decide apart (their channel blocks differ). Measured on an H200 (bf16, d_inner 2048, N 16,
``bench_selective_scan.py --sweep``): at 1 x 16384 the forward takes 5.12 ms unchunked, 1.72 in chunks of 512,
3.16 in chunks of 2048, and forward+backward 22.7 / 3.66 / 6.09; at 8 x 2048 (512 forward and 256 backward
programs) chunking only costs (fwd+bwd 3.17 unchunked, 3.62 in chunks of 512). On the CPU (no SM count) the
automatic rule chunks only when ``SEQ_CHUNK_PROGRAMS`` is set.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..backend import cuda_properties
from .triton_common import _bounds, _f32, _Grads, _Problem, _tile_offsets
from .triton_sequential import (
    _advance, _channel_block, _launch_backward, _launch_forward, _load_bc, _pack_bc, _row, _rows, _step_sizes,
    _steps, _tile,
)

COMBINE_BLOCK = 256  # (channel, state) pairs per program of the combine kernel


@triton.jit(do_not_specialize=["one"])
def _chunk_fwd_kernel(
    x, dt, A, BC, dt_bias, h_loc, delta_sum, cu_seqlens, tile_offsets,
    T, D, N, one,
    SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, VARLEN: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
):
    """Per segment ``i_s``: the state at its end from a zero state, ``h_loc [S, D, N]``, and ``sum_t delta_t``,
    ``delta_sum [S, D]``; laid out as :func:`.triton_sequential._seq_fwd_kernel` (one channel per thread)."""
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    bos, eos, _first_tile = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, BT)
    o_d, o_c, m_d, o_n, m_dn, o_dn, A2 = _channel_block(A, i_d, D, N, one, BD, BN)
    r = tl.arange(0, BT)
    h = _rows(tl.zeros([BD, BN], dtype=tl.float32), o_n, BN)
    bias = tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    d_sum = tl.zeros([BD], dtype=tl.float32)
    o_tile = o_c[:, None] + r[None, :] * D
    m = m_d[:, None] & (bos + r < eos)[None, :]
    x_next = tl.load(x + bos * D + o_tile, mask=m, other=0.0)  # one tile ahead, as the forward
    dt_next = tl.load(dt + bos * D + o_tile, mask=m, other=0.0)
    for k in range(0, tl.cdiv(eos - bos, BT)):
        t0 = bos + k * BT
        m = m_d[:, None] & (t0 + r < eos)[None, :]
        x_t, _, delta = _steps(x_next, dt_next, m, bias, HAS_BIAS, SOFTPLUS)
        m_next = m_d[:, None] & (t0 + BT + r < eos)[None, :]
        x_next = tl.load(x + (t0 + BT) * D + o_tile, mask=m_next, other=0.0)
        dt_next = tl.load(dt + (t0 + BT) * D + o_tile, mask=m_next, other=0.0)
        d_sum += tl.sum(delta, axis=1)
        u = delta * x_t
        for s in tl.static_range(BT):
            h = _advance(h, _row(delta, r, s), _row(u, r, s), _load_bc(BC, t0 + s, BN), A2, BN)
    tl.store(h_loc + i_s.to(tl.int64) * D * N + o_dn, _tile(h, o_n, BN, BD), mask=m_dn)
    tl.store(delta_sum + i_s.to(tl.int64) * D + o_d, d_sum, mask=m_d)


@triton.jit(do_not_specialize=["one"])
def _chunk_bwd_kernel(
    dt, A, BC, z, dt_bias, dy, q_loc, delta_sum, cu_seqlens, tile_offsets,
    T, D, N, one,
    SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, VARLEN: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
):
    """Per segment ``i_s``: the gradient at its start from a zero gradient at its end, ``q_loc [S, D, N]``
    (``q_t = a_t (C_t dy'_t + q_{t+1})`` walked back, ``dy' = dy silu(z)``), and ``sum_t delta_t``."""
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    bos, eos, _first_tile = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, BT)
    o_d, o_c, m_d, o_n, m_dn, o_dn, A2 = _channel_block(A, i_d, D, N, one, BD, BN)
    r = tl.arange(0, BT)
    q = _rows(tl.zeros([BD, BN], dtype=tl.float32), o_n, BN)
    bias = tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    d_sum = tl.zeros([BD], dtype=tl.float32)
    n_tiles = tl.cdiv(eos - bos, BT)
    for kk in range(0, n_tiles):
        t0 = bos + (n_tiles - 1 - kk) * BT
        m = m_d[:, None] & (t0 + r < eos)[None, :]
        off = o_c[:, None] + (t0 + r)[None, :] * D
        _, delta = _step_sizes(tl.load(dt + off, mask=m, other=0.0), m, bias, HAS_BIAS, SOFTPLUS)
        d_sum += tl.sum(delta, axis=1)
        dout = tl.load(dy + off, mask=m, other=0.0).to(tl.float32)  # 0 past the end: q passes unchanged
        if HAS_Z:
            z_t = tl.load(z + off, mask=m, other=0.0).to(tl.float32)
            dout = dout * z_t * tl.sigmoid(z_t)
        for s in tl.static_range(BT - 1, -1, -1):
            delta_s = _row(delta, r, s)
            dout_s = _row(dout, r, s)
            bc = _load_bc(BC, t0 + s, BN)
            q_prev = ()
            for n in tl.static_range(BN):
                q_prev = q_prev + (tl.exp2(delta_s * A2[n]) * (dout_s * bc[n][1] + q[n]),)
            q = q_prev
    tl.store(q_loc + i_s.to(tl.int64) * D * N + o_dn, _tile(q, o_n, BN, BD), mask=m_dn)
    tl.store(delta_sum + i_s.to(tl.int64) * D + o_d, d_sum, mask=m_d)


@triton.jit
def _combine_kernel(
    A, local, delta_sum, init, starts, final, seq_offsets,
    D, N,
    HAS_INIT: tl.constexpr, STORE_FINAL: tl.constexpr, REVERSE: tl.constexpr, BLOCK: tl.constexpr,
):
    """Per sequence ``i_s``, its segments ``c`` in order (``REVERSE``: backwards) from ``v = init`` (or 0):
    ``starts[c] = v``, then ``v = exp(A delta_sum[c]) v + local[c]``; ``final[i_s] = v``. ``[*, D, N]`` float32
    tensors except ``delta_sum`` ``[segments, D]``, processed ``BLOCK`` flat (channel, state) pairs a program."""
    i_b, i_s = tl.program_id(0), tl.program_id(1)
    o = i_b * BLOCK + tl.arange(0, BLOCK)
    m = o < D * N
    a = tl.load(A + o, mask=m, other=0.0)
    c0 = tl.load(seq_offsets + i_s).to(tl.int64)
    c1 = tl.load(seq_offsets + i_s + 1).to(tl.int64)
    if HAS_INIT:
        v = tl.load(init + i_s.to(tl.int64) * D * N + o, mask=m, other=0.0).to(tl.float32)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32)
    for j in range(c0, c1):
        c = c0 + c1 - 1 - j if REVERSE else j
        tl.store(starts + c * D * N + o, v, mask=m)
        decay = tl.exp(a * tl.load(delta_sum + c * D + o // N, mask=m, other=0.0))
        v = decay * v + tl.load(local + c * D * N + o, mask=m, other=0.0)
    if STORE_FINAL:
        tl.store(final + i_s.to(tl.int64) * D * N + o, v, mask=m)


# ----------------------------------------------------------------------------------------------------------------
# Host side.


class _Segments(NamedTuple):
    """A call's sequences cut into segments of ``L`` steps: ``problem`` is the call with the segments as its packed
    sequences; sequence ``i`` owns segments ``seq_offsets[i]`` to ``seq_offsets[i + 1]`` (at least one, maybe empty)."""

    problem: _Problem
    seq_offsets: torch.Tensor


def _sequence_starts(p: _Problem) -> torch.Tensor:
    """The first row of every sequence and the total, int64 ``[S + 1]`` (``cu_seqlens`` or ``0, T, 2T...``)."""
    if p.cu_seqlens is not None:
        return p.cu_seqlens.long()
    batch, T = p.x.shape[:2]
    return torch.arange(batch + 1, device=p.x.device) * T


def _chunk_length(p: _Problem, block_d: int, step: int) -> int:
    """Steps per segment for a grid of ``block_d`` channels a program, 0 for no chunking: ``SEQ_CHUNK`` if set (a
    multiple of ``BLOCK_T``), else the automatic rule (module docstring), a multiple of ``step``. The rule reads the
    longest packed sequence's length from the device (a synchronisation) only when the grid is small."""
    from . import triton as knobs  # the tuning knobs, read at call time (tests and the benchmark set them)

    if knobs.SEQ_CHUNK is not None:
        if knobs.SEQ_CHUNK < 0 or knobs.SEQ_CHUNK % p.block_t:
            raise ValueError(f"SEQ_CHUNK={knobs.SEQ_CHUNK} must be 0 (off), None (auto) or a multiple of "
                             f"BLOCK_T={p.block_t}")
        return knobs.SEQ_CHUNK
    threshold = knobs.SEQ_CHUNK_PROGRAMS
    if threshold is None:
        threshold = cuda_properties(p.x.device).multi_processor_count if p.x.is_cuda else 0
    if p.n_seq * triton.cdiv(p.x.shape[2], block_d) >= threshold:
        return 0
    L = triton.cdiv(knobs.SEQ_CHUNK_AUTO, step) * step
    bounds = _sequence_starts(p)
    longest = p.x.shape[1] if p.cu_seqlens is None else int((bounds[1:] - bounds[:-1]).max())
    return L if longest > L else 0


def _segments(p: _Problem, L: int) -> _Segments:
    """Every sequence cut into ``cdiv(length, L)`` segments (one for an empty sequence), in order."""
    bounds = _sequence_starts(p)
    counts = ((bounds[1:] - bounds[:-1] + L - 1) // L).clamp_min(1)
    seq_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    # without cu_seqlens the count is known on the host: no synchronisation
    n = p.n_seq * max(triton.cdiv(p.x.shape[1], L), 1) if p.cu_seqlens is None else int(seq_offsets[-1])
    index = torch.arange(n, device=bounds.device)
    first = torch.repeat_interleave(seq_offsets[:-1], counts, output_size=n)
    starts = torch.repeat_interleave(bounds[:-1], counts, output_size=n) + (index - first) * L
    cu = torch.cat([starts, bounds[-1:]])
    problem = p._replace(cu_seqlens=cu, tile_offsets=_tile_offsets(cu, p.block_t)[:-1].contiguous(), n_seq=n)
    return _Segments(problem, seq_offsets)


def _combine(p: _Problem, local: torch.Tensor, delta_sum: torch.Tensor, init: torch.Tensor | None,
             seq_offsets: torch.Tensor, final: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """Step 2 (module docstring): per segment the state at its start (``reverse``: the gradient at its end)."""
    dim, N = p.A.shape
    starts = torch.empty_like(local)
    _combine_kernel[(triton.cdiv(dim * N, COMBINE_BLOCK), p.n_seq)](
        p.A, local, delta_sum, init, starts, final, seq_offsets, dim, N,
        HAS_INIT=init is not None, STORE_FINAL=final is not None, REVERSE=reverse, BLOCK=COMBINE_BLOCK,
    )
    return starts


def _sequential_forward(p: _Problem, h0: torch.Tensor | None, y: torch.Tensor, hT: torch.Tensor | None,
                        ckpt: torch.Tensor | None) -> None:
    """The design's forward: ``y``, the final states ``hT`` and the saved states ``ckpt`` where not None."""
    from . import triton as knobs

    bt, bd, (dim, N) = knobs.SEQ_FWD_BLOCK_T, knobs.SEQ_FWD_BLOCK_D, p.A.shape
    bc = _pack_bc(p.B, p.C, triton.next_power_of_2(N), bt)
    L = _chunk_length(p, bd, max(bt, p.block_t))
    if not L:
        _launch_forward(p, bc, h0, y, hT, ckpt)
        return
    segments = _segments(p, L)
    seg = segments.problem
    local, delta_sum = _f32(p, seg.n_seq, dim, N), _f32(p, seg.n_seq, dim)
    _chunk_fwd_kernel[(triton.cdiv(dim, bd), seg.n_seq)](
        p.x, p.dt, p.A, bc, p.dt_bias, local, delta_sum, seg.cu_seqlens, seg.tile_offsets, p.x.shape[1], dim, N, 1,
        SOFTPLUS=p.softplus, HAS_BIAS=p.dt_bias is not None, VARLEN=True, BT=bt, BD=bd, BN=bc.shape[1],
        num_warps=knobs.SEQ_FWD_WARPS,
    )
    starts = _combine(p, local, delta_sum, h0, segments.seq_offsets, hT, reverse=False)
    _launch_forward(seg, bc, starts, y, None, ckpt)


def _sequential_backward(p: _Problem, ckpt: torch.Tensor, dy: torch.Tensor, dhT: torch.Tensor | None) -> _Grads:
    """The design's backward from the forward's saved states ``ckpt``; ``dA``, ``dD`` per sequence or segment."""
    from . import triton as knobs

    bt, bd, (dim, N) = p.block_t, 32 * knobs.SEQ_BWD_WARPS, p.A.shape
    bc = _pack_bc(p.B, p.C, triton.next_power_of_2(N), bt)
    L = _chunk_length(p, bd, bt)
    if not L:
        return _launch_backward(p, bc, ckpt, dy, dhT)
    segments = _segments(p, L)
    seg = segments.problem
    local, delta_sum = _f32(p, seg.n_seq, dim, N), _f32(p, seg.n_seq, dim)
    _chunk_bwd_kernel[(triton.cdiv(dim, bd), seg.n_seq)](
        p.dt, p.A, bc, p.z, p.dt_bias, dy, local, delta_sum, seg.cu_seqlens, seg.tile_offsets, p.x.shape[1], dim,
        N, 1,
        SOFTPLUS=p.softplus, HAS_Z=p.z is not None, HAS_BIAS=p.dt_bias is not None, VARLEN=True, BT=bt, BD=bd,
        BN=bc.shape[1], num_warps=knobs.SEQ_BWD_WARPS,
    )
    dh0 = _f32(p, p.n_seq, dim, N)
    ends = _combine(p, local, delta_sum, dhT, segments.seq_offsets, dh0, reverse=True)
    return _launch_backward(seg, bc, ckpt, dy, ends)._replace(dh0=dh0)
