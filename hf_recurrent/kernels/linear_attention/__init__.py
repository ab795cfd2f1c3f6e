r"""Chunked gated linear attention: one op for GLA, RetNet, Mamba-2 (SSD), GateLoop, mLSTM and relatives.

For each head, with query ``q_t``, key ``k_t`` (length ``K``), value ``v_t`` (length ``V``) and log decay ``g_t``
(``<= 0``), the state ``S_t`` is a ``K x V`` matrix:

.. math::

    S_t = \mathrm{diag}(e^{g_t})\, S_{t-1} + k_t^\top v_t, \qquad o_t = \mathrm{scale}\cdot q_t S_t .

``g_t`` is a vector over the key dimension (GLA, GateLoop), a scalar per head broadcast over it (RetNet,
Mamba-2), or absent (decay 1, plain linear attention).

Shapes (the kernel contract of every family):

* ``q, k``: ``[B, T, H, K]``; ``v``: ``[B, T, H, V]``;
* ``log_decay``: ``[B, T, H, K]``, ``[B, T, H]`` or ``None``; float32 recommended (cumulative sums);
* ``initial_state``: ``[N, H, K, V]`` float32 or ``None`` (zeros), where ``N = B`` or the number of packed
  sequences;
* ``cu_seqlens``: int ``[N + 1]`` offsets of packed sequences along ``T`` (then ``B = 1``); each starts from its
  own initial state;
* returns ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state ``[N, H, K, V]`` float32 (or ``None``).

``scale`` defaults to ``K ** -0.5``. Any ``T``, any head dims; forward and backward on both backends.
"""

from __future__ import annotations

import torch

from ..backend import num_sequences, resolve_backend
from . import reference
from .low_rank_decay import LowRankLogDecay

__all__ = ["gated_linear_attention", "gated_linear_attention_from_state", "gated_linear_attention_step",
           "LowRankLogDecay"]


def _check(q, k, v, log_decay, initial_state, cu_seqlens) -> int:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [B, T, H, K]; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    B, T, H, K = q.shape
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, V] = [{B}, {T}, {H}, V]; got {tuple(v.shape)}")
    if log_decay is not None and log_decay.shape not in ((B, T, H), (B, T, H, K)):
        raise ValueError(f"log_decay must be [B, T, H] or [B, T, H, K] = {(B, T, H, K)}; got {tuple(log_decay.shape)}")
    n = num_sequences(cu_seqlens, B, T)
    if initial_state is not None and initial_state.shape != (n, H, K, v.shape[-1]):
        raise ValueError(
            f"initial_state must be [N, H, K, V] = {(n, H, K, v.shape[-1])}; got {tuple(initial_state.shape)}"
        )
    return n


def gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the recurrence over a whole sequence (prefill, training); see the module docstring for the maths."""
    _check(q, k, v, log_decay, initial_state, cu_seqlens)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if resolve_backend(backend, q) == "triton":
        from . import triton as triton_impl

        return triton_impl.chunk_gla(q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens)
    return reference.chunk_gla(q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens)


def gated_linear_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | LowRankLogDecay | None,
    state: torch.Tensor,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """One decode step: ``q, k`` ``[B, H, K]``, ``v`` ``[B, H, V]``, ``log_decay`` ``[B, H, K]``/``[B, H]``/None
    or a :class:`LowRankLogDecay` with ``x`` ``[B, R]`` (evaluated inside the Triton kernel).

    ``state`` ``[B, H, K, V]`` float32 is updated in place (a fixed address, as CUDA graphs need); returns
    ``o`` ``[B, H, V]``.
    """
    B, H, K = q.shape
    if state.dtype != torch.float32 or state.shape != (*q.shape, v.shape[-1]):
        raise ValueError(
            f"state must be float32 [B, H, K, V] = {(*q.shape, v.shape[-1])}; got {state.dtype} {tuple(state.shape)}"
        )
    if isinstance(log_decay, LowRankLogDecay) and (log_decay.x.shape[0] != B or log_decay.weight.shape[0] != H * K):
        raise ValueError(f"a low-rank log decay needs x [B={B}, R] and weight [H*K={H * K}, R]; got "
                         f"{tuple(log_decay.x.shape)} and {tuple(log_decay.weight.shape)}")
    scale = K ** -0.5 if scale is None else scale
    if resolve_backend(backend, q) == "triton":
        from . import triton as triton_impl

        return triton_impl.recurrent_gla_step(q, k, v, log_decay, state, scale)
    if isinstance(log_decay, LowRankLogDecay):
        log_decay = log_decay.materialize(H)
    return reference.recurrent_gla_step(q, k, v, log_decay, state, scale)


def gated_linear_attention_from_state(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | LowRankLogDecay | None,
    state: torch.Tensor | None,
    *,
    scale: float | None = None,
    output_final_state: bool = True,
    cu_seqlens: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What a cached mixer runs: the recurrence over ``[B, T, ...]`` inputs continuing from ``state``.

    One token with a state takes the fused decode step, which updates ``state`` in place (its address is the cache's,
    as CUDA graphs need); anything else takes the chunked op with ``state`` as the initial state. Returns ``o``
    ``[B, T, H, V]`` and the state to keep (the same tensor after a step; ``None`` if not ``output_final_state``).
    """
    if q.shape[1] == 1 and state is not None and cu_seqlens is None:
        step_decay = None if log_decay is None else (
            log_decay.at(0) if isinstance(log_decay, LowRankLogDecay) else log_decay[:, 0])
        o = gated_linear_attention_step(q[:, 0], k[:, 0], v[:, 0], step_decay, state, scale=scale)
        return o.unsqueeze(1), state
    if isinstance(log_decay, LowRankLogDecay):
        log_decay = log_decay.materialize(q.shape[2])
    return gated_linear_attention(q, k, v, log_decay, scale=scale, initial_state=state,
                                  output_final_state=output_final_state, cu_seqlens=cu_seqlens)
