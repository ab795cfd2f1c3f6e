"""Element-wise linear scan: Triton (interpreted on the CPU) against the PyTorch reference, and the reference
against minGRU-pytorch's log-space Heinsen scan. float32; tolerances as for the other kernel families."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hf_recurrent.kernels.linear_scan import linear_scan, linear_scan_step  # noqa: E402

pytest.importorskip("hf_recurrent.kernels.linear_scan.triton")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("B,T,H,D", [(2, 7, 3, 5), (1, 33, 2, 700)], ids=["small", "channels-over-one-block"])
def test_triton_matches_reference_forward_and_gradients(B, T, H, D):
    gen = torch.Generator().manual_seed(0)
    log_a = -torch.rand(B, T, H, D, generator=gen) * 2
    log_a[0, :3] = 0.0  # padding-like positions: decay 1
    b = torch.randn(B, T, H, D, generator=gen)
    h0 = torch.randn(B, H, D, generator=gen)
    results = []
    for backend in ("reference", "triton"):
        args = [t.clone().requires_grad_() for t in (log_a, b, h0)]
        h, final = linear_scan(args[0], args[1], initial_state=args[2], output_final_state=True, backend=backend)
        loss = (h * torch.linspace(-1, 1, h.numel()).view_as(h)).sum() + 0.5 * final.sum()
        results.append((h, final, *torch.autograd.grad(loss, args)))
    for tri, ref in zip(results[1], results[0]):
        assert _rel(tri, ref) < 1e-5


def test_triton_bf16_inputs():
    """bfloat16 ``log_a`` and ``b``, outputs and every gradient against the float32 reference on the same rounded
    inputs. The kernels load bf16 and compute in float32; the roundings are ``h`` stored in bf16, the incoming ``dh``
    in bf16 (autograd casts it to ``h``'s dtype), ``h_{t-1}`` read back from the bf16 output by the backward (for
    ``dlog_a``) and each gradient stored in bf16, each ~2^-9 relative (bf16 has 8 significant bits), a few in series:
    2e-2, the bound of the GLA kernel's bf16 test. The final state is float32 arithmetic on the same rounded inputs:
    1e-5 as in float32 (a state rounded to bf16 would fail)."""
    gen = torch.Generator().manual_seed(3)
    B, T, H, D = 2, 7, 3, 5
    log_a = (-torch.rand(B, T, H, D, generator=gen) * 2).bfloat16()
    log_a[0, :3] = 0.0  # padding-like positions: decay 1
    b = torch.randn(B, T, H, D, generator=gen).bfloat16()
    h0 = torch.randn(B, H, D, generator=gen)
    results = []
    for backend, dtype in (("reference", torch.float32), ("triton", torch.bfloat16)):
        args = [t.clone().requires_grad_() for t in (log_a.to(dtype), b.to(dtype), h0)]  # the state stays float32
        h, final = linear_scan(args[0], args[1], initial_state=args[2], output_final_state=True, backend=backend)
        loss = (h * torch.linspace(-1, 1, h.numel()).view_as(h)).sum() + 0.5 * final.sum()
        results.append((h, final, *torch.autograd.grad(loss, args)))
    ref, tri = results
    for name, a, e in zip(["h", "final_state", "dlog_a", "db", "dinitial_state"], tri, ref):
        assert a.dtype == (torch.float32 if name in ("final_state", "dinitial_state") else torch.bfloat16), name
        assert torch.isfinite(a).all(), name
        bound = 1e-5 if name == "final_state" else 2e-2
        assert _rel(a, e) < bound, f"{name}: relative error {_rel(a, e):.2e}"


def test_step_and_zero_decay_padding_keep_the_state():
    gen = torch.Generator().manual_seed(1)
    log_a, b = -torch.rand(2, 5, 1, 4, generator=gen), torch.randn(2, 5, 1, 4, generator=gen)
    full, final = linear_scan(log_a, b, output_final_state=True)
    state = torch.zeros(2, 1, 4)
    for t in range(5):
        state = linear_scan_step(log_a[:, t], b[:, t], state)
        torch.testing.assert_close(state, full[:, t], atol=1e-6, rtol=1e-6)
    assert torch.equal(linear_scan_step(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), final), final)


def test_reference_matches_mingru_heinsen_log_space_scan():
    mingru = pytest.importorskip("minGRU_pytorch.minGRU")
    gen = torch.Generator().manual_seed(2)
    gate, hidden = torch.randn(2, 40, 6, generator=gen), torch.randn(2, 40, 6, generator=gen)
    log_values = -F.softplus(-gate) + mingru.log_g(hidden)
    expected = mingru.heinsen_associative_scan_log(-F.softplus(gate), log_values)
    b = torch.sigmoid(gate) * mingru.g(hidden)
    h, _ = linear_scan((-F.softplus(gate))[:, :, None], b[:, :, None], backend="reference")
    torch.testing.assert_close(h[:, :, 0], expected, atol=1e-6, rtol=1e-5)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="log_a and b"):
        linear_scan(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5))
    with pytest.raises(ValueError, match="initial_state"):
        linear_scan(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), initial_state=torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="float32 state"):
        linear_scan_step(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), torch.zeros(1, 3, 4, dtype=torch.float64))
