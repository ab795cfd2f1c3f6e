r"""The ``"sequential"`` design of the selective-scan Triton kernels: forward, backward and their launchers.

Chosen by ``DESIGN = "sequential"`` in :mod:`.triton`, which holds the maths, the saved-state scheme, the dispatch
and the tuning knobs this design reads at call time (``BLOCK_T`` and ``SEQ_*``); see there for its status. The
launchers here run over whole sequences or over segments of them (packed as sequences): the design's entry points,
which cut long sequences into segments run in parallel, are in :mod:`.triton_chunked`.

``"sequential"``. A program owns a block of channels of one sequence, one channel per thread (the
backward always; the forward for ``SEQ_FWD_BLOCK_D = 32 * SEQ_FWD_WARPS``), and keeps each channel's ``BN`` states
in registers as a tuple of ``BN`` ``[BD]`` tensors, so the recurrence never moves data between threads. It walks
time one step at a time; per step and channel: ``BN`` ``exp2`` (of ``delta A log2 e``) and ``4 BN`` multiply-adds,
and ``(B_t[n], C_t[n])`` as one 64-bit load per state (``B`` and ``C`` are packed on the host into a float32
``[B*T + tile, BN, 2]`` tensor, all threads of a warp reading the same word). ``x, dt, z, y`` move as
``[BD, tile]`` tiles (``SEQ_FWD_BLOCK_T`` steps forward, ``BLOCK_T`` backward), one channel per thread and a
warp's 32 threads on 32 consecutive channels (coalesced rows); the steps of a tile are unrolled, so that a step's
row of a tile is a register. The forward loads a tile's ``x`` and ``dt`` while the previous tile is stepped, and
saves the state before every ``BLOCK_T``-th step (the backward's tiles) for the backward.

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
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import _bounds, _f32, _Grads, _Problem, _step_size

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


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
def _channel_block(A, i_d, D, N, one, BD: tl.constexpr, BN: tl.constexpr):
    """Program ``i_d``'s ``BD`` channels ``o_d`` (``o_c``, the same laid out one channel per thread, see above) and
    their mask, the state index ``o_n``, the offsets and mask of its ``[BD, BN]`` tile of a ``[D, N]`` matrix, and
    its rows of ``A log2 e`` as ``BN`` ``[BD]`` tensors (``exp(delta A) = exp2(delta A log2 e)``)."""
    o_d = i_d * BD + tl.arange(0, BD)
    o_c = o_d * one
    m_d = o_d < D
    o_n = tl.arange(0, BN)
    m_dn = m_d[:, None] & (o_n < N)[None, :]
    o_dn = o_c[:, None] * N + o_n[None, :] * one
    A2 = _rows(tl.load(A + o_dn, mask=m_dn, other=0.0) * LOG2E, o_n, BN)
    return o_d, o_c, m_d, o_n, m_dn, o_dn, A2


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
def _step_sizes(dt_tile, m, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """``dt + bias`` and the step ``delta`` (0 where masked: past the end the state is left unchanged) of a tile, in
    float32."""
    v = dt_tile.to(tl.float32)
    if HAS_BIAS:
        v += bias[:, None]
    return v, tl.where(m, _step_size(v, SOFTPLUS), 0.0)


@triton.jit
def _steps(x_tile, dt_tile, m, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """``x``, ``dt + bias`` and the step ``delta`` of a tile (see :func:`_step_sizes`), in float32."""
    v, delta = _step_sizes(dt_tile, m, bias, HAS_BIAS, SOFTPLUS)
    return x_tile.to(tl.float32), v, delta


@triton.jit
def _advance(h, delta_s, u_s, bc, A2, BN: tl.constexpr):
    """One step of the recurrence on a tuple of ``BN`` ``[BD]`` states: ``h_n <- exp2(delta A_n log2 e) h_n + u B_n``."""
    h_next = ()
    for n in tl.static_range(BN):
        h_next = h_next + (tl.exp2(delta_s * A2[n]) * h[n] + u_s * bc[n][0],)
    return h_next


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
    BT: tl.constexpr, CK: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
):
    """Tiles of ``BT`` steps; with ``SAVE``, the state before every ``CK``-th step of the sequence to ``ckpt`` (one
    of ``BT``, ``CK`` divides the other: powers of two)."""
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    bos, eos, tile0 = _bounds(cu_seqlens, tile_offsets, i_s, T, VARLEN, CK)
    o_d, o_c, m_d, o_n, m_dn, o_dn, A2 = _channel_block(A, i_d, D, N, one, BD, BN)
    r = tl.arange(0, BT)
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
        u = delta * x_t
        out = D_t[:, None] * x_t if HAS_D else tl.zeros([BD, BT], dtype=tl.float32)
        for s in tl.static_range(BT):
            if SAVE and s % CK == 0:
                pos = k * BT + s  # the step's index in the sequence
                if (pos % CK == 0) & (bos + pos < eos):
                    tl.store(ckpt + (tile0 + pos // CK) * BN * D + o_c[:, None] + o_n[None, :] * D,
                             _tile(h, o_n, BN, BD), mask=m_dn)
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
    o_d, o_c, m_d, o_n, m_dn, o_dn, A2 = _channel_block(A, i_d, D, N, one, BD, BN)
    o_l = tl.arange(0, BD)  # the channel within the block
    lane = o_l % 32
    r = tl.arange(0, BT)
    rg = tl.arange(0, GROUP)
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
                h = _advance(h, delta_s, u_s, _load_bc(BC, t0 + s, BN), A2, BN)
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
# Host side.


def _pack_bc(B: torch.Tensor, C: torch.Tensor, bn: int, bt: int) -> torch.Tensor:
    """``(B, C)`` as float32 ``[rows + bt, bn, 2]`` (zero past N and in the last ``bt`` rows), one int64 per state."""
    N = B.shape[-1]
    rows = B.numel() // N
    packed = B.new_zeros(rows + bt, bn, 2, dtype=torch.float32)
    packed[:rows, :N, 0] = B.reshape(rows, N)
    packed[:rows, :N, 1] = C.reshape(rows, N)
    return packed.view(torch.int64)


def _launch_forward(p: _Problem, bc: torch.Tensor, h0: torch.Tensor | None, y: torch.Tensor, hT: torch.Tensor | None,
                    ckpt: torch.Tensor | None) -> None:
    """The forward over ``p``'s sequences (whole ones, or the segments of a chunked call): ``y``, the final states
    ``hT`` and the saved states ``ckpt`` where not None. ``bc``: :func:`_pack_bc` with ``SEQ_FWD_BLOCK_T`` rows."""
    from . import triton as knobs  # the tuning knobs, read at call time (tests and the benchmark set them)

    T, dim, N = p.x.shape[1], p.x.shape[2], p.A.shape[1]
    _seq_fwd_kernel[(triton.cdiv(dim, knobs.SEQ_FWD_BLOCK_D), p.n_seq)](
        p.x, p.dt, p.A, bc, p.D, p.z, p.dt_bias, y, h0, hT, ckpt, p.cu_seqlens, p.tile_offsets, T, dim, N, 1,
        HAS_H0=h0 is not None, STORE_HT=hT is not None, SAVE=ckpt is not None, BT=knobs.SEQ_FWD_BLOCK_T,
        CK=p.block_t, BD=knobs.SEQ_FWD_BLOCK_D, BN=bc.shape[1], num_warps=knobs.SEQ_FWD_WARPS, **p.flags(),
    )


def _launch_backward(p: _Problem, bc: torch.Tensor, ckpt: torch.Tensor, dy: torch.Tensor,
                     dhT: torch.Tensor | None) -> _Grads:
    """The backward over ``p``'s sequences (or segments: ``dA``, ``dD``, ``dh0`` per segment); ``dhT`` the
    gradients of their final states. ``bc``: :func:`_pack_bc` with ``BLOCK_T`` rows."""
    from . import triton as knobs

    batch, T, dim = p.x.shape
    N, bt, bn = p.A.shape[1], p.block_t, bc.shape[1]
    bd, group = 32 * knobs.SEQ_BWD_WARPS, min(knobs.SEQ_GROUP, bt)
    if bt % group or group & (group - 1):
        raise ValueError(f"SEQ_GROUP={group} must be a power of two dividing BLOCK_T={bt}")
    v = min(2 * bn, 32)
    grid = (triton.cdiv(dim, bd), p.n_seq)
    dx, ddt, dA, dh0 = torch.empty_like(p.x), _f32(p, batch, T, dim), _f32(p, p.n_seq, dim, N), _f32(p, p.n_seq, dim, N)
    dD = _f32(p, p.n_seq, dim) if p.D is not None else None
    dz = torch.empty_like(p.z) if p.z is not None else None
    dBC = _f32(p, grid[0] * knobs.SEQ_BWD_WARPS, batch * T, bn, 2)  # per warp of 32 channels
    scratch = _f32(p, grid[0] * grid[1], (bt // group * bn + 2 * bt) * bd)
    _seq_bwd_kernel[grid](
        p.x, p.dt, p.A, bc, p.D, p.z, p.dt_bias, ckpt, scratch, p.cu_seqlens, p.tile_offsets, dy, dhT,
        dx, ddt, dz, dBC, dA, dD, dh0, T, dim, N, batch * T, 1,
        HAS_DHT=dhT is not None, BT=bt, BD=bd, BN=bn, GROUP=group, V=v, LOG_V=v.bit_length() - 1,
        num_warps=knobs.SEQ_BWD_WARPS, **p.flags(),
    )
    dBC = dBC.sum(0).view(batch, T, bn, 2)[:, :, :N]
    return _Grads(dx, ddt, dA, dBC[..., 0], dBC[..., 1], dD, dz, dh0)
