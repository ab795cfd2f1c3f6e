r"""Diagonal (element-wise) linear scan: minGRU, minLSTM, HGRN, LRU and relatives.

For every sequence ``b``, time ``t``, head ``h`` and channel ``d``:

.. math::

    h_t = e^{\log a_t}\, h_{t-1} + b_t ,

the decay given in log space (``log_a <= 0`` keeps the scan stable; ``log_a = 0, b = 0`` leaves the state exactly
unchanged, which is how padding is skipped). minGRU is ``log_a = log(1 - z) = -softplus(k)``, ``b = z * g(x)``.

Shapes: ``log_a``, ``b`` ``[B, T, H, D]``; ``initial_state`` ``[B, H, D]`` float32 or None (zeros). Returns
``h`` ``[B, T, H, D]`` in ``b``'s dtype and the final state ``[B, H, D]`` float32 (or None). The state is carried in
float32. Any ``T`` and ``D``; forward and backward on both backends (the backward pass reads ``h_{t-1}`` back
from the output, so its precision is the output dtype's).
"""

from __future__ import annotations

import torch

from ..backend import resolve_backend
from . import reference

__all__ = ["linear_scan", "linear_scan_step"]


def linear_scan(
    log_a: torch.Tensor,
    b: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the scan over a whole sequence; see the module docstring for the maths and shapes."""
    if b.dim() != 4 or log_a.shape != b.shape:
        raise ValueError(f"log_a and b must both be [B, T, H, D]; got {tuple(log_a.shape)} and {tuple(b.shape)}")
    B, T, H, D = b.shape
    if initial_state is not None and initial_state.shape != (B, H, D):
        raise ValueError(f"initial_state must be [B, H, D] = {(B, H, D)}; got {tuple(initial_state.shape)}")
    state = b.new_zeros(B, H, D, dtype=torch.float32) if initial_state is None else initial_state.float()
    if T == 0:
        return b.new_empty(B, 0, H, D), (state if output_final_state else None)
    if resolve_backend(backend, b) == "triton":
        from . import triton as triton_impl

        h, final = triton_impl.linear_scan(log_a, b, state)
    else:
        h, final = reference.linear_scan(log_a, b, state)
    return h, (final if output_final_state else None)


def linear_scan_step(
    log_a: torch.Tensor, b: torch.Tensor, state: torch.Tensor, *, backend: str | None = None
) -> torch.Tensor:
    """One decode step: ``log_a, b`` ``[B, H, D]``, ``state`` ``[B, H, D]`` float32; returns the new state.

    The update is element-wise, so it is one fused PyTorch expression on either backend (a kernel launch of its own
    would not be faster).
    """
    if state.dtype != torch.float32 or state.shape != b.shape or log_a.shape != b.shape:
        raise ValueError(
            f"log_a, b and the float32 state must all be [B, H, D]; got {tuple(log_a.shape)}, {tuple(b.shape)}, "
            f"{state.dtype} {tuple(state.shape)}"
        )
    resolve_backend(backend, b)
    return torch.addcmul(b.float(), log_a.float().exp(), state)
