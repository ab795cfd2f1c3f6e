r"""Non-linear recurrent cells with head-wise block-diagonal recurrent weights: LSTM, GRU, sLSTM (FlashRNN's family).

The hidden vector of width ``H * D`` is split into ``H`` heads of ``D``; head ``h`` mixes only its own ``D``
previous outputs through ``R[h, g]`` (``[D, D]``, input index first) for each gate ``g``. With ``H = 1`` the cells
are exactly ``torch.nn.LSTM`` / ``nn.GRU``. The input part of the gate pre-activations, ``gx`` (``W x_t + b``), is
computed outside (one projection for the whole sequence); the recurrent part is

.. math::

    P_{t,g} = y_{t-1} R_g + r_g \quad (r: \text{optional recurrent bias}).

Cells (``\sigma`` the logistic function, all point-wise per element):

* ``lstm``, gates ``(i, f, z, o)``, state ``(y, c)``:
  ``c_t = \sigma(f) c_{t-1} + \sigma(i) \tanh(z)``, ``y_t = \sigma(o) \tanh(c_t)`` with gate ``= gx + P``;
* ``gru``, gates ``(r, z, n)``, state ``(y,)``: ``r = \sigma(gx_r + P_r)``, ``z = \sigma(gx_z + P_z)``,
  ``n = \tanh(gx_n + r P_n)``, ``y_t = (1 - z) n + z y_{t-1}`` (``nn.GRU``'s form: the reset gate scales the
  recurrent part including its bias);
* ``slstm`` (xLSTM), gates ``(i, f, z, o)``, state ``(y, c, n, m)`` with an exponential input gate, a normaliser
  ``n`` and a log-space stabiliser ``m``: ``m_t = \max(\tilde i, \log\sigma(\tilde f) + m_{t-1})`` (``\tilde i``
  alone where ``n_{t-1} = 0``, a fresh state), ``i = e^{\tilde i - m_t}``, ``f = e^{\log\sigma(\tilde f) + m_{t-1}
  - m_t}``, ``c_t = f c_{t-1} + i \tanh(z)``, ``n_t = \max(f n_{t-1} + i, 1)``, ``y_t = \sigma(o) c_t / n_t``.
  ``m`` is a constant for gradients (outputs do not depend on it), as in FlashRNN and xLSTM's kernels.

Shapes: ``gx`` ``[B, T, H, G, D]``; ``R`` ``[H, G, D, D]``; ``rbias`` ``[H, G, D]`` or None; ``initial_state``
``[B, S, H, D]`` float32 or None (zeros); ``keep`` ``[B, T]`` (1 = real token, 0 = padding: the state is carried
over unchanged and ``y_t = y_{t-1}``) or None. Returns ``y`` ``[B, T, H, D]`` in ``gx``'s dtype and the final state
``[B, S, H, D]`` float32 (or None). Gates are computed in float32; the recurrent matmul runs in ``R``'s dtype with
float32 accumulation. Any ``T`` and any ``D``; forward and backward on both backends.
"""

from __future__ import annotations

import torch

from ..backend import resolve_backend
from . import reference
from .reference import CELLS

__all__ = ["CELLS", "rnn_cell_scan", "rnn_cell_step"]


def _check(cell: str, gx: torch.Tensor, R: torch.Tensor, rbias, state, keep) -> None:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}: expected one of {sorted(CELLS)}")
    G, S = CELLS[cell]
    if gx.dim() != 5 or gx.shape[3] != G:
        raise ValueError(f"gx must be [B, T, H, G={G}, D] for cell {cell!r}; got {tuple(gx.shape)}")
    B, T, H, _, D = gx.shape
    if R.shape != (H, G, D, D):
        raise ValueError(f"R must be [H, G, D, D] = {(H, G, D, D)}; got {tuple(R.shape)}")
    if rbias is not None and rbias.shape != (H, G, D):
        raise ValueError(f"rbias must be [H, G, D] = {(H, G, D)}; got {tuple(rbias.shape)}")
    if state is not None and state.shape != (B, S, H, D):
        raise ValueError(f"initial_state must be [B, S, H, D] = {(B, S, H, D)}; got {tuple(state.shape)}")
    if keep is not None and keep.shape != (B, T):
        raise ValueError(f"keep must be [B, T] = {(B, T)}; got {tuple(keep.shape)}")


def rnn_cell_scan(
    cell: str,
    gx: torch.Tensor,
    R: torch.Tensor,
    rbias: torch.Tensor | None = None,
    *,
    initial_state: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``cell`` over a whole sequence (prefill, training); see the module docstring for maths and shapes."""
    _check(cell, gx, R, rbias, initial_state, keep)
    B, T, H, _, D = gx.shape
    state = initial_state
    if state is None:
        state = gx.new_zeros(B, CELLS[cell][1], H, D, dtype=torch.float32)
    if T == 0:
        return gx.new_empty(B, 0, H, D), (state.float() if output_final_state else None)
    if resolve_backend(backend, gx) == "triton":
        from . import triton as triton_impl

        y, final = triton_impl.rnn_scan(cell, gx, R, rbias, state, keep)
    else:
        y, final = reference.rnn_scan(cell, gx, R, rbias, state.float(), keep)
    return y, (final if output_final_state else None)


def rnn_cell_step(
    cell: str,
    gx: torch.Tensor,
    R: torch.Tensor,
    rbias: torch.Tensor | None,
    state: torch.Tensor,
    *,
    keep: torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step: ``gx`` ``[B, H, G, D]``, ``state`` ``[B, S, H, D]`` float32, ``keep`` ``[B]`` or None.

    Returns ``(y [B, H, D], new state [B, S, H, D])``; on the Triton backend this is the fused kernel with T = 1
    (its two-slot inference mode: nothing is stored for a backward pass).
    """
    y, final = rnn_cell_scan(
        cell, gx.unsqueeze(1), R, rbias, initial_state=state, keep=None if keep is None else keep[:, None],
        output_final_state=True, backend=backend,
    )
    return y[:, 0], final
