"""RWKV-4 WKV: the reference against a float64 direct evaluation of the formula, and the Triton kernels (under
``TRITON_INTERPRET=1`` on the CPU, see conftest) against the reference: outputs, states and gradients."""

from __future__ import annotations

import pytest
import torch

from hf_recurrent.kernels.wkv4 import empty_state, wkv4, wkv4_step

TOL = dict(atol=2e-5, rtol=1e-5)  # fp32, a few dozen steps: both sides differ by rounding of exp/div (~1e-6)


def _inputs(B=2, T=13, H=1, D=40, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    w = -torch.exp(torch.randn(H, D, generator=g))  # log decay
    u = torch.randn(H, D, generator=g)
    k = 3 * torch.randn(B, T, H, D, generator=g)  # large keys exercise the running maximum
    v = torch.randn(B, T, H, D, generator=g)
    tensors = [w, u, k, v]
    for t in tensors:
        t.requires_grad_(requires_grad)
    return tensors


def _direct(w, u, k, v):
    """o_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (same without v), float64, no stabilisation."""
    w, u, k, v = (x.double() for x in (w, u, k, v))
    T = k.shape[1]
    out = []
    for t in range(T):
        i = torch.arange(t, dtype=torch.float64)
        weights = torch.exp((t - 1 - i)[None, :, None, None] * w + k[:, :t])
        bonus = torch.exp(u + k[:, t])
        out.append(((weights * v[:, :t]).sum(1) + bonus * v[:, t]) / (weights.sum(1) + bonus))
    return torch.stack(out, dim=1)


def test_reference_equals_direct_formula_and_decode_steps():
    w, u, k, v = _inputs()
    o, final = wkv4(w, u, k, v, output_final_state=True, backend="reference")
    torch.testing.assert_close(o.double(), _direct(w, u, k, v), **TOL)
    state = empty_state(2, 1, 40, "cpu")
    steps = torch.stack([wkv4_step(w, u, k[:, t], v[:, t], state, backend="reference") for t in range(13)], 1)
    torch.testing.assert_close(steps, o, atol=0, rtol=0)
    torch.testing.assert_close(state, final, atol=0, rtol=0)


def test_reference_mask_leaves_state_exactly_unchanged():
    w, u, k, v = _inputs()
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[0, :5] = 0
    o, final = wkv4(w, u, k, v, mask=mask, output_final_state=True, backend="reference")
    alone, alone_final = wkv4(w, u, k[:1, 5:], v[:1, 5:], output_final_state=True, backend="reference")
    assert torch.equal(o[0, 5:], alone[0]) and torch.equal(final[0], alone_final[0])
    assert torch.equal(o[0, :5], torch.zeros_like(o[0, :5]))


def test_shapes_are_checked():
    w, u, k, v = _inputs()
    with pytest.raises(ValueError, match=r"w must be \[H, D\]"):
        wkv4(w[:, :3], u, k, v)
    with pytest.raises(ValueError, match="mask"):
        wkv4(w, u, k, v, mask=torch.ones(2, 3))


triton = pytest.importorskip("triton")


@pytest.mark.parametrize("masked,with_state", [(False, False), (True, True)])
def test_triton_forward_and_gradients_equal_reference(masked, with_state):
    w, u, k, v = _inputs(B=2, T=9, H=2, D=40, requires_grad=True, seed=1)
    mask = None
    if masked:
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, :4] = 0
    s0 = None
    if with_state:  # a state carried from an earlier call: run the reference on a prefix
        prefix = _inputs(B=2, T=4, H=2, D=40, seed=2)
        s0 = wkv4(*prefix, output_final_state=True, backend="reference")[1].requires_grad_(True)
    do = torch.randn(2, 9, 2, 40, generator=torch.Generator().manual_seed(3))
    results = {}
    for backend in ("reference", "triton"):
        o, final = wkv4(w, u, k, v, mask=mask, initial_state=s0, output_final_state=True, backend=backend)
        leaves = [w, u, k, v] + ([s0] if s0 is not None else [])
        grads = torch.autograd.grad((o * do).sum(), leaves)
        results[backend] = (o.detach(), final.detach(), grads)
    (o_r, f_r, g_r), (o_t, f_t, g_t) = results["reference"], results["triton"]
    torch.testing.assert_close(o_t, o_r, **TOL)
    torch.testing.assert_close(f_t, f_r, **TOL)  # same steps, so the same gauge p
    for name, a, b in zip("w u k v s0".split(), g_t, g_r):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("masked,with_state", [(False, False), (True, True)])
