r"""Triton selective scan, the entry point: tuning knobs, design dispatch, autograd op and the one-token decode step.

Maths (see the package docstring): with ``delta_t = softplus(dt_t + bias)``, ``a_t = exp(delta_t A)``,
``u_t = delta_t x_t`` and ``b_t = u_t B_t``, the state ``h_t = a_t h_{t-1} + b_t`` (``[D, N]`` per sequence) gives
``y_t = (sum_n C_t h_t + D x_t) silu(z_t)``. Layout: ``x, dt, z, y`` are ``[B*T, D]`` rows, ``B, C`` ``[B*T, N]`` rows.
Accumulation is float32 throughout; ``N`` is padded to a power of two ``BN`` (padded states stay zero).

The backward runs the adjoint recurrence in reverse. With ``g_t = dL/dh_t`` (the sum of the output's term and of
the later steps' term), ``dy'_t = dy_t silu(z_t)`` and ``q_t = a_t g_t`` (the gradient passed to ``h_{t-1}``):

* ``g_t = C_t dy'_t + q_{t+1}``, ``q_{T+1} = dL/dh_T`` (the final state's gradient), ``dh_0 = q_1``;
* ``dx_t = delta_t sum_n g_t B_t + D dy'_t``, ``ddelta_t = x_t sum_n g_t B_t + sum_n q_t h_{t-1} A``;
* ``dA = sum_t q_t h_{t-1} delta_t``, ``dB_t = sum_d g_t u_t``, ``dC_t = sum_d dy'_t h_t``, ``dD = sum_t dy'_t x_t``;
* ``ddt = ddelta * sigmoid(dt + bias)`` with the softplus, ``dz_t = dy_t y'_t sig(z_t) (1 + z_t (1 - sig(z_t)))``
  where ``y'_t = sum_n C_t h_t + D x_t``.

The backward needs ``h_{t-1}`` walking backwards: the forward saves the state at the start of every tile of
``BLOCK_T`` steps, the backward's tile (float32, ``4 N / BLOCK_T`` bytes per element of ``x``), when a gradient is
needed, and the backward recomputes each tile's states from it (never dividing by ``a``, which may underflow to 0).
The sequential forward steps tiles of its own length ``SEQ_FWD_BLOCK_T`` (both powers of two, so one divides the
other) and saves the state before every ``BLOCK_T``-th step of a sequence; the scan design's forward tile is
``BLOCK_T``.

Two designs, chosen by the module knob ``DESIGN`` (read at call time; the backward uses its forward's design), both
passing the CPU-interpreter and H200 tests. The default is ``"sequential"``, the faster on an H200 (bf16, N = 16,
d_inner 2048, ``benchmarks/bench_selective_scan.py --sweep``): at 8 x 2048 the forward takes 0.69 ms with tiles of 8
steps and 32 channels a one-warp program (1.11 ms with tiles of 32, 2.07 of 16; the scan design 1.30 ms) and forward
plus backward 2.91 ms with backward tiles of 16, two warps and scratch groups of 2 (3.24 with tiles of 8; the scan
design 11.5 to 15.8). Its grid is only ``sequences x channel blocks``, so the same tokens as few long sequences
left the GPU nearly idle: 8.2 / 10.5 ms (fwd / fwd+bwd) at 2 x 8192 and 16.2 / 20.7 at 1 x 16384. It now splits
such sequences into chunks of ``SEQ_CHUNK`` steps run in parallel, exactly (three passes, automatic by default;
:mod:`.triton_chunked` has the maths and the measured rule): 1.72 / 3.65 ms at 1 x 16384, 1.71 / 3.63 at 2 x 8192.

Files: each design, its kernels and launchers with its layout and costs, has a module of its own, ``"scan"``
:mod:`.triton_scan` and ``"sequential"`` :mod:`.triton_sequential` (kernels and launchers over whole sequences or
segments of them) with :mod:`.triton_chunked` (its entry points and the time-parallel chunking); what both designs
share (the jitted step size and sequence bounds, the host-side records of a call) is in :mod:`.triton_common`. This
module holds the knobs of both designs (module attributes, set by tests and the benchmark; the design launchers read
them from here at call time), the dispatch table ``_DESIGNS``, the autograd Function, the decode step kernel and the
public functions.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_chunked import _sequential_backward, _sequential_forward
from .triton_common import _c, _f32, _Problem, _step_size, _tile_offsets
from .triton_scan import _scan_backward, _scan_forward

# Tuning knobs, read at call time (benchmarks/bench_selective_scan.py --sweep times alternatives on the GPU).
DESIGN = "sequential"  # or "scan"
BLOCK_T = 16  # steps between saved states = the backward's tile (both designs) and the scan forward's; a power of two
SEQ_FWD_BLOCK_T = 8  # sequential forward: steps per (unrolled) tile, a power of two; saves every BLOCK_T-th state
SEQ_FWD_BLOCK_D = 32  # sequential forward: channels per program, a power of two (32 * warps: one per thread)
SEQ_FWD_WARPS = 1
SEQ_BWD_WARPS = 2  # sequential backward: 32 channels per warp, one per thread
SEQ_GROUP = 2  # backward: steps per scratch entry (registers hold SEQ_GROUP + 1 states); a power of two <= BLOCK_T
SEQ_CHUNK = None  # sequential: steps per time-parallel chunk, a multiple of BLOCK_T; 0: never; None: automatic
SEQ_CHUNK_PROGRAMS = None  # automatic: chunk when the grid has fewer programs; None: the GPU's SMs (CPU: never)
SEQ_CHUNK_AUTO = 512  # automatic chunk length (rounded up to a multiple of the tile)
SCAN_FWD_BLOCK_D = 16  # scan design: channels per program (a tile is BLOCK_T x BLOCK_D x BN float32 registers)
SCAN_BWD_BLOCK_D = 16
SCAN_FWD_WARPS = 4
SCAN_BWD_WARPS = 8
STEP_BLOCK_D = 64


@triton.jit
def _step_kernel(
    x, dt, A, Bm, Cm, Dp, z, dt_bias, state, y,
    D, N,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    BD: tl.constexpr, BN: tl.constexpr,
):
    i_d, i_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    o_d = i_d * BD + tl.arange(0, BD)
    o_n = tl.arange(0, BN)
    m_d, m_n = o_d < D, o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    x_t = tl.load(x + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    v = tl.load(dt + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    delta = _step_size(v, SOFTPLUS)
    A_t = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    B_t = tl.load(Bm + i_b * N + o_n, mask=m_n, other=0.0).to(tl.float32)
    C_t = tl.load(Cm + i_b * N + o_n, mask=m_n, other=0.0).to(tl.float32)
    h = tl.load(state + i_b * D * N + o_dn, mask=m_dn, other=0.0)
    h = tl.exp(delta[:, None] * A_t) * h + (delta * x_t)[:, None] * B_t[None, :]
    tl.store(state + i_b * D * N + o_dn, h, mask=m_dn)
    out = tl.sum(h * C_t[None, :], axis=1)
    if HAS_D:
        out += tl.load(Dp + o_d, mask=m_d, other=0.0).to(tl.float32) * x_t
    if HAS_Z:
        z_t = tl.load(z + i_b * D + o_d, mask=m_d, other=0.0).to(tl.float32)
        out *= z_t * tl.sigmoid(z_t)
    tl.store(y + i_b * D + o_d, out.to(y.dtype.element_ty), mask=m_d)


# ----------------------------------------------------------------------------------------------------------------
# Host side.


def _tiles(batch: int, T: int, cu_seqlens: torch.Tensor | None, bt: int) -> tuple[int, torch.Tensor | None, int]:
    """(number of sequences, per-sequence first tile index or None, total tiles)."""
    if cu_seqlens is None:
        return batch, None, batch * triton.cdiv(T, bt)
    offsets = _tile_offsets(cu_seqlens, bt)
    return cu_seqlens.numel() - 1, offsets[:-1].contiguous(), int(offsets[-1])


_DESIGNS = {"sequential": (_sequential_forward, _sequential_backward), "scan": (_scan_forward, _scan_backward)}


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, softplus, h0, output_final_state, cu_seqlens, save):
        if DESIGN not in _DESIGNS:
            raise ValueError(f"DESIGN must be one of {sorted(_DESIGNS)}; got {DESIGN!r}")
        x, dt, A, D, z, dt_bias, h0 = map(_c, (x, dt, A, D, z, dt_bias, h0))
        batch, T, dim = x.shape
        N = A.shape[1]
        n_seq, tile_offsets, n_tiles = _tiles(batch, T, cu_seqlens, BLOCK_T)
        p = _Problem(x, dt, A, B, C, D, z, dt_bias, softplus, cu_seqlens, tile_offsets, n_seq, BLOCK_T)
        y = torch.empty_like(x)
        hT = _f32(p, n_seq, dim, N) if output_final_state else None
        ckpt = None  # the saved tile-start states: [tiles, BN, D] (sequential) or [tiles, D, N] (scan)
        if save:
            seq = DESIGN == "sequential"
            ckpt = _f32(p, n_tiles, triton.next_power_of_2(N), dim) if seq else _f32(p, n_tiles, dim, N)
        _DESIGNS[DESIGN][0](p, h0, y, hT, ckpt)
        if save:
            ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, ckpt, cu_seqlens, tile_offsets)
            ctx.design, ctx.softplus, ctx.n_seq, ctx.block_t = DESIGN, softplus, n_seq, BLOCK_T
            ctx.has_h0, ctx.h0_dtype = h0 is not None, None if h0 is None else h0.dtype
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, dt, A, B, C, D, z, dt_bias, ckpt, cu_seqlens, tile_offsets = ctx.saved_tensors
        p = _Problem(x, dt, A, B, C, D, z, dt_bias, ctx.softplus, cu_seqlens, tile_offsets, ctx.n_seq, ctx.block_t)
        g = _DESIGNS[ctx.design][1](p, ckpt, dy.contiguous(), _c(dhT))
        dbias = g.ddt.sum((0, 1)).to(dt_bias.dtype) if dt_bias is not None else None
        return (
            g.dx, g.ddt.to(dt.dtype), g.dA.sum(0).to(A.dtype), g.dB.to(B.dtype), g.dC.to(C.dtype),
            None if D is None else g.dD.sum(0).to(D.dtype), g.dz, dbias, None,
            g.dh0.to(ctx.h0_dtype) if ctx.has_h0 else None, None, None, None,
        )


def selective_scan(x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens):
    """Triton forward (and backward through autograd); arguments and shapes as in the package docstring.

    Tile-start states are saved for the backward only when a gradient will be asked for.
    """
    tensors = (x, dt, A, B, C, D, z, dt_bias, initial_state)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return _SelectiveScan.apply(
        x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens, save
    )


def selective_scan_step(x, dt, A, B, C, state, D, z, dt_bias, dt_softplus):
    """One fused decode step; ``state`` ``[B, D, N]`` float32 contiguous is updated in place."""
    if not state.is_contiguous():
        raise ValueError("state must be contiguous (it is updated in place)")
    batch, dim = x.shape
    N = A.shape[1]
    y = torch.empty_like(x)
    grid = (triton.cdiv(dim, STEP_BLOCK_D), batch)
    _step_kernel[grid](
        _c(x), _c(dt), _c(A), _c(B), _c(C), _c(D), _c(z), _c(dt_bias), state, y, dim, N,
        SOFTPLUS=dt_softplus, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        BD=STEP_BLOCK_D, BN=triton.next_power_of_2(N),
    )
    return y
