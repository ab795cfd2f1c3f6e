"""Fused RMSNorm / residual-add RMSNorm / gated RMSNorm / SwiGLU / grouped and residual matrix-vector products /
GLA's low-rank log gate: Triton (interpreted on the CPU) = PyTorch."""

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.backend import knobs
from hf_recurrent.kernels.fused_layers import (
    add_rms_norm, linear_group, linear_residual, low_rank_log_gate, rms_norm, swiglu,
)

# float32: reduction order only (1e-5); bfloat16: at most one rounding step of the output (2^-7 relative)
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=1e-2)}


def _plain_rms_norm(x, weight, eps, gate=None):
    """The definition, written out independently of the package."""
    xf = x.double()
    y = xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.double()
    if gate is not None:
        y = y * F.silu(gate.double())
    return y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("D", [48, 64, 100])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_rms_norm_triton_equals_reference(dtype, D, gated, affine):
    torch.manual_seed(0)
    x = (torch.randn(2, 3, D) * 3).to(dtype)
    weight = torch.randn(D).to(dtype) if affine else None
    gate = torch.randn(2, 3, D).to(dtype) if gated else None
    ref = rms_norm(x, weight, 1e-5, gate, backend="reference")
    out = rms_norm(x, weight, 1e-5, gate, backend="triton")
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref, **TOL[dtype])
    torch.testing.assert_close(ref.double(), _plain_rms_norm(x, weight, 1e-5, gate), **TOL[dtype])


@pytest.mark.parametrize("residual_dtype", [torch.float32, torch.bfloat16])
def test_add_rms_norm_rounds_like_the_unfused_code(residual_dtype):
    torch.manual_seed(1)
    x = torch.randn(4, 2, 80).to(torch.bfloat16)
    residual = torch.randn(4, 2, 80).to(residual_dtype)
    weight = torch.randn(80)
    s_ref, y_ref = add_rms_norm(x, residual, weight, 1e-6, backend="reference")
    s, y = add_rms_norm(x, residual, weight, 1e-6, backend="triton")
    assert s.dtype == residual_dtype and y.dtype == torch.bfloat16
    torch.testing.assert_close(s_ref, residual + x, atol=0, rtol=0)
    # float32: the same exact sum; bfloat16: one rounding (the interpreter rounds to bfloat16 its own way; the
    # GPU test checks that the kernel rounds exactly as torch does)
    torch.testing.assert_close(s, residual + x, **(dict(atol=0, rtol=0) if residual_dtype == torch.float32
                                                   else dict(atol=0, rtol=2**-7)))
    torch.testing.assert_close(y, y_ref, **TOL[torch.bfloat16])
    torch.testing.assert_close(y_ref.double(), _plain_rms_norm((residual + x).to(torch.bfloat16), weight, 1e-6),
                               **TOL[torch.bfloat16])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_triton_equals_torch(dtype):
    torch.manual_seed(2)
    a, b = (torch.randn(3, 1500) * 4).to(dtype), torch.randn(3, 1500).to(dtype)
    out = swiglu(a, b, backend="triton")
    # bfloat16: two roundings (the interpreter's own; tests/gpu checks torch's rounding exactly)
    tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-6, rtol=2**-6)
    torch.testing.assert_close(out, F.silu(a) * b, **tol)


def test_fused_layers_keep_gradients_on_the_reference_path():
    """With autograd recording, every backend runs the differentiable reference (the Triton kernels are forward-only)."""
    x = torch.randn(2, 32, requires_grad=True)
    w = torch.randn(32, requires_grad=True)
    rms_norm(x, w, 1e-6, backend="triton").sum().backward()
    expected_x, expected_w = torch.autograd.grad(_plain_rms_norm(x, w, 1e-6).sum(), (x, w))
    torch.testing.assert_close(x.grad, expected_x.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.grad, expected_w.float(), atol=1e-5, rtol=1e-5)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"weight must be \[D\]"):
        rms_norm(torch.randn(2, 8), torch.ones(7), 1e-6)
    with pytest.raises(ValueError, match="residual must have the shape of x"):
        add_rms_norm(torch.randn(2, 8), torch.randn(2, 7), None, 1e-6)


@pytest.fixture(params=[True, False], ids=["row_kernel", "group_kernel"])
def gemv_kernel(request):
    """One-row inputs on the row kernel, or on the group kernel as several rows are (``GEMV_ROW_KERNEL``)."""
    from hf_recurrent.kernels.fused_layers import triton_gemv

    with knobs(triton_gemv, GEMV_ROW_KERNEL=request.param):
        yield request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 16])
