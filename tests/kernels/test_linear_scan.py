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
