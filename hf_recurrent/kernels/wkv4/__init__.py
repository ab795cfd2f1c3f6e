r"""RWKV-4's WKV: a diagonal (per-channel) linear recurrence with a normaliser, numerically stabilised.

Per channel, with log decay ``w <= 0`` (RWKV-4 stores ``time_decay`` and uses ``w = -exp(time_decay)``), the
bonus ``u`` of the current token (``time_first``), keys ``k_t`` and values ``v_t``:

.. math::

    o_t = \frac{\sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t}
               {\sum_{i<t} e^{(t-1-i) w + k_i} + e^{u + k_t}} .

The sums are carried as a state ``(a, b, p)`` with ``A = a e^p`` (numerator) and ``B = b e^p`` (denominator),
``p`` the running maximum exponent, so that no ``exp`` ever overflows:

.. math::

    q = \max(p, u + k_t),\quad o_t = \frac{e^{p-q} a + e^{u+k_t-q} v_t}{e^{p-q} b + e^{u+k_t-q}};\qquad
    p' = \max(p + w, k_t),\quad a' = e^{p+w-p'} a + e^{k_t-p'} v_t,\quad b' = e^{p+w-p'} b + e^{k_t-p'} .

Shapes (RWKV-4 has no heads; a model passes ``H = 1``):

* ``w, u``: ``[H, D]``; ``k, v``: ``[B, T, H, D]``;
* ``mask``: ``[B, T]`` or ``None``; where it is 0 the state passes unchanged and ``o_t = 0`` (left padding);
* ``initial_state``: ``[N, 3, H, D]`` float32 (``a, b, p``) or ``None`` (empty: ``a = b = 0``, ``p = -1e38``),
  ``N = B`` or the number of packed sequences;
* ``cu_seqlens``: int ``[N + 1]`` offsets of packed sequences along ``T`` (then ``B = 1``), each from its own state;
* returns ``o`` ``[B, T, H, D]`` in ``v``'s dtype and the final state ``[N, 3, H, D]`` float32 (or ``None``).

Any ``T``; forward and backward on both backends. On the Triton backend gradients flow from ``o`` (and into
``initial_state``); the final state is returned without gradient (training does not back-propagate through it).
"""

from __future__ import annotations

import torch

from ..backend import num_sequences, resolve_backend
from . import reference
from .reference import empty_state

__all__ = ["empty_state", "wkv4", "wkv4_step"]


def _check(w, u, k, v, mask, initial_state, cu_seqlens) -> None:
    if k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"k and v must both be [B, T, H, D]; got k {tuple(k.shape)}, v {tuple(v.shape)}")
    B, T, H, D = k.shape
    for name, t in (("w", w), ("u", u)):
        if t.shape != (H, D):
            raise ValueError(f"{name} must be [H, D] = {(H, D)}; got {tuple(t.shape)}")
    if mask is not None and mask.shape != (B, T):
        raise ValueError(f"mask must be [B, T] = {(B, T)}; got {tuple(mask.shape)}")
    n = num_sequences(cu_seqlens, B, T)
    if initial_state is not None and (initial_state.shape != (n, 3, H, D) or initial_state.dtype != torch.float32):
        raise ValueError(
            f"initial_state must be float32 [N, 3, H, D] = {(n, 3, H, D)}; got {initial_state.dtype} "
            f"{tuple(initial_state.shape)}"
        )


def wkv4(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run WKV over a whole sequence (prefill, training); see the module docstring for the maths and shapes."""
    _check(w, u, k, v, mask, initial_state, cu_seqlens)
    if resolve_backend(backend, k) == "triton":
        from . import triton as triton_impl

        return triton_impl.wkv4(w, u, k, v, mask, initial_state, output_final_state, cu_seqlens)
    if cu_seqlens is None:
        return reference.wkv4(w, u, k, v, mask, initial_state, output_final_state)
    outs, finals = [], []
    for n, (start, end) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        s0 = None if initial_state is None else initial_state[n : n + 1]
        m = None if mask is None else mask[:, start:end]
        o, final = reference.wkv4(w, u, k[:, start:end], v[:, start:end], m, s0, True)
        outs.append(o)
        finals.append(final)
    return torch.cat(outs, dim=1), (torch.cat(finals) if output_final_state else None)


def wkv4_step(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """One decode step: ``k, v`` ``[B, H, D]``; ``state`` ``[B, 3, H, D]`` float32 is updated in place; returns
    ``o`` ``[B, H, D]``."""
    B, H, D = k.shape
    if v.shape != k.shape or w.shape != (H, D) or u.shape != (H, D):
        raise ValueError(f"k, v must be [B, H, D] and w, u [H, D]; got {tuple(k.shape)}, {tuple(v.shape)}, "
                         f"{tuple(w.shape)}, {tuple(u.shape)}")
    if state.dtype != torch.float32 or state.shape != (B, 3, H, D):
        raise ValueError(f"state must be float32 [B, 3, H, D] = {(B, 3, H, D)}; got {state.dtype} {tuple(state.shape)}")
    if resolve_backend(backend, k) == "triton":
        from . import triton as triton_impl

        return triton_impl.wkv4_step(w, u, k, v, state)
    return reference.wkv4_step(w, u, k, v, state)
