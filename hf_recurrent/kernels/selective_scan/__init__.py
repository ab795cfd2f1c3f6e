r"""Selective scan (Mamba-1, Gu & Dao 2023): a diagonal state-space recurrence whose decay is per (channel, state).

For channel ``d`` and state index ``n``, with step size ``delta_t[d] = softplus(dt_t[d] + dt_bias[d])`` (or
``dt_t[d] + dt_bias[d]`` without ``dt_softplus``) and ``A[d, n] < 0``:

.. math::

    h_t[d, n] = e^{\delta_t[d] A[d, n]}\, h_{t-1}[d, n] + \delta_t[d]\, B_t[n]\, x_t[d], \qquad
    y_t[d] = \Big(\sum_n C_t[n]\, h_t[d, n] + D[d]\, x_t[d]\Big) \cdot \mathrm{silu}(z_t[d]).

The log decay ``delta_t A`` is formed inside the kernel (no decay tensor is passed); the softplus of ``dt + bias``,
the ``D`` skip and the ``z`` gate are fused, so no ``[B, T, D, N]`` tensor is ever written to memory: the state
lives in registers (Triton) or one ``[B, D, N]`` buffer (reference).

Shapes:

* ``x``, ``dt``, ``z``: ``[B, T, D]``; ``B``, ``C``: ``[B, T, N]`` (shared by all channels);
* ``A``: ``[D, N]`` (float32: ``-exp(A_log)``); ``D``, ``dt_bias``: ``[D]`` or ``None``;
* ``initial_state``: ``[S, D, N]`` float32 or ``None`` (zeros), ``S = B`` or the number of packed sequences;
* ``cu_seqlens``: int ``[S + 1]`` offsets of packed sequences along ``T`` (then ``B = 1``);
* returns ``y`` ``[B, T, D]`` in ``x``'s dtype and the final state ``[S, D, N]`` float32 (or ``None``).

A position whose step is 0 (``dt = -inf`` with softplus) leaves the state exactly unchanged: decay 1, input 0.
Any ``T``; forward and backward on both backends; :func:`selective_scan_step` is the fused one-token decode.
"""

from __future__ import annotations

import torch

from ..backend import num_sequences, resolve_backend
from . import reference

__all__ = ["selective_scan", "selective_scan_step"]


def _check_params(A, D, dt_bias, channels: int) -> int:
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be [D, N] with D={channels}; got {tuple(A.shape)}")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"{name} must be [D] = [{channels}]; got {tuple(t.shape)}")
    return A.shape[1]


def _check(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be [B, T, D]; got {tuple(x.shape)}")
    batch, T, channels = x.shape
    N = _check_params(A, D, dt_bias, channels)
    for name, t in (("dt", dt), ("z", z)):
        if t is not None and t.shape != x.shape:
            raise ValueError(f"{name} must be [B, T, D] = {tuple(x.shape)}; got {tuple(t.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.shape != (batch, T, N):
            raise ValueError(f"{name} must be [B, T, N] = {(batch, T, N)}; got {tuple(t.shape)}")
    n = num_sequences(cu_seqlens, batch, T)
    if initial_state is not None and initial_state.shape != (n, channels, N):
        raise ValueError(f"initial_state must be [S, D, N] = {(n, channels, N)}; got {tuple(initial_state.shape)}")


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    *,
    dt_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the selective scan over whole sequences (prefill, training); see the module docstring."""
    _check(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens)
    args = (x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens)
    if resolve_backend(backend, x) == "triton":
        from . import triton as triton_impl

        return triton_impl.selective_scan(*args)
    return reference.selective_scan(*args)


def selective_scan_step(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    state: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    *,
    dt_softplus: bool = True,
    backend: str | None = None,
) -> torch.Tensor:
    """One decode step: ``x, dt, z`` ``[B, D]``, ``B, C`` ``[B, N]``; returns ``y`` ``[B, D]`` in ``x``'s dtype.

    ``state`` ``[B, D, N]`` float32 is updated in place (a fixed address, as CUDA graphs need).
    """
    if x.dim() != 2:
        raise ValueError(f"x must be [B, D]; got {tuple(x.shape)}")
    N = _check_params(A, D, dt_bias, x.shape[1])
    rows = (x.shape[0], N)
    for name, t, shape in (("dt", dt, x.shape), ("z", z, x.shape), ("B", B, rows), ("C", C, rows)):
        if t is not None and t.shape != shape:
            raise ValueError(f"{name} must be {tuple(shape)}; got {tuple(t.shape)}")
    if state.dtype != torch.float32 or state.shape != (*x.shape, N):
        raise ValueError(f"state must be float32 [B, D, N] = {(*x.shape, N)}; got {state.dtype} {tuple(state.shape)}")
    args = (x, dt, A, B, C, state, D, z, dt_bias, dt_softplus)
    if resolve_backend(backend, x) == "triton":
        from . import triton as triton_impl

        return triton_impl.selective_scan_step(*args)
    return reference.selective_scan_step(*args)
