"""PyTorch reference of the selective scan: a loop over time holding one ``[B, D, N]`` float32 state.

This is the definition the Triton kernels are tested against and the path used on the CPU. Decays and inputs are
formed for ``CHUNK`` steps at a time (then the loop body is one multiply-add), so its memory is ``O(B CHUNK D N)``
besides the inputs and outputs: nothing of shape ``[B, T, D, N]`` is built. See the package docstring for the
maths and shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 32


def _step_size(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool) -> torch.Tensor:
    delta = dt.float() if dt_bias is None else dt.float() + dt_bias.float()
    return F.softplus(delta) if dt_softplus else delta


def _output(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """``(y + D x) * silu(z)`` in float32."""
    if D is not None:
        y = y + D.float() * x.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y


def selective_scan_step(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    state: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
) -> torch.Tensor:
    """One token; ``state`` ``[B, D, N]`` is updated in place. Returns ``y`` ``[B, D]`` in ``x``'s dtype."""
    delta = _step_size(dt, dt_bias, dt_softplus)  # [B, D]
    decay = torch.exp(delta[..., None] * A.float())
    state.mul_(decay).add_((delta * x.float())[..., None] * B.float()[:, None, :])
    y = torch.einsum("bdn,bn->bd", state, C.float())
    return _output(y, x, D, z).to(x.dtype)


def _scan_one(x, delta, A, B, C, state):
    """Sequential scan of one batch of equal-length sequences; returns ``sum_n C h`` ``[B, T, D]`` and ``h_T``."""
    ys = [x.new_zeros(x.shape[0], 0, x.shape[2])]
    for s in range(0, x.shape[1], CHUNK):
        d = delta[:, s : s + CHUNK]
        decay = torch.exp(d[..., None] * A)  # [B, L, D, N]
        inputs = (d * x[:, s : s + CHUNK])[..., None] * B[:, s : s + CHUNK, None, :]
        states = []
        for t in range(d.shape[1]):
            state = decay[:, t] * state + inputs[:, t]
            states.append(state)
        ys.append(torch.einsum("bldn,bln->bld", torch.stack(states, dim=1), C[:, s : s + CHUNK]))
    return torch.cat(ys, dim=1), state


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The whole sequence; differentiable by autograd. Shapes as in the package docstring."""
    batch, T, channels = x.shape
    delta = _step_size(dt, dt_bias, dt_softplus)
    xf, Af, Bf, Cf = x.float(), A.float(), B.float(), C.float()
    bounds = [0, T] if cu_seqlens is None else cu_seqlens.tolist()
    n_seq = len(bounds) - 1 if cu_seqlens is not None else batch
    if initial_state is None:
        initial_state = x.new_zeros(n_seq, channels, A.shape[1], dtype=torch.float32)
    if cu_seqlens is None:
        y, final = _scan_one(xf, delta, Af, Bf, Cf, initial_state.float())
    else:
        parts, finals = [], []
        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            h0_i = initial_state[i : i + 1].float()
            y_i, h_i = _scan_one(xf[:, s:e], delta[:, s:e], Af, Bf[:, s:e], Cf[:, s:e], h0_i)
            parts.append(y_i)
            finals.append(h_i)
        y, final = torch.cat(parts, dim=1), torch.cat(finals, dim=0)
    y = _output(y, x, D, z).to(x.dtype)
    return y, (final if output_final_state else None)