def test_triton_bf16_inputs(masked, with_state):
    """bfloat16 ``k`` and ``v`` as a bf16 RWKV-4 passes them (``w``, ``u`` and the state float32), outputs and every
    gradient against the float32 reference on the same rounded inputs. The kernels load bf16 and compute in
    float32: the roundings are ``o`` stored in bf16, the incoming ``do`` in bf16 (autograd casts it to ``o``'s
    dtype) and ``dk``, ``dv`` stored in bf16, each ~2^-9 relative (bf16 has 8 significant bits), a few in series:
    2e-2, the bound of the GLA kernel's bf16 test, also for the decay's gradient ``dw`` (float32, only ``do``'s
    rounding enters it). The final state is float32 arithmetic on the same rounded inputs: 1e-5 as in float32."""
    w, u, k, v = _inputs(B=2, T=9, H=2, D=40, seed=7)
    k, v = k.bfloat16(), v.bfloat16()
    mask = None
    if masked:
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, :4] = 0
    s0 = None
    if with_state:  # a state carried from an earlier call
        s0 = wkv4(*_inputs(B=2, T=4, H=2, D=40, seed=8), output_final_state=True, backend="reference")[1]
    do = torch.randn(2, 9, 2, 40, generator=torch.Generator().manual_seed(9))
    results = {}
    for backend, dtype in (("reference", torch.float32), ("triton", torch.bfloat16)):
        leaves = [t.clone().requires_grad_() for t in (w, u, k.to(dtype), v.to(dtype))]
        leaves += [s0.clone().requires_grad_()] if with_state else []
        o, final = wkv4(*leaves[:4], mask=mask, initial_state=leaves[4] if with_state else None,
                        output_final_state=True, backend=backend)
        results[backend] = (o, final, *torch.autograd.grad((o * do).sum(), leaves))
    names = ["o", "final_state", "dw", "du", "dk", "dv", "dinitial_state"]
    assert len(results["triton"]) == len(names) - (not with_state)
    for name, a, e in zip(names, results["triton"], results["reference"]):
        assert a.dtype == (torch.bfloat16 if name in ("o", "dk", "dv") else torch.float32), (name, a.dtype)
        assert torch.isfinite(a).all(), name
        bound = 1e-5 if name == "final_state" else 2e-2
        assert _rel(a, e) < bound, f"{name}: relative error {_rel(a, e):.2e}"


def test_triton_decode_step_updates_state_in_place():
    w, u, k, v = _inputs(B=3, T=3, H=1, D=20, seed=4)
    ref_state, tri_state = empty_state(3, 1, 20, "cpu"), empty_state(3, 1, 20, "cpu")
    address = tri_state.data_ptr()
    for t in range(3):
        o_r = wkv4_step(w, u, k[:, t], v[:, t], ref_state, backend="reference")
        o_t = wkv4_step(w, u, k[:, t], v[:, t], tri_state, backend="triton")
        torch.testing.assert_close(o_t, o_r, **TOL)
    torch.testing.assert_close(tri_state, ref_state, **TOL)
    assert tri_state.data_ptr() == address


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_packed_sequences_equal_separate_runs(backend):
    w, u, k, v = _inputs(B=1, T=15, H=1, D=24, seed=5, requires_grad=True)
    cu = torch.tensor([0, 6, 15])
    o, final = wkv4(w, u, k, v, cu_seqlens=cu, output_final_state=True, backend=backend)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(6))
    grads = torch.autograd.grad((o * do).sum(), [w, u, k, v])
    parts = [wkv4(w, u, k[:, s:e], v[:, s:e], output_final_state=True, backend="reference")
             for s, e in ((0, 6), (6, 15))]
    torch.testing.assert_close(o, torch.cat([p[0] for p in parts], dim=1), **TOL)
    torch.testing.assert_close(final, torch.cat([p[1] for p in parts]), **TOL)
    want = torch.autograd.grad((torch.cat([p[0] for p in parts], dim=1) * do).sum(), [w, u, k, v])
    for name, a, b in zip("w u k v".split(), grads, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)
