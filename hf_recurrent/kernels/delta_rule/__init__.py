r"""The generalised delta rule (diagonal plus rank-one transition): RWKV-7, and the DeltaNet family.

For each head, with receptance (query) ``r_t``, log decay ``log_w_t <= 0``, key ``k_t``, the two rank-one vectors
``a_t, b_t`` (all of length ``K``) and value ``v_t`` (length ``V``), the state ``M_t`` is a ``K x V`` matrix:

.. math::

    M_t = \mathrm{diag}(e^{\log w_t})\, M_{t-1} + b_t\, (a_t^\top M_{t-1}) + k_t v_t^\top,
    \qquad o_t = \mathrm{scale} \cdot M_t^\top r_t .

This is RWKV-7's ``S_t = S_{t-1} (diag(w_t) - \hat\kappa_t (a_t \odot \hat\kappa_t)^\top) + v_t k_t^\top`` written for
``M = S^\top``, with ``a = -\hat\kappa`` and ``b = \hat\kappa \odot a_{gate}`` (the convention of
flash-linear-attention's ``rwkv7`` ops). DeltaNet is ``log_w = 0``, ``a = -k``, ``b = \beta k``, ``k \to \beta k``.

Shapes (the kernel contract):

* ``r, log_w, k, a, b``: ``[B, T, H, K]``; ``v``: ``[B, T, H, V]``;
* ``initial_state``: ``[N, H, K, V]`` float32 or ``None`` (zeros), ``N = B`` or the number of packed sequences;
* ``cu_seqlens``: int ``[N + 1]`` offsets of packed sequences along ``T`` (then ``B = 1``);
* returns ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state ``[N, H, K, V]`` float32 (or ``None``).

Backends: ``reference`` runs the chunked form (``mode="chunk"``, chunks of 16) or the step-by-step recurrence
(``mode="recurrent"``); ``triton`` runs a fused recurrent kernel (forward and backward, float32 state in
registers) whatever the mode. Any ``T``; ``K, V <= 256``.
"""

from __future__ import annotations

import torch

from ..backend import num_sequences, resolve_backend
from . import reference

__all__ = ["generalized_delta_rule", "generalized_delta_rule_step"]


def _check(r, log_w, k, v, a, b, initial_state, cu_seqlens) -> None:
    if k.dim() != 4:
        raise ValueError(f"k must be [B, T, H, K]; got {tuple(k.shape)}")
    for name, t in (("r", r), ("log_w", log_w), ("a", a), ("b", b)):
        if t.shape != k.shape:
            raise ValueError(f"{name} must have k's shape [B, T, H, K] = {tuple(k.shape)}; got {tuple(t.shape)}")
    B, T, H, K = k.shape
    if v.dim() != 4 or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must be [B, T, H, V] = [{B}, {T}, {H}, V]; got {tuple(v.shape)}")
    if max(K, v.shape[-1]) > 256:
        raise ValueError(f"head dims K={K}, V={v.shape[-1]} must be <= 256")
    n = num_sequences(cu_seqlens, B, T)
    if initial_state is not None and initial_state.shape != (n, H, K, v.shape[-1]):
        raise ValueError(
            f"initial_state must be [N, H, K, V] = {(n, H, K, v.shape[-1])}; got {tuple(initial_state.shape)}"
        )


def generalized_delta_rule(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    mode: str = "chunk",
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the recurrence over a whole sequence (prefill, training); see the module docstring."""
    _check(r, log_w, k, v, a, b, initial_state, cu_seqlens)
    if mode not in ("chunk", "recurrent"):
        raise ValueError(f"mode must be 'chunk' or 'recurrent'; got {mode!r}")
    if resolve_backend(backend, k) == "triton":
        from . import triton as triton_impl

        return triton_impl.fused_recurrent(r, log_w, k, v, a, b, scale, initial_state, output_final_state, cu_seqlens)
    run = reference.chunked if mode == "chunk" else reference.recurrent
    o, final = run(r, log_w, k, v, a, b, scale, initial_state, output_final_state, cu_seqlens)
    return o.to(v.dtype), final


def generalized_delta_rule_step(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor,
    *,
    scale: float = 1.0,
    backend: str | None = None,
) -> torch.Tensor:
    """One decode step: ``r, log_w, k, a, b`` ``[B, H, K]``, ``v`` ``[B, H, V]``; ``state`` ``[B, H, K, V]``
    float32 is updated in place; returns ``o`` ``[B, H, V]``."""
    if state.dtype != torch.float32 or state.shape != (*k.shape, v.shape[-1]):
        raise ValueError(f"state must be float32 [B, H, K, V] = {(*k.shape, v.shape[-1])}; got {state.dtype} "
                         f"{tuple(state.shape)}")
    if resolve_backend(backend, k) == "triton":
        from . import triton as triton_impl

        return triton_impl.fused_recurrent_step(r, log_w, k, v, a, b, state, scale)
    o, new = reference.step(r, log_w, k, v, a, b, state, scale)
    state.copy_(new)
    return o.to(v.dtype)
