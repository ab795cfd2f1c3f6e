"""Mamba-2 on a CUDA GPU: the kernel at Mamba-2's shapes and decays, and the whole model against transformers.

Kernel: q = C, k = dt * B (K = state size 128), v = x (V = head dim 64), scalar log decay dt * A with dt in
[0.001, 0.1] and A in [1, 16] (mamba-ssm's initialisation ranges: up to -1.6 per step, much stronger than GLA's),
scale 1. Triton against ``reference.chunk_gla`` in float32 from the same rounded inputs; tolerances on
``|a - b| / |b|`` as in ``test_linear_attention_gpu.py``: bf16 1e-2 (8-bit mantissa operands), float32 2e-3 (tf32
dots), twice that for the log-decay gradient (a difference of two large terms).

Model: a 4-layer, 768-wide Mamba-2 with published-size heads; ours on Triton vs transformers' ``Mamba2ForCausalLM``
(its PyTorch SSD path) from the same weights, float32 logits, and
prefill + Triton decode steps against the full forward; 5e-3 (tf32 dots, ~3e-4 each, through 4 layers).
"""

from __future__ import annotations

import math

import pytest
import torch

from hf_recurrent.kernels.linear_attention import gated_linear_attention, reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

H, N, P = 24, 128, 64
TOL = {torch.bfloat16: 1e-2, torch.float32: 2e-3}
NAMES = ["o", "final_state", "dq", "dk", "dv", "dg", "dh0"]


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _ssd_inputs(B, T, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    dt = torch.exp(torch.rand(B, T, H, device="cuda", generator=gen) * math.log(100) + math.log(1e-3))
    A = -torch.linspace(1, 16, H, device="cuda")
    q = rand(B, T, H, N).to(dtype)
    k = (rand(B, T, H, N) * dt[..., None]).to(dtype)
    v = rand(B, T, H, P).to(dtype)
    h0 = rand(B, H, N, P)
    return (q, k, v, dt * A, h0), (rand(B, T, H, P).to(dtype), rand(B, H, N, P))


def _run(fn, inputs, grads_out, upcast):
    leaves = [(x.float() if upcast else x).detach().requires_grad_(True) for x in inputs]
    q, k, v, g, h0 = leaves
    o, ht = fn(q, k, v, g, 1.0, h0, True, None)
    torch.autograd.backward((o, ht), (grads_out[0].to(o.dtype), grads_out[1]))
    return [o, ht] + [x.grad for x in leaves]


def _triton(q, k, v, g, scale, h0, final, cu):
    return gated_linear_attention(q, k, v, g, scale=scale, initial_state=h0, output_final_state=final, backend="triton")


@pytest.mark.parametrize("B,T,dtype", [(4, 2048, torch.bfloat16), (4, 2048, torch.float32), (1, 8191, torch.bfloat16)])
def test_ssd_kernel_matches_reference(B, T, dtype):
    inputs, grads_out = _ssd_inputs(B, T, dtype)
    got = _run(_triton, inputs, grads_out, upcast=False)
    want = _run(reference.chunk_gla, inputs, grads_out, upcast=True)
    errs = {name: _rel(a, b) for name, a, b in zip(NAMES, got, want)}
    print(f"\nmamba2 {B}x{T} {dtype}: " + " ".join(f"{n}={e:.1e}" for n, e in errs.items()))
    for name, err in errs.items():
        assert math.isfinite(err) and err <= TOL[dtype] * (2 if name == "dg" else 1), f"{name}: {err:.2e}"


def _models():
    from transformers import Mamba2Config, Mamba2ForCausalLM

    from hf_recurrent.conversion import ConvertedCheckpoint, build_model
    from hf_recurrent.conversion.mamba2 import mamba2_config_from_hf, mamba2_state_dict

    torch.manual_seed(0)
    hc = Mamba2Config(vocab_size=1024, hidden_size=768, num_hidden_layers=4, state_size=N, head_dim=P,
                      num_heads=24, n_groups=2, expand=2, chunk_size=256)
    hf = Mamba2ForCausalLM(hc).eval()
    config = mamba2_config_from_hf(hc.to_dict())
    ours = build_model(ConvertedCheckpoint(config, mamba2_state_dict(hf.state_dict(), config)))
    return hf.cuda(), ours.cuda()


def test_model_matches_transformers_and_decode_matches_prefill(monkeypatch):
    monkeypatch.setenv("HF_RECURRENT_BACKEND", "triton")
    from transformers import DynamicCache

    hf, ours = _models()
    ids = torch.randint(0, 1024, (2, 1000), device="cuda")
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids, use_cache=False).logits
        err = _rel(got, want)
        cache = DynamicCache(config=ours.config)
        steps = [ours(ids[:, :990], cache=cache, use_cache=True).logits[:, -1:]]
        steps += [ours(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(990, 1000)]
        err_decode = _rel(torch.cat(steps, 1), got[:, 989:])
    print(f"\nmamba2 model vs transformers: {err:.1e}; decode vs prefill: {err_decode:.1e}")
    assert err <= 5e-3 and err_decode <= 5e-3  # tf32 dots (~3e-4 each) through 4 layers
