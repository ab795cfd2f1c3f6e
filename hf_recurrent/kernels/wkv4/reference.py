"""PyTorch reference of RWKV-4's WKV: the stabilised element-wise recurrence, one step at a time, in float32.

The state is ``(a, b, p)``: numerator and denominator sums scaled by ``exp(-p)``, ``p`` the running maximum
exponent. See :mod:`hf_recurrent.kernels.wkv4` for the maths.
"""

from __future__ import annotations

import torch

EMPTY_EXPONENT = -1e38
"""``p`` of the empty state: ``exp(p - anything finite)`` is 0, and sums stay finite (no ``inf - inf``)."""


def empty_state(batch: int, heads: int, dim: int, device: torch.device | str) -> torch.Tensor:
    """The zero state ``[batch, 3, heads, dim]`` float32: ``a = b = 0``, ``p = -1e38``."""
    state = torch.zeros(batch, 3, heads, dim, dtype=torch.float32, device=device)
    state[:, 2] = EMPTY_EXPONENT
    return state


def _step(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    a: torch.Tensor, b: torch.Tensor, p: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.maximum(p, u + k)
    e1, e2 = torch.exp(p - q), torch.exp(u + k - q)
    o = (e1 * a + e2 * v) / (e1 * b + e2)
    q = torch.maximum(p + w, k)
    f1, f2 = torch.exp(p + w - q), torch.exp(k - q)
    return o, f1 * a + f2 * v, f1 * b + f2, q


def wkv4(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Whole sequence; shapes as in :func:`hf_recurrent.kernels.wkv4.wkv4`."""
    B, T, H, D = k.shape
    state = empty_state(B, H, D, k.device) if initial_state is None else initial_state.float()
    a, b, p = state.unbind(1)
    wf, uf = w.float(), u.float()
    kf, vf = k.float(), v.float()
    outs = []
    for t in range(T):
        o, na, nb, np_ = _step(wf, uf, kf[:, t], vf[:, t], a, b, p)
        if mask is not None:
            keep = mask[:, t, None, None].bool()
            o = torch.where(keep, o, torch.zeros_like(o))
            na, nb, np_ = (torch.where(keep, new, old) for new, old in ((na, a), (nb, b), (np_, p)))
        outs.append(o)
        a, b, p = na, nb, np_
    o = torch.stack(outs, dim=1) if outs else vf.new_zeros(B, 0, H, D)
    final = torch.stack([a, b, p], dim=1) if output_final_state else None
    return o.to(v.dtype), final


def wkv4_step(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor
) -> torch.Tensor:
    """One decode step on ``[B, H, D]`` inputs; ``state`` ``[B, 3, H, D]`` is updated in place."""
    a, b, p = state.unbind(1)
    o, na, nb, np_ = _step(w.float(), u.float(), k.float(), v.float(), a, b, p)
    state.copy_(torch.stack([na, nb, np_], dim=1))
    return o.to(v.dtype)
