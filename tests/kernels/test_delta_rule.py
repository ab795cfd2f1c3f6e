"""Generalised delta rule: the chunked reference against the step-by-step one (outputs, states, gradients), and
the fused recurrent Triton kernels (``TRITON_INTERPRET=1`` on the CPU, see conftest) against the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.delta_rule import generalized_delta_rule, generalized_delta_rule_step

TOL = dict(atol=2e-5, rtol=1e-5)  # fp32, tens of steps: orders of summation differ (~1e-6)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)


def _inputs(B=2, T=21, H=2, K=8, V=12, seed=0, requires_grad=True):
    """RWKV-7-like inputs: a = -kk, b = kk * gate with kk unit-norm, log decays in [-e^-0.5, 0)."""
    g = torch.Generator().manual_seed(seed)
    r, k = torch.randn(B, T, H, K, generator=g), torch.randn(B, T, H, K, generator=g)
    kk = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    gate = torch.rand(B, T, H, K, generator=g)
    log_w = -0.6065 * torch.rand(B, T, H, K, generator=g)
    v = torch.randn(B, T, H, V, generator=g)
    tensors = [r, log_w, k, v, -kk, kk * gate]
    return [t.requires_grad_(requires_grad) for t in tensors]


def _run(inputs, backend, mode="chunk", s0=None, cu_seqlens=None, seed=7):
    o, final = generalized_delta_rule(*inputs, initial_state=s0, output_final_state=True, cu_seqlens=cu_seqlens,
                                      backend=backend, mode=mode, scale=0.5)
    g = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=g)).sum() + (final * torch.randn(final.shape, generator=g)).sum()
    leaves = list(inputs) + ([s0] if s0 is not None else [])
    return o.detach(), final.detach(), torch.autograd.grad(loss, leaves)


def _compare(a, b, names="r log_w k v a b s0".split()):
    torch.testing.assert_close(a[0], b[0], **TOL)
    torch.testing.assert_close(a[1], b[1], **TOL)
    for name, x, y in zip(names, a[2], b[2]):
        torch.testing.assert_close(x, y, **GRAD_TOL, msg=name)


@pytest.mark.parametrize("T", [1, 16, 37])
def test_chunked_reference_equals_recurrent(T):
    inputs = _inputs(T=T)
    s0 = torch.randn(2, 2, 8, 12, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    _compare(_run(inputs, "reference", "chunk", s0), _run(inputs, "reference", "recurrent", s0))


def test_recurrent_equals_explicit_matrix_form_and_step():
    """Against RWKV-7's own form S_t = S_{t-1}(diag(w) + (-kk)(kk a)^T) + v k^T, o = S r, with S = M^T."""
    r, log_w, k, v, a, b = (t.detach() for t in _inputs(B=1, T=6, H=1, K=4, V=3))
    S = torch.zeros(3, 4)
    state = torch.zeros(1, 1, 4, 3)
    for t in range(6):
        transition = torch.diag(log_w[0, t, 0].exp()) + a[0, t, 0][:, None] * b[0, t, 0][None, :]
        S = S @ transition + v[0, t, 0][:, None] * k[0, t, 0][None, :]
        o = generalized_delta_rule_step(r[:, t], log_w[:, t], k[:, t], v[:, t], a[:, t], b[:, t], state,
                                        backend="reference")
        torch.testing.assert_close(o[0, 0], S @ r[0, t, 0], **TOL)
    full, final = generalized_delta_rule(r, log_w, k, v, a, b, output_final_state=True, mode="recurrent")
    torch.testing.assert_close(final[0, 0], S.T, **TOL)
    torch.testing.assert_close(state, final, **TOL)


def test_packed_sequences_equal_separate_runs():
    inputs = [t.detach() for t in _inputs(B=1, T=20)]
    cu = torch.tensor([0, 7, 20])
    o, final = generalized_delta_rule(*inputs, cu_seqlens=cu, output_final_state=True)
    for n, (s, e) in enumerate([(0, 7), (7, 20)]):
        o_n, f_n = generalized_delta_rule(*(t[:, s:e] for t in inputs), output_final_state=True, mode="recurrent")
        torch.testing.assert_close(o[:, s:e], o_n, **TOL)
        torch.testing.assert_close(final[n : n + 1], f_n, **TOL)


