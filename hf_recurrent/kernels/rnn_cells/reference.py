"""PyTorch definition of the non-linear cells (the maths the Triton kernels must reproduce), in float32.

Every function takes the recurrent part of the gate pre-activations ``P = y_{t-1} R + rbias`` separately from the
input part ``gx``, because the GRU's candidate gate multiplies only the recurrent part by its reset gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CELLS = {"lstm": (4, 2), "gru": (3, 1), "slstm": (4, 4)}
"""cell name -> (number of gates G, number of state tensors S)."""


def cell_update(cell: str, gx: torch.Tensor, p: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """One step of ``cell``: ``gx, p`` ``[B, H, G, D]``, ``state`` ``[B, S, H, D]`` -> new state ``[B, S, H, D]``."""
    if cell == "lstm":
        i, f, z, o = (gx + p).unbind(dim=2)
        c = torch.sigmoid(f) * state[:, 1] + torch.sigmoid(i) * torch.tanh(z)
        return torch.stack((torch.sigmoid(o) * torch.tanh(c), c), dim=1)
    if cell == "gru":
        r = torch.sigmoid(gx[:, :, 0] + p[:, :, 0])
        z = torch.sigmoid(gx[:, :, 1] + p[:, :, 1])
        n = torch.tanh(gx[:, :, 2] + r * p[:, :, 2])
        return ((1 - z) * n + z * state[:, 0]).unsqueeze(1)
    if cell == "slstm":
        ri, rf, rz, ro = (gx + p).unbind(dim=2)
        c_old, n_old, m_old = state[:, 1], state[:, 2], state[:, 3]
        log_f = F.logsigmoid(rf) + m_old.detach()
        with torch.no_grad():  # the stabiliser is a constant for gradients (outputs are invariant to it)
            m = torch.where(n_old == 0, ri, torch.maximum(ri, log_f))
        i, f = torch.exp(ri - m), torch.exp(log_f - m)
        c = f * c_old + i * torch.tanh(rz)
        n = (f * n_old + i).clamp_min(1.0)
        h = torch.sigmoid(ro) * c / n
        return torch.stack((h, c, n, m), dim=1)
    raise ValueError(f"unknown cell {cell!r}: expected one of {sorted(CELLS)}")


def recurrent_part(y: torch.Tensor, R: torch.Tensor, rbias: torch.Tensor | None) -> torch.Tensor:
    """``P[b, h, g, j] = sum_i y[b, h, i] R[h, g, i, j] + rbias[h, g, j]`` in float32; ``y`` ``[B, H, D]``."""
    p = torch.einsum("bhi,hgij->bhgj", y.float(), R.float())
    return p if rbias is None else p + rbias.float()


def rnn_scan(
    cell: str,
    gx: torch.Tensor,
    R: torch.Tensor,
    rbias: torch.Tensor | None,
    state: torch.Tensor,
    keep: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop over time: ``gx`` ``[B, T, H, G, D]``, ``state`` ``[B, S, H, D]`` float32, ``keep`` ``[B, T]`` or None.

    Returns ``y`` ``[B, T, H, D]`` in ``gx``'s dtype and the final state; where ``keep`` is 0 the state is kept.
    """
    ys = []
    for t in range(gx.shape[1]):
        new = cell_update(cell, gx[:, t].float(), recurrent_part(state[:, 0], R, rbias), state)
        state = new if keep is None else torch.where(keep[:, t, None, None, None] > 0, new, state)
        ys.append(state[:, 0])
    return torch.stack(ys, dim=1).to(gx.dtype), state