@pytest.mark.parametrize("count", [1, 2, 7])
def test_linear_group_triton_equals_linear(rows, count, dtype, gemv_kernel):
    """Decode-sized inputs: one launch for several projections of the same input (K not a power of two, a
    weight narrower than a block, more weights than one launch takes). bfloat16: float32 sums of the same
    products, so only the output's rounding differs from float64 (TOL)."""
    torch.manual_seed(3)
    K = 80
    x = torch.randn(rows, 1, K).to(dtype)
    weights = [(torch.randn(n, K) / K**0.5).to(dtype) for n in (48, 16, 100, 33, 7, 20, 5)[:count]]
    outs = linear_group(x, weights, backend="triton")
    assert [o.shape for o in outs] == [(rows, 1, w.shape[0]) for w in weights]
    assert all(o.dtype == dtype for o in outs)
    for o, w in zip(outs, weights):
        torch.testing.assert_close(o.double(), F.linear(x.double(), w.double()), **TOL[dtype])


def test_linear_group_checks_shapes_and_falls_back_for_many_rows():
    with pytest.raises(ValueError, match=r"each weight must be \[N, 8\]"):
        linear_group(torch.randn(2, 8), [torch.randn(4, 9)])
    x, w = torch.randn(40, 32), torch.randn(24, 32)  # more rows than a decode batch: plain F.linear
    torch.testing.assert_close(linear_group(x, [w], backend="triton")[0], F.linear(x, w), atol=0, rtol=0)


@pytest.mark.parametrize("dtype,residual_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                  (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize("rows", [1, 5])
def test_linear_residual_triton_equals_unfused(rows, dtype, residual_dtype, gemv_kernel):
    """``r + x W^T`` in one launch: the product rounded to x's dtype, then added in the residual's (as the block's
    unfused ``hidden + mlp(x)`` does)."""
    torch.manual_seed(4)
    K, N = 96, 40
    x = torch.randn(rows, 1, K).to(dtype)
    w = (torch.randn(N, K) / K**0.5).to(dtype)
    r = torch.randn(rows, 1, N).to(residual_dtype)
    out = linear_residual(x, w, r, backend="triton")
    ref = linear_residual(x, w, r, backend="reference")
    assert out.dtype == ref.dtype == torch.result_type(r, x) and out.shape == r.shape
    torch.testing.assert_close(ref, r + F.linear(x, w), atol=0, rtol=0)
    exact = r.double() + F.linear(x.double(), w.double())
    # float32: summation order; bfloat16 sums: two roundings (the product's and the sum's)
    tol = dict(atol=1e-5, rtol=1e-5) if out.dtype == torch.float32 else dict(atol=3e-2, rtol=2**-6)
    torch.testing.assert_close(out.double(), exact, **(tol if dtype == torch.float32 else dict(atol=3e-2, rtol=2**-6)))


def test_linear_residual_checks_shapes():
    with pytest.raises(ValueError, match=r"residual must be \(2, 4\)"):
        linear_residual(torch.randn(2, 8), torch.randn(4, 8), torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"weight must be \[N, 8\]"):
        linear_residual(torch.randn(2, 8), torch.randn(4, 9), torch.randn(2, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias,clamp_min", [(True, None), (True, -3.0), (False, None)])
def test_low_rank_log_gate_triton_equals_reference(dtype, bias, clamp_min):
    """GLA's ``max(logsigmoid(x W^T + b) / 16, c)`` in one launch; pre-activations up to +-60 so that both tails of
    the log-sigmoid (where a naive ``log(1 + exp(-|z|))`` loses everything) are covered."""
    torch.manual_seed(5)
    R, D = 16, 300
    x = (torch.randn(3, 2, R) * 6).to(dtype)
    w = torch.randn(D, R).to(dtype)
    b = torch.randn(D).to(dtype) if bias else None
    ref = low_rank_log_gate(x, w, b, 16.0, clamp_min, backend="reference")
    out = low_rank_log_gate(x, w, b, 16.0, clamp_min, backend="triton")
    assert out.dtype == ref.dtype == torch.float32 and out.shape == (3, 2, D)
    z = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert z.abs().max() > 30  # both tails reached
    exact = F.logsigmoid(z) / 16.0
    exact = exact if clamp_min is None else exact.clamp_min(clamp_min)
    if dtype == torch.float32:  # relative even where the gate is ~exp(-60): the pre-activation's summation order
        # (~1e-7 relative) times |z| <= 60 through the exponential of the lower tail
        torch.testing.assert_close(out, ref, atol=1e-30, rtol=3e-5)
        torch.testing.assert_close(out.double(), exact, atol=1e-30, rtol=3e-5)
    else:  # the pre-activation is rounded to bfloat16 (2^-8 relative, times |z| <= 60 in the log-sigmoid)
        torch.testing.assert_close(out, ref, atol=0.02, rtol=2**-7)
