r"""Triton kernels of the selective scan: forward, backward and the one-token decode step.

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
``BLOCK_T`` steps (float32, ``4 N / BLOCK_T`` bytes per element of ``x``) when a gradient is needed, and the backward
recomputes each tile's states from it (never dividing by ``a``, which may underflow to 0).

Two designs, chosen by the module knob ``DESIGN`` (read at call time; the backward uses its forward's design). The
default is ``"scan"``, the design whose GPU tests passed on an H200 (at 5% of the bandwidth forward, 1% forward and
backward); ``"sequential"`` passes the same CPU (interpreter) tests and compiles for sm_90 but has not yet run on a
GPU: ``benchmarks/bench_selective_scan.py --sweep`` times both there and keeps the faster.

``"sequential"``. A program owns a block of channels of one sequence, one channel per thread (the
backward always; the forward for ``SEQ_FWD_BLOCK_D = 32 * SEQ_FWD_WARPS``), and keeps each channel's ``BN`` states
in registers as a tuple of ``BN`` ``[BD]`` tensors, so the recurrence never moves data between threads. It walks
time one step at a time; per step and channel: ``BN`` ``exp2`` (of ``delta A log2 e``) and ``4 BN`` multiply-adds,
and ``(B_t[n], C_t[n])`` as one 64-bit load per state (``B`` and ``C`` are packed on the host into a float32
``[B*T + BLOCK_T, BN, 2]`` tensor, all threads of a warp reading the same word). ``x, dt, z, y`` move as
``[BD, BLOCK_T]`` tiles, one channel per thread and a warp's 32 threads on 32 consecutive channels (coalesced
rows); the steps of a tile are unrolled, so that a step's row of a tile is a register. The forward loads a tile's
``x`` and ``dt`` while the previous tile is stepped.

Backward, per tile in reverse. Pass 1 loads the tile's ``x, dt, dy, z``, writes ``dy'`` and ``dz``'s factor
``dy sig(z) (1 + z (1 - sig(z)))`` to a per-program scratch buffer, and recomputes the tile's states from its saved
start, writing every ``SEQ_GROUP``-th state to the scratch (``(BLOCK_T / SEQ_GROUP * BN + 2 BLOCK_T) * BD`` float32 a
program, reused from tile to tile, so it stays in cache). Pass 2 walks the groups of ``SEQ_GROUP`` steps in
reverse: it recomputes a group's states and decays into registers from its scratch entry, then runs the adjoint
steps over them. ``dB_t``, ``dC_t`` are sums over the channels: each warp sums its 32 channels' ``2 BN`` values
with a transposing butterfly (``2 BN - 1`` lane exchanges where a butterfly per value takes ``10 BN``) and writes
one partial row, ``[D / 32, B*T, 2 BN]`` float32, summed on the host (deterministic, no atomics); ``dA``, ``dD``
are per-sequence partials.

At ``N = 16`` this design is bound by arithmetic, not memory: about 190 instructions per step and channel forward
(16 ``exp2``) and 700 backward (recomputation, adjoint, the channel sums), one warp per channel block.

``"scan"`` (default). A program owns ``SCAN_*_BLOCK_D`` channels and solves each tile with ``tl.associative_scan`` on
``(a, b)`` pairs of a ``[BLOCK_T, BLOCK_D, BN]`` register tensor (the adjoint with a reverse scan, ``a_{t+1}``
formed from the next row of ``dt``); ``dB``/``dC`` are summed over channel blocks by float32 atomics.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

# Tuning knobs, read at call time (benchmarks/bench_selective_scan.py --sweep times alternatives on the GPU).
DESIGN = "scan"  # or "sequential" (not yet run on a GPU; see the module docstring)
BLOCK_T = 16  # steps per tile = interval of the saved states (both designs); a power of two
SEQ_FWD_BLOCK_D = 32  # sequential forward: channels per program, a power of two (32 * warps: one per thread)
SEQ_FWD_WARPS = 1
SEQ_BWD_WARPS = 1  # sequential backward: 32 channels per warp, one per thread
SEQ_GROUP = 2  # backward: steps per scratch entry (registers hold SEQ_GROUP + 1 states); a power of two <= BLOCK_T
SCAN_FWD_BLOCK_D = 16  # scan design: channels per program (a tile is BLOCK_T x BLOCK_D x BN float32 registers)
SCAN_BWD_BLOCK_D = 16
SCAN_FWD_WARPS = 4
SCAN_BWD_WARPS = 8
STEP_BLOCK_D = 64

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _step_size(v, SOFTPLUS: tl.constexpr):
    if SOFTPLUS:
        v = tl.where(v > 20.0, v, tl.log(1.0 + tl.exp(v)))
    return v


@triton.jit
def _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN: tl.constexpr, BT: tl.constexpr):
    """First row, end row and first tile index of sequence ``i_s``."""
    if VARLEN:
        bos = tl.load(cu_seqlens + i_s).to(tl.int64)
        eos = tl.load(cu_seqlens + i_s + 1).to(tl.int64)
        tile0 = tl.load(tile_offsets + i_s).to(tl.int64)
    else:
        bos = i_s.to(tl.int64) * T
        eos = bos + T
        tile0 = i_s.to(tl.int64) * tl.cdiv(T, BT)
    return bos, eos, tile0


# ----------------------------------------------------------------------------------------------------------------
# Sequential design: one channel per thread, its states a tuple of [BD] tensors, one time step at a time.
# Tiles are [BD, rows], channels first, with the channel offsets multiplied by ``one``, a run-time 1: the compiler
# then sees no contiguity in a tile and lays the channels over the threads with a channel's whole row in one
# thread's registers, as the [BD] per-step tensors are (an in-register row then costs nothing). Loads stay
# coalesced: the 32 threads of a warp read 32 consecutive channels.


@triton.jit
def _row(tile, idx, i: tl.constexpr):
    """Row ``i`` of a ``[BD, R]`` tile held one channel per thread (``idx`` the row arange): a select and an
    in-register sum that the compiler folds away (adding ``-0.0`` is exact)."""
    return tl.sum(tl.where(idx[None, :] == i, tile, -0.0), axis=1)


@triton.jit
def _rows(tile, idx, R: tl.constexpr):
    """The ``R`` rows of a ``[BD, R]`` tile as a tuple of ``[BD]`` tensors."""
    rows = ()
    for i in tl.static_range(R):
        rows = rows + (_row(tile, idx, i),)
    return rows


@triton.jit
def _put(tile, idx, i: tl.constexpr, row):
    """``tile`` with row ``i`` replaced by ``row`` (register moves once compiled)."""
    return tl.where(idx[None, :] == i, row[:, None], tile)


@triton.jit
def _tile(rows, idx, R: tl.constexpr, BD: tl.constexpr):
    """A tuple of ``R`` ``[BD]`` tensors as a ``[BD, R]`` tile."""
    tile = tl.zeros([BD, R], dtype=tl.float32)
    for i in tl.static_range(R):
        tile = _put(tile, idx, i, rows[i])
    return tile


@triton.jit
def _load_bc(BC, row, BN: tl.constexpr):
    """``(B_t[n], C_t[n])`` for every state: one 64-bit load each from the packed float32 ``[rows, BN, 2]`` tensor
    (which has a tile of zero rows past the end, so rows past a sequence's end need no mask)."""
    pairs = ()
    for n in tl.static_range(BN):
        w = tl.load(BC + row * BN + n)
        b = (w & 0xFFFFFFFF).to(tl.uint32).to(tl.float32, bitcast=True)
        c = (w >> 32).to(tl.uint32).to(tl.float32, bitcast=True)
        pairs = pairs + ((b, c),)
    return pairs


@triton.jit
def _steps(x_tile, dt_tile, m, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """``x``, ``dt + bias`` and the step ``delta`` (0 where masked: past the end the state is left unchanged) of a
    tile, in float32."""
    x_t = x_tile.to(tl.float32)
    v = dt_tile.to(tl.float32)
    if HAS_BIAS:
        v += bias[:, None]
    return x_t, v, tl.where(m, _step_size(v, SOFTPLUS), 0.0)


@triton.jit
def _xor_lanes(v, lane, mask: tl.constexpr, NW: tl.constexpr, BD: tl.constexpr):
    """The value of channel ``lane ^ mask`` of the same 32-channel group (a warp), for every channel."""
    src = tl.reshape(v, [NW, 32])
    return tl.reshape(tl.gather(src, tl.reshape(lane ^ mask, [NW, 32]), axis=1), [BD])


@triton.jit
def _fold(w, lane, HALF: tl.constexpr, NW: tl.constexpr, BD: tl.constexpr):
    """One level of :func:`_lane_sums`: ``2 HALF`` values per channel in, ``HALF`` out."""
    upper = (lane & HALF) != 0
    folded = ()
    for j in tl.static_range(HALF):
        keep = tl.where(upper, w[j + HALF], w[j])
        send = tl.where(upper, w[j], w[j + HALF])
        folded = folded + (keep + _xor_lanes(send, lane, HALF, NW, BD),)
    return folded


@triton.jit
def _lane_sums(vals, lane, NW: tl.constexpr, BD: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr):
    """Sums over each 32-channel group of ``V <= 32`` ``[BD]`` tensors: channel ``l`` of a group gets the group's sum
    of ``vals[l % V]``.

    A transposing butterfly: at the level of bit ``m < V`` a channel keeps the half of its values whose index has
    its own bit ``m`` and receives that half from its partner ``l ^ m`` (``V - 1`` exchanges in all); the levels
    ``m >= V`` add the last value across the remaining partners.
    """
    w = vals
    for level in tl.static_range(LOG_V):
        w = _fold(w, lane, V >> (level + 1), NW, BD)
    total = w[0]
    for level in tl.static_range(LOG_V, 5):
        total += _xor_lanes(total, lane, 1 << level, NW, BD)
    return total


@triton.jit(do_not_specialize=["one"])
def _seq_fwd_kernel(
    x, dt, A, BC, Dp, z, dt_bias, y, h0, hT, ckpt, cu_seqlens, tile_offsets,
    T, D, N, one,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, SAVE: tl.constexpr, VARLEN: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    bos, eos, tile0 = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, BT)
    o_d = i_d * BD + tl.arange(0, BD)
    o_c = o_d * one
    m_d = o_d < D
    o_n = tl.arange(0, BN)
    r = tl.arange(0, BT)
    m_dn = m_d[:, None] & (o_n < N)[None, :]
    o_dn = o_c[:, None] * N + o_n[None, :] * one  # a [BD, BN] tile of a [D, N] matrix
    A2 = _rows(tl.load(A + o_dn, mask=m_dn, other=0.0) * LOG2E, o_n, BN)  # exp(delta A) = exp2(delta A log2 e)
    state_off = i_s.to(tl.int64) * D * N
    if HAS_H0:
        h = _rows(tl.load(h0 + state_off + o_dn, mask=m_dn, other=0.0).to(tl.float32), o_n, BN)
    else:
        h = _rows(tl.zeros([BD, BN], dtype=tl.float32), o_n, BN)
    bias = tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    D_t = tl.load(Dp + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_D else None
    n_tiles = tl.cdiv(eos - bos, BT)
    o_tile = o_c[:, None] + r[None, :] * D  # a [BD, BT] tile of a [rows, D] tensor, from its first row
    # x and dt of a tile are loaded one tile ahead, so that their latency overlaps the previous tile's steps
    m = m_d[:, None] & (bos + r < eos)[None, :]
    x_next = tl.load(x + bos * D + o_tile, mask=m, other=0.0)
    dt_next = tl.load(dt + bos * D + o_tile, mask=m, other=0.0)
    for k in range(0, n_tiles):
        t0 = bos + k * BT
        m = m_d[:, None] & (t0 + r < eos)[None, :]
        x_t, _, delta = _steps(x_next, dt_next, m, bias, HAS_BIAS, SOFTPLUS)
        m_next = m_d[:, None] & (t0 + BT + r < eos)[None, :]
        x_next = tl.load(x + (t0 + BT) * D + o_tile, mask=m_next, other=0.0)
        dt_next = tl.load(dt + (t0 + BT) * D + o_tile, mask=m_next, other=0.0)
        if HAS_Z:
            z_t = tl.load(z + t0 * D + o_tile, mask=m, other=0.0)  # needed after the steps
        if SAVE:
            tl.store(ckpt + (tile0 + k) * BN * D + o_c[:, None] + o_n[None, :] * D, _tile(h, o_n, BN, BD), mask=m_dn)
        u = delta * x_t
        out = D_t[:, None] * x_t if HAS_D else tl.zeros([BD, BT], dtype=tl.float32)
        for s in tl.static_range(BT):
            delta_s = _row(delta, r, s)
            u_s = _row(u, r, s)
            bc = _load_bc(BC, t0 + s, BN)
            out_s = _row(out, r, s)
            h_next = ()
            for n in tl.static_range(BN):
                h_n = tl.exp2(delta_s * A2[n]) * h[n] + u_s * bc[n][0]
                out_s += bc[n][1] * h_n
                h_next = h_next + (h_n,)
            h = h_next
            out = _put(out, r, s, out_s)
        if HAS_Z:
            z_t = z_t.to(tl.float32)
            out *= z_t * tl.sigmoid(z_t)
        tl.store(y + t0 * D + o_tile, out.to(y.dtype.element_ty), mask=m_d[:, None] & (t0 + r < eos)[None, :])
    if STORE_HT:
        tl.store(hT + state_off + o_dn, _tile(h, o_n, BN, BD), mask=m_dn)


@triton.jit(do_not_specialize=["one"])
def _seq_bwd_kernel(
    x, dt, A, BC, Dp, z, dt_bias, ckpt, scratch, cu_seqlens, tile_offsets, dy, dhT,
    dx, ddt, dz, dBC, dA_part, dD_part, dh0,
    T, D, N, R, one,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_DHT: tl.constexpr, VARLEN: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, GROUP: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    NW: tl.constexpr = BD // 32
    bos, eos, tile0 = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, BT)
    o_l = tl.arange(0, BD)
    o_d = i_d * BD + o_l
    o_c = o_d * one
    m_d = o_d < D
    lane = o_l % 32
    o_n = tl.arange(0, BN)
    r = tl.arange(0, BT)
    rg = tl.arange(0, GROUP)
    m_dn = m_d[:, None] & (o_n < N)[None, :]
    o_dn = o_c[:, None] * N + o_n[None, :] * one
    A2 = _rows(tl.load(A + o_dn, mask=m_dn, other=0.0) * LOG2E, o_n, BN)
    state_off = i_s.to(tl.int64) * D * N
    if HAS_DHT:  # q_{t+1} = a_{t+1} g_{t+1} while walking back
        q = _rows(tl.load(dhT + state_off + o_dn, mask=m_dn, other=0.0).to(tl.float32), o_n, BN)
    else:
        q = _rows(tl.zeros([BD, BN], dtype=tl.float32), o_n, BN)
    dA = _rows(tl.zeros([BD, BN], dtype=tl.float32), o_n, BN)
    dD = tl.zeros([BD], dtype=tl.float32)
    bias = tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    D_t = tl.load(Dp + o_d, mask=m_d, other=0.0).to(tl.float32) if HAS_D else None
    # per-program scratch, [BD, rows] blocks: BT / GROUP states [BD, BN], then dy' [BD, BT] and dz / y' [BD, BT]
    scr = scratch + (i_s * tl.num_programs(0) + i_d).to(tl.int64) * (BT // GROUP * BN + 2 * BT) * BD
    scr_dy = scr + BT // GROUP * BN * BD
    scr_dz = scr_dy + BT * BD
    o_ln = o_l[:, None] * one + o_n[None, :] * BD
    part = dBC + (o_d // 32).to(tl.int64) * R * (2 * BN)  # this warp's partial rows of dB, dC
    n_tiles = tl.cdiv(eos - bos, BT)
    for kk in range(0, n_tiles):
        k = n_tiles - 1 - kk
        t0 = bos + k * BT
        # pass 1: the states at the group starts, from the tile's saved start state, and dy' (and dz's factor)
        m = m_d[:, None] & (t0 + r < eos)[None, :]
        off = o_c[:, None] + (t0 + r)[None, :] * D
        x_t, _, delta = _steps(tl.load(x + off, mask=m, other=0.0), tl.load(dt + off, mask=m, other=0.0), m, bias,
                               HAS_BIAS, SOFTPLUS)
        u = delta * x_t
        dout = tl.load(dy + off, mask=m, other=0.0).to(tl.float32)
        o_lr = o_l[:, None] * one + r[None, :] * BD
        if HAS_Z:
            z_t = tl.load(z + off, mask=m, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z_t)
            tl.store(scr_dz + o_lr, dout * sig * (1.0 + z_t * (1.0 - sig)))
            dout = dout * z_t * sig
        tl.store(scr_dy + o_lr, dout)
        h = _rows(tl.load(ckpt + (tile0 + k) * BN * D + o_c[:, None] + o_n[None, :] * D, mask=m_dn, other=0.0),
                  o_n, BN)
        for s in tl.static_range(BT - GROUP + 1):
            if s % GROUP == 0:
                tl.store(scr + (s // GROUP) * BN * BD + o_ln, _tile(h, o_n, BN, BD))
            if s < BT - GROUP:
                delta_s = _row(delta, r, s)
                u_s = _row(u, r, s)
                bc = _load_bc(BC, t0 + s, BN)
                h_next = ()
                for n in tl.static_range(BN):
                    h_next = h_next + (tl.exp2(delta_s * A2[n]) * h[n] + u_s * bc[n][0],)
                h = h_next
        # pass 2: the groups in reverse, each recomputed from its scratch entry, then walked backwards (the names
        # differ from pass 1's: a loop may not change a variable's shape)
        for gg in range(0, BT // GROUP):
            grp = BT // GROUP - 1 - gg
            g0 = t0 + grp * GROUP
            mg = m_d[:, None] & (g0 + rg < eos)[None, :]
            og = o_c[:, None] + (g0 + rg)[None, :] * D
            xg, vg, dg = _steps(tl.load(x + og, mask=mg, other=0.0), tl.load(dt + og, mask=mg, other=0.0), mg,
                                bias, HAS_BIAS, SOFTPLUS)
            ug = dg * xg
            o_lg = o_l[:, None] * one + (grp * GROUP + rg)[None, :] * BD
            doutg = tl.load(scr_dy + o_lg)
            hg = _rows(tl.load(scr + grp * BN * BD + o_ln), o_n, BN)
            states = (hg,)
            decays = ()
            for p in tl.static_range(GROUP):
                delta_p = _row(dg, rg, p)
                u_p = _row(ug, rg, p)
                bcg = _load_bc(BC, g0 + p, BN)
                a = ()
                h_next = ()
                for n in tl.static_range(BN):
                    a_n = tl.exp2(delta_p * A2[n])
                    a = a + (a_n,)
                    h_next = h_next + (a_n * hg[n] + u_p * bcg[n][0],)
                hg = h_next
                states = states + (hg,)
                decays = decays + (a,)
            yg = tl.zeros([BD, GROUP], dtype=tl.float32)
            gB = tl.zeros([BD, GROUP], dtype=tl.float32)
            gAh = tl.zeros([BD, GROUP], dtype=tl.float32)
            for p in tl.static_range(GROUP - 1, -1, -1):
                u_p = _row(ug, rg, p)
                delta_p = _row(dg, rg, p)
                dout_p = _row(doutg, rg, p)
                bcg = _load_bc(BC, g0 + p, BN)
                h_prev, h_t, a = states[p], states[p + 1], decays[p]
                y_p = tl.zeros([BD], dtype=tl.float32)
                gB_p = tl.zeros([BD], dtype=tl.float32)
                gAh_p = tl.zeros([BD], dtype=tl.float32)
                sums = ()
                q_next = ()
                dA_next = ()
                for n in tl.static_range(BN):
                    if HAS_Z:
                        y_p += bcg[n][1] * h_t[n]
                    g = dout_p * bcg[n][1] + q[n]
                    gB_p += g * bcg[n][0]
                    sums = sums + (g * u_p, dout_p * h_t[n])
                    q_n = a[n] * g
                    qh = q_n * h_prev[n]
                    gAh_p += qh * A2[n]
                    dA_next = dA_next + (dA[n] + qh * delta_p,)
                    q_next = q_next + (q_n,)
                q = q_next
                dA = dA_next
                yg = _put(yg, rg, p, y_p)
                gB = _put(gB, rg, p, gB_p)
                gAh = _put(gAh, rg, p, gAh_p)
                for c in tl.static_range((2 * BN) // V):
                    total = _lane_sums(sums[c * V:(c + 1) * V], lane, NW, BD, V, LOG_V)
                    tl.store(part + (g0 + p) * (2 * BN) + c * V + lane, total, mask=(lane * 0 + g0 + p < eos) & (lane < V))  # an array mask: Triton 3.9's interpreter
            dx_t = dg * gB
            if HAS_D:
                dx_t += D_t[:, None] * doutg
                dD += tl.sum(doutg * xg, axis=1)
            tl.store(dx + og, dx_t.to(dx.dtype.element_ty), mask=mg)
            ddelta = xg * gB + gAh * LN2
            if SOFTPLUS:
                ddelta *= tl.sigmoid(vg)
            tl.store(ddt + og, ddelta, mask=mg)
            if HAS_Z:
                if HAS_D:
                    yg += D_t[:, None] * xg
                tl.store(dz + og, (tl.load(scr_dz + o_lg) * yg).to(dz.dtype.element_ty), mask=mg)
    tl.store(dA_part + state_off + o_dn, _tile(dA, o_n, BN, BD), mask=m_dn)
    if HAS_D:
        tl.store(dD_part + i_s.to(tl.int64) * D + o_d, dD, mask=m_d)
    tl.store(dh0 + state_off + o_dn, _tile(q, o_n, BN, BD), mask=m_dn)


# ----------------------------------------------------------------------------------------------------------------
# Scan design: [BLOCK_T, BLOCK_D, BN] tiles solved by associative scans.


@triton.jit
def _combine(a1, b1, a2, b2):
    """``(a1, b1)`` then ``(a2, b2)``: ``h -> a2 (a1 h + b1) + b2``."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _scan_fwd_kernel(
    x, dt, A, Bm, Cm, Dp, z, dt_bias, y, h0, hT, ckpt, cu_seqlens, tile_offsets,
    T, D, N,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, SAVE: tl.constexpr, VARLEN: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    bos, eos, tile0 = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, BT)
    o_d = i_d * BD + tl.arange(0, BD)
    o_n = tl.arange(0, BN)
    m_d, m_n = o_d < D, o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    A_t = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_D:
        D_t = tl.load(Dp + o_d, mask=m_d, other=0.0).to(tl.float32)
    state_off = i_s.to(tl.int64) * D * N
    if HAS_H0:
        h = tl.load(h0 + state_off + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BD, BN], dtype=tl.float32)
    r = tl.arange(0, BT)
    n_tiles = tl.cdiv(eos - bos, BT)
    for k in range(0, n_tiles):
        rows = bos + k * BT + r
        m_t = rows < eos
        m_td = m_t[:, None] & m_d[None, :]
        m_tn = m_t[:, None] & m_n[None, :]
        o_td = rows[:, None] * D + o_d[None, :]
        o_tn = rows[:, None] * N + o_n[None, :]
        if SAVE:
            tl.store(ckpt + (tile0 + k) * D * N + o_dn, h, mask=m_dn)
        x_t = tl.load(x + o_td, mask=m_td, other=0.0).to(tl.float32)
        v = tl.load(dt + o_td, mask=m_td, other=0.0).to(tl.float32)
        if HAS_BIAS:
            v = v + bias[None, :]
        delta = tl.where(m_td, _step_size(v, SOFTPLUS), 0.0)
        B_t = tl.load(Bm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
        C_t = tl.load(Cm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
        a = tl.exp(delta[:, :, None] * A_t[None, :, :])
        b = (delta * x_t)[:, :, None] * B_t[:, None, :]
        a_cum, b_cum = tl.associative_scan((a, b), 0, _combine)
        hs = b_cum + a_cum * h[None, :, :]
        out = tl.sum(hs * C_t[:, None, :], axis=2)
        if HAS_D:
            out += D_t[None, :] * x_t
        if HAS_Z:
            z_t = tl.load(z + o_td, mask=m_td, other=0.0).to(tl.float32)
            out *= z_t * tl.sigmoid(z_t)
        tl.store(y + o_td, out.to(y.dtype.element_ty), mask=m_td)
        h = tl.sum(tl.where((r == BT - 1)[:, None, None], hs, 0.0), axis=0)
    if STORE_HT:
        tl.store(hT + state_off + o_dn, h, mask=m_dn)


@triton.jit
def _scan_bwd_kernel(
    x, dt, A, Bm, Cm, Dp, z, dt_bias, ckpt, cu_seqlens, tile_offsets, dy, dhT,
    dx, ddt, dB, dC, dz, dA_part, dD_part, dh0,
    T, D, N,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_DHT: tl.constexpr, VARLEN: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    bos, eos, tile0 = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, BT)
    o_d = i_d * BD + tl.arange(0, BD)
    o_n = tl.arange(0, BN)
    m_d, m_n = o_d < D, o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    A_t = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_D:
        D_t = tl.load(Dp + o_d, mask=m_d, other=0.0).to(tl.float32)
    state_off = i_s.to(tl.int64) * D * N
    if HAS_DHT:
        g_next = tl.load(dhT + state_off + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        g_next = tl.zeros([BD, BN], dtype=tl.float32)
    dA_acc = tl.zeros([BD, BN], dtype=tl.float32)
    dD_acc = tl.zeros([BD], dtype=tl.float32)
    dh_first = tl.zeros([BD, BN], dtype=tl.float32)
    r = tl.arange(0, BT)
    n_tiles = tl.cdiv(eos - bos, BT)
    for kk in range(0, n_tiles):
        k = n_tiles - 1 - kk
        rows = bos + k * BT + r
        m_t = rows < eos
        m_td = m_t[:, None] & m_d[None, :]
        m_tn = m_t[:, None] & m_n[None, :]
        o_td = rows[:, None] * D + o_d[None, :]
        o_tn = rows[:, None] * N + o_n[None, :]
        x_t = tl.load(x + o_td, mask=m_td, other=0.0).to(tl.float32)
        v = tl.load(dt + o_td, mask=m_td, other=0.0).to(tl.float32) + bias[None, :]
        delta = tl.where(m_td, _step_size(v, SOFTPLUS), 0.0)
        m_next = (rows + 1 < eos)[:, None] & m_d[None, :]
        v_next = tl.load(dt + o_td + D, mask=m_next, other=0.0).to(tl.float32) + bias[None, :]
        delta_next = tl.where(m_next, _step_size(v_next, SOFTPLUS), 0.0)
        B_t = tl.load(Bm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
        C_t = tl.load(Cm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
        dout = tl.load(dy + o_td, mask=m_td, other=0.0).to(tl.float32)

        h = tl.load(ckpt + (tile0 + k) * D * N + o_dn, mask=m_dn, other=0.0)
        a = tl.exp(delta[:, :, None] * A_t[None, :, :])
        b = (delta * x_t)[:, :, None] * B_t[:, None, :]
        a_cum, b_cum = tl.associative_scan((a, b), 0, _combine)
        hs = b_cum + a_cum * h[None, :, :]

        if HAS_Z:
            z_t = tl.load(z + o_td, mask=m_td, other=0.0).to(tl.float32)
            sig_z = tl.sigmoid(z_t)
            y_t = tl.sum(hs * C_t[:, None, :], axis=2)
            if HAS_D:
                y_t += D_t[None, :] * x_t
            tl.store(dz + o_td, (dout * y_t * sig_z * (1.0 + z_t * (1.0 - sig_z))).to(dz.dtype.element_ty), mask=m_td)
            dout = dout * z_t * sig_z

        a_next = tl.exp(delta_next[:, :, None] * A_t[None, :, :])
        c = dout[:, :, None] * C_t[:, None, :]
        a_rev, c_rev = tl.associative_scan((a_next, c), 0, _combine, reverse=True)
        g = c_rev + a_rev * g_next[None, :, :]

        gB = tl.sum(g * B_t[:, None, :], axis=2)
        ah = hs - b  # a_t * h_{t-1}
        g_ah = g * ah
        ddelta = x_t * gB + tl.sum(g_ah * A_t[None, :, :], axis=2)
        dA_acc += tl.sum(g_ah * delta[:, :, None], axis=0)
        dx_t = delta * gB
        if HAS_D:
            dx_t += D_t[None, :] * dout
            dD_acc += tl.sum(dout * x_t, axis=0)
        tl.store(dx + o_td, dx_t.to(dx.dtype.element_ty), mask=m_td)
        if SOFTPLUS:
            ddelta = ddelta * tl.sigmoid(v)
        tl.store(ddt + o_td, ddelta, mask=m_td)
        tl.atomic_add(dB + o_tn, tl.sum(g * (delta * x_t)[:, :, None], axis=1), mask=m_tn)
        tl.atomic_add(dC + o_tn, tl.sum(dout[:, :, None] * hs, axis=1), mask=m_tn)

        first = (r == 0)[:, None, None]
        g_next = tl.sum(tl.where(first, g, 0.0), axis=0)
        dh_first = tl.sum(tl.where(first, a * g, 0.0), axis=0)
    tl.store(dA_part + state_off + o_dn, dA_acc, mask=m_dn)
    if HAS_D:
        tl.store(dD_part + i_s.to(tl.int64) * D + o_d, dD_acc, mask=m_d)
    if n_tiles == 0:
        dh_first = g_next
    tl.store(dh0 + state_off + o_dn, dh_first, mask=m_dn)


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


class _Problem(NamedTuple):
    """One call's inputs (contiguous where the kernels index them) and its sequences' tiling."""

    x: torch.Tensor
    dt: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None
    z: torch.Tensor | None
    dt_bias: torch.Tensor | None
    softplus: bool
    cu_seqlens: torch.Tensor | None
    tile_offsets: torch.Tensor | None  # per packed sequence, the index of its first tile
    n_seq: int
    block_t: int

    def flags(self) -> dict:
        return dict(SOFTPLUS=self.softplus, HAS_D=self.D is not None, HAS_Z=self.z is not None,
                    HAS_BIAS=self.dt_bias is not None, VARLEN=self.cu_seqlens is not None)


class _Grads(NamedTuple):
    """Float32 where marked; ``dA``, ``dD`` per sequence (summed by the caller)."""

    dx: torch.Tensor
    ddt: torch.Tensor  # float32
    dA: torch.Tensor  # float32 [S, D, N]
    dB: torch.Tensor  # float32
    dC: torch.Tensor  # float32
    dD: torch.Tensor | None  # float32 [S, D]
    dz: torch.Tensor | None
    dh0: torch.Tensor  # float32


def _tiles(batch: int, T: int, cu_seqlens: torch.Tensor | None, bt: int) -> tuple[int, torch.Tensor | None, int]:
    """(number of sequences, per-sequence first tile index or None, total tiles)."""
    if cu_seqlens is None:
        return batch, None, batch * triton.cdiv(T, bt)
    counts = (cu_seqlens[1:] - cu_seqlens[:-1] + bt - 1) // bt
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return cu_seqlens.numel() - 1, offsets[:-1].contiguous(), int(offsets[-1])


def _c(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def _pack_bc(B: torch.Tensor, C: torch.Tensor, bn: int, bt: int) -> torch.Tensor:
    """``(B, C)`` as float32 ``[rows + bt, bn, 2]`` (zero past N and in the last ``bt`` rows), one int64 per state."""
    N = B.shape[-1]
    rows = B.numel() // N
    packed = B.new_zeros(rows + bt, bn, 2, dtype=torch.float32)
    packed[:rows, :N, 0] = B.reshape(rows, N)
    packed[:rows, :N, 1] = C.reshape(rows, N)
    return packed.view(torch.int64)


def _f32(p: _Problem, *shape: int) -> torch.Tensor:
    return p.x.new_empty(*shape, dtype=torch.float32)


def _sequential_forward(p: _Problem, h0: torch.Tensor | None, y: torch.Tensor, hT: torch.Tensor | None,
                        ckpt: torch.Tensor | None) -> None:
    T, dim, N = p.x.shape[1], p.x.shape[2], p.A.shape[1]
    bn = triton.next_power_of_2(N)
    _seq_fwd_kernel[(triton.cdiv(dim, SEQ_FWD_BLOCK_D), p.n_seq)](
        p.x, p.dt, p.A, _pack_bc(p.B, p.C, bn, p.block_t), p.D, p.z, p.dt_bias, y, h0, hT, ckpt, p.cu_seqlens,
        p.tile_offsets, T, dim, N, 1,
        HAS_H0=h0 is not None, STORE_HT=hT is not None, SAVE=ckpt is not None, BT=p.block_t, BD=SEQ_FWD_BLOCK_D,
        BN=bn, num_warps=SEQ_FWD_WARPS, **p.flags(),
    )


def _sequential_backward(p: _Problem, ckpt: torch.Tensor, dy: torch.Tensor, dhT: torch.Tensor | None) -> _Grads:
    batch, T, dim = p.x.shape
    N, bt = p.A.shape[1], p.block_t
    bn = triton.next_power_of_2(N)
    bd, group = 32 * SEQ_BWD_WARPS, min(SEQ_GROUP, bt)
    if bt % group or group & (group - 1):
        raise ValueError(f"SEQ_GROUP={group} must be a power of two dividing BLOCK_T={bt}")
    v = min(2 * bn, 32)
    grid = (triton.cdiv(dim, bd), p.n_seq)
    dx, ddt, dA, dh0 = torch.empty_like(p.x), _f32(p, batch, T, dim), _f32(p, p.n_seq, dim, N), _f32(p, p.n_seq, dim, N)
    dD = _f32(p, p.n_seq, dim) if p.D is not None else None
    dz = torch.empty_like(p.z) if p.z is not None else None
    dBC = _f32(p, grid[0] * SEQ_BWD_WARPS, batch * T, bn, 2)  # per warp of 32 channels
    scratch = _f32(p, grid[0] * grid[1], (bt // group * bn + 2 * bt) * bd)
    _seq_bwd_kernel[grid](
        p.x, p.dt, p.A, _pack_bc(p.B, p.C, bn, bt), p.D, p.z, p.dt_bias, ckpt, scratch, p.cu_seqlens,
        p.tile_offsets, dy, dhT, dx, ddt, dz, dBC, dA, dD, dh0, T, dim, N, batch * T, 1,
        HAS_DHT=dhT is not None, BT=bt, BD=bd, BN=bn, GROUP=group, V=v, LOG_V=v.bit_length() - 1,
        num_warps=SEQ_BWD_WARPS, **p.flags(),
    )
    dBC = dBC.sum(0).view(batch, T, bn, 2)[:, :, :N]
    return _Grads(dx, ddt, dA, dBC[..., 0], dBC[..., 1], dD, dz, dh0)


def _scan_forward(p: _Problem, h0: torch.Tensor | None, y: torch.Tensor, hT: torch.Tensor | None,
                  ckpt: torch.Tensor | None) -> None:
    T, dim, N = p.x.shape[1], p.x.shape[2], p.A.shape[1]
    _scan_fwd_kernel[(triton.cdiv(dim, SCAN_FWD_BLOCK_D), p.n_seq)](
        p.x, p.dt, p.A, _c(p.B), _c(p.C), p.D, p.z, p.dt_bias, y, h0, hT, ckpt, p.cu_seqlens, p.tile_offsets, T,
        dim, N,
        HAS_H0=h0 is not None, STORE_HT=hT is not None, SAVE=ckpt is not None, BT=p.block_t, BD=SCAN_FWD_BLOCK_D,
        BN=triton.next_power_of_2(N), num_warps=SCAN_FWD_WARPS, **p.flags(),
    )


def _scan_backward(p: _Problem, ckpt: torch.Tensor, dy: torch.Tensor, dhT: torch.Tensor | None) -> _Grads:
    batch, T, dim = p.x.shape
    N = p.A.shape[1]
    g = _Grads(
        dx=torch.empty_like(p.x), ddt=_f32(p, batch, T, dim), dA=_f32(p, p.n_seq, dim, N),
        dB=p.x.new_zeros(batch, T, N, dtype=torch.float32), dC=p.x.new_zeros(batch, T, N, dtype=torch.float32),
        dD=_f32(p, p.n_seq, dim) if p.D is not None else None, dz=torch.empty_like(p.z) if p.z is not None else None,
        dh0=_f32(p, p.n_seq, dim, N),
    )
    _scan_bwd_kernel[(triton.cdiv(dim, SCAN_BWD_BLOCK_D), p.n_seq)](
        p.x, p.dt, p.A, _c(p.B), _c(p.C), p.D, p.z, p.dt_bias, ckpt, p.cu_seqlens, p.tile_offsets, dy, dhT,
        g.dx, g.ddt, g.dB, g.dC, g.dz, g.dA, g.dD, g.dh0, T, dim, N,
        HAS_DHT=dhT is not None, BT=p.block_t, BD=SCAN_BWD_BLOCK_D, BN=triton.next_power_of_2(N),
        num_warps=SCAN_BWD_WARPS, **p.flags(),
    )
    return g


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
