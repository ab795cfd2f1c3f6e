"""Gated linear attention on a CUDA GPU at training sizes: Triton kernels against the PyTorch chunked reference.

16384 tokens (8 x 2048 and 1 x 16384, and packed sequences), 16 heads, K = V = 128. The oracle is
``reference.chunk_gla`` in float32 on the GPU from the same (rounded) inputs. Tolerances on ``|a - b| / |b|``:
bf16 inputs 1e-2 (operands of every matrix product rounded to bf16, 8 mantissa bits: ~4e-3 per product), float32
inputs 2e-3 (Triton's float32 dots run in tf32, 11 bits: ~3e-4 per product, a few products chained). The log-decay
gradient ``dg = revcumsum(q dq - k dk)`` subtracts two large terms, so it gets twice those bounds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.linear_attention import gated_linear_attention, gated_linear_attention_step, reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

H, D = 16, 128
TOL = {torch.bfloat16: 1e-2, torch.float32: 2e-3}
NAMES = ["o", "final_state", "dq", "dk", "dv", "dg", "dh0"]


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _case(B, T, dtype, decay, cu_seqlens=None, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    n = B if cu_seqlens is None else cu_seqlens.numel() - 1
    q = torch.randn(B, T, H, D, device="cuda", generator=gen).to(dtype)
    k = torch.randn(B, T, H, D, device="cuda", generator=gen).to(dtype)
    v = torch.randn(B, T, H, D, device="cuda", generator=gen).to(dtype)
    gshape = (B, T, H, D) if decay == "vector" else (B, T, H)
    g = F.logsigmoid(torch.randn(gshape, device="cuda", generator=gen)) / 16  # GLA's gate, slow decay
    h0 = torch.randn(n, H, D, D, device="cuda", generator=gen)
    do = torch.randn(B, T, H, D, device="cuda", generator=gen).to(dtype)
    dht = torch.randn(n, H, D, D, device="cuda", generator=gen)
    return (q, k, v, g, h0), (do, dht)


def _run(fn, inputs, grads_out, cu_seqlens, upcast):
    leaves = [(x.float() if upcast else x).detach().requires_grad_(True) for x in inputs]
    q, k, v, g, h0 = leaves
    o, ht = fn(q, k, v, g, D**-0.5, h0, True, cu_seqlens)
    do, dht = grads_out
    torch.autograd.backward((o, ht), (do.to(o.dtype), dht))
    return [o, ht] + [x.grad for x in leaves]


def _triton(q, k, v, g, scale, h0, final, cu):
    return gated_linear_attention(
        q, k, v, g, scale=scale, initial_state=h0, output_final_state=final, cu_seqlens=cu, backend="triton"
    )


@pytest.mark.parametrize(
    "B,T,dtype,decay,packed",
    [
        (8, 2048, torch.bfloat16, "vector", False),
        (1, 16384, torch.bfloat16, "vector", False),
        (8, 2048, torch.float32, "vector", False),
        (1, 16384, torch.float32, "vector", False),
        (8, 2048, torch.bfloat16, "scalar", False),
        (1, 16384, torch.bfloat16, "vector", True),
    ],
)
def test_chunk_gla_gpu(B, T, dtype, decay, packed):
    cu = torch.tensor([0, 1000, 1063, 5000, 16384], device="cuda") if packed else None
    inputs, grads_out = _case(B, T, dtype, decay, cu)
    got = _run(_triton, inputs, grads_out, cu, upcast=False)
    want = _run(reference.chunk_gla, inputs, grads_out, cu, upcast=True)
    errs = {name: _rel(a, b) for name, a, b in zip(NAMES, got, want)}
    print(f"\n{B}x{T} {dtype} {decay} packed={packed}: " + " ".join(f"{n}={e:.1e}" for n, e in errs.items()))
    for name, a in zip(NAMES, got):
        assert torch.isfinite(a).all(), name
    for name, err in errs.items():
        tol = TOL[dtype] * (2 if name == "dg" else 1)
        assert err <= tol, f"{name}: {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("decay", ["vector", "scalar", None])
def test_step_gpu_and_cuda_graph(decay):
    """The decode step against the reference, then replayed in a CUDA graph (static addresses, no host sync)."""
    B = 4
    q, k, v = (torch.randn(B, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    g = {"vector": F.logsigmoid(torch.randn(B, H, D, device="cuda")), "scalar": F.logsigmoid(torch.randn(B, H, device="cuda"))}.get(decay)
    state = torch.randn(B, H, D, D, device="cuda")
    s_ref = state.clone()
    o_ref = reference.recurrent_gla_step(q, k, v, g, s_ref, D**-0.5)
    o = gated_linear_attention_step(q, k, v, g, state, backend="triton")
    assert _rel(o, o_ref) < 1e-2 and _rel(state, s_ref) < 1e-5
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        o_g = gated_linear_attention_step(q, k, v, g, state, backend="triton")
    graph.replay()
    o_ref = reference.recurrent_gla_step(q, k, v, g, s_ref, D**-0.5)
    torch.cuda.synchronize()
    assert _rel(o_g, o_ref) < 1e-2 and _rel(state, s_ref) < 1e-5
