"""The Triton linear-attention kernels at the inputs Mamba-2, RetNet and GateLoop give them (CPU interpreter).

``TRITON_INTERPRET=1`` (set in this folder's ``conftest.py``) runs the kernels on the CPU. Tiny shapes, each the
model's own kind of input: Mamba-2 (scale 1, key width = state size != value width, strong data-dependent scalar
decays ``dt * A`` down to -16 per step), RetNet (fixed decays ``log(1 - 2^(-5-h))``, rotated q/k) and GateLoop
(the complex-gate op: q/k rotated by the accumulated phase to twice the width, log-magnitude decay). Outputs and
every input gradient against the PyTorch reference backend, relative error ``|a - b| / |b|`` <= 1e-4 (float32 on
both sides; observed ~1e-6).
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hf_recurrent.kernels.linear_attention import gated_linear_attention  # noqa: E402
from hf_recurrent.kernels.linear_attention.complex_gates import complex_gated_linear_attention  # noqa: E402
from hf_recurrent.modeling.retnet.modeling_retnet import retention_log_decay, rotate  # noqa: E402

pytest.importorskip("hf_recurrent.kernels.linear_attention.triton")

RTOL = 1e-4


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _compare(fn, leaves: list[torch.Tensor], names: list[str]) -> None:
    results = {}
    for backend in ("triton", "reference"):
        xs = [x.clone().requires_grad_(x.is_floating_point()) for x in leaves]
        outs = fn(*xs, backend=backend)
        gen = torch.Generator().manual_seed(7)
        loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
        results[backend] = list(outs) + list(torch.autograd.grad(loss, [x for x in xs if x.requires_grad]))
    for name, a, b in zip(["o", "final_state", *names], results["triton"], results["reference"]):
        assert _rel(a, b) <= RTOL, f"{name}: {_rel(a, b):.2e}"


def test_mamba2_inputs():
    B, T, H, N, P = 2, 75, 2, 16, 8
    gen = torch.Generator().manual_seed(0)
    dt = torch.exp(torch.rand(B, T, H, generator=gen) * math.log(1000) + math.log(1e-3))  # up to 1
    A = -torch.tensor([1.0, 16.0])
    q, b = torch.randn(B, T, H, N, generator=gen), torch.randn(B, T, H, N, generator=gen)
    x, h0 = torch.randn(B, T, H, P, generator=gen), torch.randn(B, H, N, P, generator=gen)

    def fn(q, k, v, g, h0, backend):
        return gated_linear_attention(q, k, v, g, scale=1.0, initial_state=h0, output_final_state=True, backend=backend)

    _compare(fn, [q, b * dt[..., None], x, dt * A, h0], ["dq", "dk", "dv", "dlog_decay", "dh0"])


def test_retnet_inputs():
    B, T, H, K, V = 1, 70, 3, 8, 12
    gen = torch.Generator().manual_seed(1)
    pos = torch.arange(T)[None]
    q = rotate(torch.randn(B, T, H, K, generator=gen), pos, 10000.0)
    k = rotate(torch.randn(B, T, H, K, generator=gen), pos, 10000.0)
    v = torch.randn(B, T, H, V, generator=gen)
    g = retention_log_decay(H).expand(B, T, H).contiguous()

    def fn(q, k, v, backend):
        return gated_linear_attention(q, k, v, g, output_final_state=True, backend=backend)

    _compare(fn, [q, k, v], ["dq", "dk", "dv"])


def test_gateloop_complex_gate_inputs():
    B, T, H, D = 2, 67, 2, 4
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(B, T, H, D, generator=gen) for _ in range(3))
    z = torch.randn(B, T, H, 2, generator=gen) * 3
    log_m, phase = F.logsigmoid(z.norm(dim=-1)), torch.atan2(z[..., 1], z[..., 0])
    h0, p0 = torch.randn(B, H, 2 * D, D, generator=gen), torch.rand(B, H, generator=gen) * 6

    def fn(q, k, v, log_m, phase, h0, p0, backend):
        o, state, _ = complex_gated_linear_attention(
            q, k, v, log_m, phase, scale=1.0, initial_state=h0, initial_phase=p0, output_final_state=True,
            backend=backend,
        )
        return o, state

    _compare(fn, [q, k, v, log_m, phase, h0, p0], ["dq", "dk", "dv", "dlog_magnitude", "dphase", "dh0", "dphase0"])
