"""What the selective scan's Triton entry point and both of its designs share.

The jitted step size (``softplus``) and sequence bounds, and on the host the records of one call (:class:`_Problem`,
:class:`_Grads`) with small tensor helpers. A module of its own so that :mod:`.triton` imports the design modules
(:mod:`.triton_scan`, :mod:`.triton_sequential`, :mod:`.triton_chunked`), which import these, without a cycle.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl


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
    block_t: int  # steps between saved states (the backward's tile)

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


def _tile_offsets(cu_seqlens: torch.Tensor, bt: int) -> torch.Tensor:
    """Per packed sequence (or segment) the index of its first tile of ``bt`` steps, then the total: ``[S + 1]``."""
    counts = (cu_seqlens[1:] - cu_seqlens[:-1] + bt - 1) // bt
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _c(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def _f32(p: _Problem, *shape: int) -> torch.Tensor:
    return p.x.new_empty(*shape, dtype=torch.float32)
