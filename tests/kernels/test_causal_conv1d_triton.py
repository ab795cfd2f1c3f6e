"""Causal conv1d: Triton kernels (Triton's interpreter on the CPU) against the PyTorch reference.

Blocks are shrunk to 8 steps x 4 channels so that tiny shapes still span several time and channel blocks with ragged
ends; one case runs the production 64 x 64 blocks. Outputs, the new tail and the gradients of ``x``, ``weight``,
``bias`` and the carried ``tail`` are compared in float32 (same products, different summation order: ~1e-7).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hf_recurrent.kernels.causal_conv1d import causal_conv1d, causal_conv1d_step  # noqa: E402

triton_impl = pytest.importorskip("hf_recurrent.kernels.causal_conv1d.triton")

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(triton_impl, "BLOCK_T", 8)
    monkeypatch.setattr(triton_impl, "BLOCK_D", 4)


def _run(backend, x, w, b, tail, activation, seed=1):
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, w, b, tail)]
    y, new_tail = causal_conv1d(*leaves, activation=activation, backend=backend)
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g)).sum() + (new_tail * torch.randn(new_tail.shape, generator=g)).sum()
    used = [t for t in leaves if t is not None]
    return [y, new_tail, *torch.autograd.grad(loss, used)]


@pytest.mark.parametrize(
    "W,bias,tail,activation,T",
    [(4, True, True, "silu", 19), (3, False, False, None, 19), (2, True, True, "silu", 19),
     (4, False, True, None, 2), (3, True, True, "silu", 1), (2, False, False, "silu", 1)],
    ids=lambda v: str(v),
)
def test_triton_matches_reference(W, bias, tail, activation, T, small_blocks):
    g = torch.Generator().manual_seed(W * 100 + T)
    B, D = 2, 6
    x = torch.randn(B, T, D, generator=g)
    w = torch.randn(D, W, generator=g)
    b = torch.randn(D, generator=g) if bias else None
    t = torch.randn(B, D, W - 1, generator=g) if tail else None
    if t is None:  # gradients into the tail need a tensor; without one the op uses zeros
        got = _run("triton", x, w, b, None, activation)
        want = _run("reference", x, w, b, None, activation)
    else:
        got = _run("triton", x, w, b, t, activation)
        want = _run("reference", x, w, b, t, activation)
    assert len(got) == len(want)
    for name, a, e in zip(["y", "new_tail", "dx", "dw", "db|dtail", "dtail"], got, want):
        torch.testing.assert_close(a, e, **TOL, msg=name)


def test_production_blocks_match_reference():
    g = torch.Generator().manual_seed(0)
    x, w, b, t = torch.randn(1, 70, 66, generator=g), torch.randn(66, 4, generator=g), torch.randn(66, generator=g), \
        torch.randn(1, 66, 3, generator=g)
    for a, e in zip(_run("triton", x, w, b, t, "silu"), _run("reference", x, w, b, t, "silu")):
        torch.testing.assert_close(a, e, **TOL)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("W,bias_and_tail,activation", [(4, True, "silu"), (3, False, None)], ids=str)
def test_triton_bf16_inputs(W, bias_and_tail, activation, small_blocks):
    """bfloat16 ``x``, weight, bias and tail (a bf16 model's), outputs and every gradient against the float32
    reference on the same rounded inputs, with and without SiLU, bias and carried tail. The kernels load bf16 and
    sum in float32: the roundings are ``y`` stored in bf16, the incoming ``dy`` in bf16 (autograd casts it to ``y``'s
    dtype) and each gradient stored in bf16, each ~2^-9 relative (bf16 has 8 significant bits), a few in series:
    2e-2, the bound of the GLA kernel's bf16 test. The new tail is a copy of inputs, exact."""
    g = torch.Generator().manual_seed(40 + W)
    B, T, D = 2, 19, 6
    x = torch.randn(B, T, D, generator=g).bfloat16()
    w = torch.randn(D, W, generator=g).bfloat16()
    b = torch.randn(D, generator=g).bfloat16() if bias_and_tail else None
    t = torch.randn(B, D, W - 1, generator=g).bfloat16() if bias_and_tail else None
    got = _run("triton", x, w, b, t, activation)
    want = _run("reference", *(None if v is None else v.float() for v in (x, w, b, t)), activation)
    names = ["y", "new_tail", "dx", "dw"] + (["db", "dtail"] if bias_and_tail else [])
    assert len(got) == len(want) == len(names)
    for name, a, e in zip(names, got, want):
        assert a.dtype == torch.bfloat16, (name, a.dtype)
        assert torch.isfinite(a).all(), name
        assert _rel(a, e) < 2e-2, f"{name}: relative error {_rel(a, e):.2e}"
    assert torch.equal(got[1].float(), want[1])


@pytest.mark.parametrize("W", [2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_step_updates_the_tail_in_place_like_the_sequence_op(W, bias, small_blocks):
    g = torch.Generator().manual_seed(W)
    B, D, T = 2, 9, 5
    x = torch.randn(B, T, D, generator=g)
    w = torch.randn(D, W, generator=g)
    b = torch.randn(D, generator=g) if bias else None
    tail0 = torch.randn(B, D, W - 1, generator=g)
    want, want_tail = causal_conv1d(x, w, b, tail0, "silu", backend="reference")
    for backend in ("reference", "triton"):
        tail = tail0.clone()
        address = tail.data_ptr()
        ys = [causal_conv1d_step(x[:, i], w, b, tail, "silu", backend=backend) for i in range(T)]
        torch.testing.assert_close(torch.stack(ys, 1), want, **TOL, msg=backend)
        assert tail.data_ptr() == address and torch.equal(tail, want_tail), backend


def test_triton_refuses_kernels_wider_than_4():
    with pytest.raises(ValueError, match="widths 2..4"):
        causal_conv1d(torch.randn(1, 3, 4), torch.randn(4, 5), backend="triton")
