"""GateLoop on a CUDA GPU: the complex-gate op (rotated q/k on the Triton kernel) and the model against the package.

Op: H = 16 heads of 64 channels (rotated keys 128 wide), complex gates with magnitude sigmoid(|z|) in (0.5, 1) and
phases in (-pi, pi]; Triton against the same op on the PyTorch reference backend (float32 inputs), forward and the
gradients of q, k, v, log magnitude and phase. Tolerances on ``|a - b| / |b|``: bf16 1e-2, float32 2e-3 (tf32),
twice that for the log-magnitude and phase gradients (sums of many signed terms).

Model: gateloop-transformer's ``Transformer`` (complex scan in PyTorch) on the GPU against ours on Triton from the
converted weights, float32 logits to 5e-3 relative (tf32 dots through 4 layers).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.linear_attention.complex_gates import complex_gated_linear_attention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

H, D = 16, 64
TOL = {torch.bfloat16: 1e-2, torch.float32: 2e-3}


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("B,T,dtype", [(4, 2048, torch.bfloat16), (4, 2048, torch.float32), (1, 8191, torch.bfloat16)])
def test_complex_gate_op_triton_matches_reference(B, T, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, device="cuda", generator=gen).to(dtype) for _ in range(3))
    z = torch.randn(B, T, H, 2, device="cuda", generator=gen) * 3
    log_m = F.logsigmoid(z.norm(dim=-1))
    phase = torch.atan2(z[..., 1], z[..., 0])
    do = torch.randn(B, T, H, D, device="cuda", generator=gen).to(dtype)

    def run(backend, upcast):
        leaves = [(x.float() if upcast else x).detach().requires_grad_(True) for x in (q, k, v, log_m, phase)]
        o, _, _ = complex_gated_linear_attention(*leaves, scale=D**-0.5, backend=backend)
        o.backward(do.to(o.dtype))
        return [o] + [x.grad for x in leaves]

    names = ["o", "dq", "dk", "dv", "dlog_m", "dphase"]
    exact = run("reference", True)
    errs = {n: _rel(a, b) for n, a, b in zip(names, run("triton", False), exact)}
    # dphase sums, over the rest of the sequence, products of rotated q/k gradients that largely cancel: its rounding
    # error grows with T whatever computes it. Bound it by what the PyTorch reference itself reaches at this dtype.
    own = _rel(run("reference", False)[-1], exact[-1]) if dtype != torch.float32 else 0.0
    print(f"\ngateloop {B}x{T} {dtype}: " + " ".join(f"{n}={e:.1e}" for n, e in errs.items())
          + f" (reference at {dtype}: dphase={own:.1e})")
    for name, err in errs.items():
        tol = TOL[dtype] * (2 if name in ("dlog_m", "dphase") else 1)
        if name == "dphase":
            tol = max(tol, 1.5 * own)
        assert math.isfinite(err) and err <= tol, f"{name}: {err:.2e}"


def test_model_matches_gateloop_transformer(monkeypatch):
    monkeypatch.setenv("HF_RECURRENT_BACKEND", "triton")
    from gateloop_transformer import Transformer

    from hf_recurrent.conversion import ConvertedCheckpoint, build_model
    from hf_recurrent.conversion.gateloop import gateloop_config, gateloop_state_dict

    torch.manual_seed(0)
    package = Transformer(num_tokens=4096, dim=1024, depth=4, gate_loop_heads=H).eval()
    state = package.state_dict()
    ours = build_model(ConvertedCheckpoint(gateloop_config(state), gateloop_state_dict(state))).cuda()
    package = package.cuda()
    ids = torch.randint(0, 4096, (2, 1024), device="cuda")
    with torch.no_grad():
        err = _rel(ours(ids, use_cache=False).logits, package(ids))
    print(f"\ngateloop model vs package: {err:.1e}")
    assert err <= 5e-3
