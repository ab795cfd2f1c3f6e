r"""Linear attention with complex scalar gates (GateLoop), run on the real chunked op by a data-dependent rotation.

Per head, with real ``q_t, k_t`` (length ``K``), ``v_t`` (length ``V``) and a complex transition
``a_t = exp(l_t + i phi_t)`` (log magnitude ``l_t <= 0``, phase ``phi_t`` in radians), GateLoop's state is the complex
``K x V`` matrix

.. math::

    C_t = a_t C_{t-1} + k_t^\top v_t, \qquad o_t = \mathrm{scale}\cdot q_t\,\mathrm{Re}(C_t).

With ``L_t = \sum_{r \le t} l_r`` and the accumulated phase ``\Phi_t = \Phi_0 + \sum_{r \le t} \phi_r``,
``C_t = \sum_s e^{L_t - L_s} e^{i(\Phi_t - \Phi_s)} k_s^\top v_s`` (plus the decayed initial state), and
``\mathrm{Re}\, e^{i(\Phi_t - \Phi_s)} = \cos\Phi_t \cos\Phi_s + \sin\Phi_t \sin\Phi_s``. Hence, with the rotated
features of length ``2K``

.. math::

    \tilde q_t = [q_t \cos\Phi_t,\; q_t \sin\Phi_t], \qquad \tilde k_t = [k_t \cos\Phi_t,\; k_t \sin\Phi_t],

``o_t = \mathrm{scale}\cdot \tilde q_t S_t`` where ``S_t = e^{l_t} S_{t-1} + \tilde k_t^\top v_t`` is exactly the
real chunked op with scalar log decay ``l_t`` (:func:`~hf_recurrent.kernels.linear_attention.gated_linear_attention`):
no per-step state is materialised and every exponent stays ``<= 0``. The real state relates to the complex one by
``C_t = e^{i\Phi_t}(S_t^{\cos} - i S_t^{\sin})`` (the two ``K``-row halves of ``S_t``), so carrying ``(S_t, \Phi_t)``
carries ``C_t``. ``\Phi`` is accumulated in float64 and kept modulo ``2\pi``, so long sequences lose no phase
precision. A real gate is the case ``phi_t in {0, pi}`` (negative transitions are rotations by ``pi``).

Shapes: ``q, k`` ``[B, T, H, K]``; ``v`` ``[B, T, H, V]``; ``log_magnitude``, ``phase`` ``[B, T, H]``;
``initial_state`` ``[B, H, 2K, V]`` float32; ``initial_phase`` ``[B, H]`` float32; ``cu_seqlens`` int ``[N + 1]``
offsets of packed sequences (``B = 1``; each starts from zero state and phase, so no initial ones). Returns ``o``
``[B, T, H, V]``, the final state ``[N, H, 2K, V]`` (or ``None``) and the final phase ``[B, H]`` in ``[0, 2 pi)``
(that of the last position).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import gated_linear_attention, gated_linear_attention_step

__all__ = ["complex_gated_linear_attention", "complex_gated_linear_attention_step"]


def _rotate(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """``[x cos(phase), x sin(phase)]`` along the last dim; ``phase`` broadcasts over it."""
    phase = phase.unsqueeze(-1)
    return torch.cat([x * phase.cos().to(x.dtype), x * phase.sin().to(x.dtype)], dim=-1)


def _check(q: torch.Tensor, log_magnitude: torch.Tensor, phase: torch.Tensor) -> None:
    if q.dim() != 4 or log_magnitude.shape != q.shape[:3] or phase.shape != q.shape[:3]:
        raise ValueError(
            f"log_magnitude and phase must be [B, T, H] = {tuple(q.shape[:3])}; "
            f"got {tuple(log_magnitude.shape)} and {tuple(phase.shape)}"
        )


def complex_gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_magnitude: torch.Tensor,
    phase: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    initial_phase: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The whole sequence (prefill, training); see the module docstring for the maths and shapes."""
    _check(q, log_magnitude, phase)
    if cu_seqlens is not None and (initial_state is not None or initial_phase is not None):
        raise ValueError("packed sequences (cu_seqlens) start from zero state and phase: pass no initial ones")
    accumulated = phase.double().cumsum(dim=1)
    if cu_seqlens is not None:  # restart the phase at every document: subtract the sum before its first token
        before = F.pad(accumulated, (0, 0, 1, 0))[:, cu_seqlens[:-1]]  # [1, N, H]
        accumulated = accumulated - before.repeat_interleave(cu_seqlens.diff(), dim=1, output_size=q.shape[1])
    elif initial_phase is not None:
        accumulated = accumulated + initial_phase.double().unsqueeze(1)
    accumulated = torch.remainder(accumulated, 2 * math.pi).float()  # [B, T, H]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    o, state = gated_linear_attention(
        _rotate(q, accumulated), _rotate(k, accumulated), v, log_magnitude, scale=scale,
        initial_state=initial_state, output_final_state=output_final_state, cu_seqlens=cu_seqlens, backend=backend,
    )
    return o, state, accumulated[:, -1]


def complex_gated_linear_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_magnitude: torch.Tensor,
    phase: torch.Tensor,
    state: torch.Tensor,
    accumulated_phase: torch.Tensor,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """One decode step: ``q, k`` ``[B, H, K]``, ``v`` ``[B, H, V]``, ``log_magnitude, phase`` ``[B, H]``.

    ``state`` ``[B, H, 2K, V]`` and ``accumulated_phase`` ``[B, H]`` (float32) are updated in place; returns ``o``.
    """
    accumulated_phase.copy_(torch.remainder(accumulated_phase.double() + phase.double(), 2 * math.pi))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return gated_linear_attention_step(
        _rotate(q, accumulated_phase), _rotate(k, accumulated_phase), v, log_magnitude, state, scale=scale,
        backend=backend,
    )
