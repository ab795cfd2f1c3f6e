r"""Fused layers of the decoder shell for decode: RMSNorm (optionally after a residual add, optionally gated),
the SwiGLU product, and several projections of one input in one launch.

.. math::

    s = r + x \quad(\text{when a residual } r \text{ is given}), \qquad
    y = \frac{s}{\sqrt{\operatorname{mean}(s^2) + \epsilon}} \odot w \;[\odot \operatorname{silu}(z)], \qquad
    \operatorname{swiglu}(a, b) = \operatorname{silu}(a) \odot b

over the last dimension, computed in float32. Rounding follows the unfused PyTorch code exactly: ``s`` is rounded
to ``torch.result_type(r, x)`` (returned as the new residual stream) and the norm reads ``s`` rounded to ``x``'s
dtype; ``y`` comes back in ``x``'s dtype.

:func:`linear_group` computes ``[x W_i^T]`` for weights ``W_i`` ``[N_i, K]`` sharing the input ``x`` ``[..., K]``:
with at most 16 rows (a decode step) one kernel streams every weight once, instead of one under-occupied
matrix-vector launch per weight; otherwise it is one ``F.linear`` each. :func:`linear_residual` is
``r + x W^T`` (the block's last residual add in the product's epilogue). :func:`low_rank_log_gate` is GLA's
log decay from its low-rank gate projection, ``g = max(logsigmoid(x W^T + b) / n, c)`` in float32 (one launch
instead of a projection, a cast, the log-sigmoid, the division and the clamp).

On Hopper GPUs the kernels use programmatic dependent launch (:mod:`hf_recurrent.kernels.triton_launch`): the
one-row matrix-vector kernel requests its first weight tile while the previous kernel of the step still runs
(:mod:`.triton_gemv`).

Shapes: ``x``, ``r``, ``z`` ``[..., D]`` (any leading shape, contiguous last dimension); ``weight`` ``[D]`` or None.
The Triton kernels are forward-only (inference, decode): with autograd recording a graph through any input, the
PyTorch reference runs on every backend, so training keeps exact gradients.
"""

from __future__ import annotations

import torch

from ..backend import resolve_backend
from . import reference

__all__ = ["rms_norm", "add_rms_norm", "swiglu", "linear_group", "linear_residual", "low_rank_log_gate"]


def _use_triton(backend: str | None, *tensors: torch.Tensor | None) -> bool:
    present = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return False
    return resolve_backend(backend, present[0]) == "triton"


def _check(x: torch.Tensor, weight: torch.Tensor | None, **same: torch.Tensor | None) -> None:
    if weight is not None and weight.shape != x.shape[-1:]:
        raise ValueError(f"weight must be [D] = [{x.shape[-1]}]; got {tuple(weight.shape)}")
    for name, t in same.items():
        if t is not None and t.shape != x.shape:
            raise ValueError(f"{name} must have the shape of x, {tuple(x.shape)}; got {tuple(t.shape)}")


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    gate: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """``RMSNorm(x) * weight`` (times ``silu(gate)`` when given), in ``x``'s dtype."""
    _check(x, weight, gate=gate)
    if _use_triton(backend, x, weight, gate):
        from . import triton as triton_impl

        return triton_impl.rms_norm(x, None, weight, gate, eps)[1]
    return reference.rms_norm(x, weight, eps, gate)


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, RMSNorm(s) * weight)`` with ``s = residual + x``; see the module docstring for the rounding."""
    _check(x, weight, residual=residual)
    if _use_triton(backend, x, residual, weight):
        from . import triton as triton_impl

        return triton_impl.rms_norm(x, residual, weight, None, eps)
    return reference.add_rms_norm(x, residual, weight, eps)


def swiglu(a: torch.Tensor, b: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """``silu(a) * b`` in ``a``'s dtype."""
    _check(a, None, b=b)
    if _use_triton(backend, a, b):
        from . import triton as triton_impl

        return triton_impl.swiglu(a, b)
    return reference.swiglu(a, b)


def linear_group(x: torch.Tensor, weights: list[torch.Tensor], backend: str | None = None) -> list[torch.Tensor]:
    """``[F.linear(x, w) for w in weights]`` (no biases), fused for decode-sized inputs; see the module docstring."""
    K = x.shape[-1]
    for w in weights:
        if w.dim() != 2 or w.shape[1] != K:
            raise ValueError(f"each weight must be [N, {K}] for inputs [..., {K}]; got {tuple(w.shape)}")
    outs = _on_gemv_kernels(x, weights, None, backend)
    return reference.linear_group(x, weights) if outs is None else outs


def linear_residual(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor, backend: str | None = None
) -> torch.Tensor:
    """``residual + F.linear(x, weight)`` (no bias), the product rounded to ``x``'s dtype before the add, the sum
    in ``torch.result_type(residual, x)``; one fused launch for decode-sized inputs."""
    K, N = x.shape[-1], weight.shape[0]
    if weight.dim() != 2 or weight.shape[1] != K:
        raise ValueError(f"weight must be [N, {K}] for inputs [..., {K}]; got {tuple(weight.shape)}")
    if residual.shape != (*x.shape[:-1], N):
        raise ValueError(f"residual must be {(*x.shape[:-1], N)}; got {tuple(residual.shape)}")
    outs = _on_gemv_kernels(x, [weight], residual, backend)
    return reference.linear_residual(x, weight, residual) if outs is None else outs[0]


def _on_gemv_kernels(
    x: torch.Tensor, weights: list[torch.Tensor], residual: torch.Tensor | None, backend: str | None
) -> list[torch.Tensor] | None:
    """The products (``+ residual``, one weight) on the decode matrix-vector kernels when they take these inputs
    (Triton backend, no autograd, weights in ``x``'s dtype, decode-sized ``x``), each ``[..., N_i]``; else None."""
    K = x.shape[-1]
    rows = x.numel() // K if K else 0
    if not (0 < rows and _use_triton(backend, x, residual, *weights) and all(w.dtype == x.dtype for w in weights)):
        return None
    from . import triton_gemv

    if not triton_gemv.takes(x, weights):
        return None
    outs = triton_gemv.linear_group(x.reshape(rows, K), list(weights),
                                    None if residual is None else residual.reshape(rows, -1))
    return [y.view(*x.shape[:-1], y.shape[-1]) for y in outs]


def low_rank_log_gate(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    normalizer: float,
    clamp_min: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """``max(logsigmoid(x @ weight.T + bias) / normalizer, clamp_min)`` in float32; ``x`` ``[..., R]``, ``weight``
    ``[D, R]``, ``bias`` ``[D]`` or None; the projection is rounded to ``x``'s dtype as ``F.linear``'s output is."""
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must be [D, {x.shape[-1]}]; got {tuple(weight.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [{weight.shape[0]}]; got {tuple(bias.shape)}")
    if (_use_triton(backend, x, weight, bias) and weight.dtype == x.dtype
            and (bias is None or bias.dtype == x.dtype)):
        from . import triton as triton_impl

        return triton_impl.low_rank_log_gate(x, weight, bias, normalizer, clamp_min)
    return reference.low_rank_log_gate(x, weight, bias, normalizer, clamp_min)