def test_shapes_are_checked():
    r, log_w, k, v, a, b = _inputs()
    with pytest.raises(ValueError, match="log_w must have k's shape"):
        generalized_delta_rule(r, log_w[..., :3], k, v, a, b)
    with pytest.raises(ValueError, match="initial_state"):
        generalized_delta_rule(r, log_w, k, v, a, b, initial_state=torch.zeros(2, 2, 8, 8))


triton = pytest.importorskip("triton")


@pytest.mark.parametrize("T,V,with_state", [(19, 12, True), (5, 80, False)])  # V = 80: three value blocks
def test_triton_forward_and_gradients_equal_reference(T, V, with_state):
    inputs = _inputs(B=2, T=T, H=2, K=8, V=V, seed=3)
    s0 = None
    if with_state:
        s0 = torch.randn(2, 2, 8, V, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    _compare(_run(inputs, "triton", s0=s0), _run(inputs, "reference", "recurrent", s0=s0))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("T,V,with_state", [(19, 12, True), (5, 80, False)])  # V = 80: three value blocks
def test_triton_bf16_inputs(T, V, with_state):
    """bfloat16 ``r, k, v, a, b`` as a bf16 RWKV-7 passes them (``log_w`` and the state float32), outputs and every
    gradient against the float32 recurrence on the same rounded inputs. The kernels load bf16 and compute in
    float32: the roundings are ``o`` stored in bf16, the incoming ``do`` in bf16 (autograd casts it to ``o``'s
    dtype) and each gradient stored in bf16, each ~2^-9 relative (bf16 has 8 significant bits), a few in series:
    2e-2, the bound of the GLA kernel's bf16 test, also for the decay's gradient ``dlog_w`` (float32, only ``do``'s
    rounding enters it). The final state is float32 arithmetic on the same rounded inputs: 1e-5 as in float32."""
    inputs = [t.detach() for t in _inputs(B=2, T=T, H=2, K=8, V=V, seed=8)]
    low = [t if i == 1 else t.bfloat16() for i, t in enumerate(inputs)]  # log_w (index 1) stays float32
    s0 = None
    if with_state:
        s0 = torch.randn(2, 2, 8, V, generator=torch.Generator().manual_seed(9))
    got = _run([t.clone().requires_grad_() for t in low], "triton",
               s0=None if s0 is None else s0.clone().requires_grad_())
    want = _run([t.float().requires_grad_() for t in low], "reference", "recurrent",
                s0=None if s0 is None else s0.clone().requires_grad_())
    names = ["o", "final_state"] + [f"d{n}" for n in "r log_w k v a b".split()] + (["ds0"] if with_state else [])
    got, want = [got[0], got[1], *got[2]], [want[0], want[1], *want[2]]
    assert len(got) == len(want) == len(names)
    for name, x, y in zip(names, got, want):
        assert x.dtype == (torch.float32 if name in ("final_state", "dlog_w", "ds0") else torch.bfloat16), name
        assert torch.isfinite(x).all(), name
        bound = 1e-5 if name == "final_state" else 2e-2
        assert _rel(x, y) < bound, f"{name}: relative error {_rel(x, y):.2e}"


def test_triton_packed_sequences_equal_reference():
    inputs = _inputs(B=1, T=23, H=1, K=8, V=8, seed=5)
    cu = torch.tensor([0, 18, 23])
    _compare(_run(inputs, "triton", cu_seqlens=cu), _run(inputs, "reference", "recurrent", cu_seqlens=cu))


def test_triton_decode_step_updates_state_in_place():
    r, log_w, k, v, a, b = (t.detach() for t in _inputs(B=2, T=3, H=2, K=8, V=8, seed=6))
    ref, tri = torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8)
    address = tri.data_ptr()
    for t in range(3):
        args = (r[:, t], log_w[:, t], k[:, t], v[:, t], a[:, t], b[:, t])
        o_r = generalized_delta_rule_step(*args, ref, backend="reference")
        o_t = generalized_delta_rule_step(*args, tri, backend="triton")
        torch.testing.assert_close(o_t, o_r, **TOL)
    torch.testing.assert_close(tri, ref, **TOL)
    assert tri.data_ptr() == address
