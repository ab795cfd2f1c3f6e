"""RWKV kernels and models on a CUDA GPU at real sizes: Triton against the PyTorch references (and fla's rwkv7).

Oracles: the float32 PyTorch references on the GPU, fed the same (rounded) inputs. Tolerances on
``|a - b| / |b|``: float32 inputs 1e-4 (our Triton kernels use no tensor-core dots: every product and sum is
float32, only the order of summation differs over T = 2048 steps); bf16 inputs 1e-2 (the outputs and input
gradients are stored in bf16, 8 mantissa bits: ~4e-3). fla's chunked ``chunk_rwkv7`` runs its matrix products in
tf32 (11 bits): 5e-3 against it in float32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.delta_rule import generalized_delta_rule, generalized_delta_rule_step
from hf_recurrent.kernels.wkv4 import empty_state, wkv4, wkv4_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _delta_inputs(B, T, H, K, V, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    kk = F.normalize(rnd(B, T, H, K), dim=-1)
    gate = torch.sigmoid(rnd(B, T, H, K))
    log_w = -0.6065 * torch.sigmoid(rnd(B, T, H, K))  # RWKV-7's range of log decays
    inputs = [rnd(B, T, H, K).to(dtype), log_w, rnd(B, T, H, K).to(dtype), rnd(B, T, H, V).to(dtype),
              (-kk).to(dtype), (kk * gate).to(dtype)]
    return inputs, rnd(B, H, K, V), rnd(B, T, H, V).to(dtype), rnd(B, H, K, V)


def _delta_run(inputs, h0, do, dht, upcast, **kwargs):
    leaves = [(x.float() if upcast else x).detach().requires_grad_(True) for x in inputs + [h0]]
    o, ht = generalized_delta_rule(*leaves[:6], initial_state=leaves[6], output_final_state=True, **kwargs)
    torch.autograd.backward((o, ht), (do.to(o.dtype), dht))
    return [o, ht] + [x.grad for x in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("B,T,H,D", [(4, 2048, 32, 64), (1, 1000, 4, 128)])
def test_delta_rule_triton_equals_reference(dtype, B, T, H, D):
    inputs, h0, do, dht = _delta_inputs(B, T, H, D, D, dtype)
    ours = _delta_run(inputs, h0, do, dht, upcast=False, backend="triton")
    ref = _delta_run(inputs, h0, do, dht, upcast=True, backend="reference", mode="chunk")
    for name, a, b in zip(["o", "final", "dr", "dlog_w", "dk", "dv", "da", "db", "dh0"], ours, ref):
        assert _rel(a, b) < TOL[dtype], (name, _rel(a, b))


def test_delta_rule_triton_equals_fla_chunk_rwkv7():
    rwkv7_ops = pytest.importorskip("fla.ops.rwkv7")
    inputs, h0, do, dht = _delta_inputs(2, 2048, 16, 64, 64, torch.float32, seed=1)
    ours = _delta_run(inputs, h0, do, dht, upcast=False, backend="triton")
    leaves = [x.detach().requires_grad_(True) for x in inputs + [h0]]
    o, ht = rwkv7_ops.chunk_rwkv7(*leaves[:6], scale=1.0, initial_state=leaves[6], output_final_state=True)
    torch.autograd.backward((o, ht), (do, dht))
    for name, a, b in zip(["o", "final", "dr", "dlog_w", "dk", "dv", "da", "db", "dh0"], ours,
                          [o, ht] + [x.grad for x in leaves]):
        # dlog_w = e^{log w} rowsum(M_{t-1} * dM) sums terms of both signs: twice the bound
        assert _rel(a, b) < (1e-2 if name == "dlog_w" else 5e-3), (name, _rel(a, b))


def test_delta_rule_decode_step_equals_reference():
    inputs, h0, _, _ = _delta_inputs(16, 4, 32, 64, 64, torch.bfloat16, seed=2)
    ref, tri = h0.clone(), h0.clone()
    for t in range(4):
        args = [x[:, t] for x in inputs]
        o_t = generalized_delta_rule_step(*args, tri, backend="triton")
        o_r = generalized_delta_rule_step(*(x.float() for x in args), ref, backend="reference")
        assert _rel(o_t, o_r) < TOL[torch.bfloat16]
    assert _rel(tri, ref) < 1e-5


def _wkv4_inputs(B, T, C, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    w, u = -torch.exp(rnd(1, C) - 1), rnd(1, C)
    k, v = (3 * rnd(B, T, 1, C)).to(dtype), rnd(B, T, 1, C).to(dtype)
    return [w, u, k, v], rnd(B, T, 1, C).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_wkv4_triton_equals_reference(dtype):
    B, T, C = 4, 1024, 2048
    inputs, do = _wkv4_inputs(B, T, C, dtype)
    mask = torch.ones(B, T, dtype=torch.long, device="cuda")
    mask[1, :100] = 0
    results = []
    for backend, upcast in (("triton", False), ("reference", True)):
        leaves = [(x.float() if upcast else x).detach().requires_grad_(True) for x in inputs]
        o, final = wkv4(*leaves, mask=mask, output_final_state=True, backend=backend)
        o.backward(do.to(o.dtype))
        results.append([o, final] + [x.grad for x in leaves])
    for name, a, b in zip(["o", "final", "dw", "du", "dk", "dv"], *results):
        assert _rel(a, b) < TOL[dtype], (name, _rel(a, b))


def test_wkv4_decode_step_equals_reference():
    (w, u, k, v), _ = _wkv4_inputs(16, 5, 2048, torch.bfloat16, seed=3)
    ref, tri = empty_state(16, 1, 2048, "cuda"), empty_state(16, 1, 2048, "cuda")
    for t in range(5):
        o_t = wkv4_step(w, u, k[:, t], v[:, t], tri, backend="triton")
        o_r = wkv4_step(w, u, k[:, t].float(), v[:, t].float(), ref, backend="reference")
        assert _rel(o_t, o_r) < TOL[torch.bfloat16]


@pytest.mark.parametrize("arch", ["rwkv4", "rwkv7"])
def test_model_on_gpu_matches_cpu_and_decode_matches_prefill(arch):
    from transformers import DynamicCache

    from hf_recurrent.modeling.registry import ARCHITECTURES

    spec = ARCHITECTURES[arch]
    torch.manual_seed(0)
    config = spec.config_class(vocab_size=512, hidden_size=256, num_hidden_layers=4,
                               **({"head_size": 64} if arch == "rwkv7" else {}))
    cpu = spec.causal_lm_class(config).eval()
    gpu = spec.causal_lm_class(config).cuda().eval()
    gpu.load_state_dict(cpu.state_dict())
    ids = torch.randint(0, 512, (3, 200))
    with torch.no_grad():
        want = cpu(ids).logits
        full = gpu(ids.cuda()).logits
        assert _rel(full.cpu(), want) < 1e-4
        cache = DynamicCache(config=gpu.config)
        pieces = [gpu(ids[:, :150].cuda(), cache=cache, use_cache=True).logits]
        pieces += [gpu(ids[:, t : t + 1].cuda(), cache=cache, use_cache=True).logits for t in range(150, 200)]
        assert _rel(torch.cat(pieces, 1), full) < 1e-4


def test_packed_sequences_triton_equal_reference():
    cu = torch.tensor([0, 700, 1500, 4096], device="cuda")
    inputs, h0, do, dht = _delta_inputs(1, 4096, 8, 64, 64, torch.float32, seed=4)
    h0, dht = h0.expand(3, -1, -1, -1).contiguous(), dht.expand(3, -1, -1, -1).contiguous()
    ours = _delta_run(inputs, h0, do, dht, upcast=False, backend="triton", cu_seqlens=cu)
    ref = _delta_run(inputs, h0, do, dht, upcast=True, backend="reference", cu_seqlens=cu)
    for name, a, b in zip(["o", "final", "dr", "dlog_w", "dk", "dv", "da", "db", "dh0"], ours, ref):
        assert _rel(a, b) < TOL[torch.float32], ("delta rule", name, _rel(a, b))
    wkv_inputs, wkv_do = _wkv4_inputs(1, 4096, 1024, torch.float32, seed=5)
    results = []
    for backend in ("triton", "reference"):
        leaves = [x.detach().requires_grad_(True) for x in wkv_inputs]
        o, final = wkv4(*leaves, cu_seqlens=cu, output_final_state=True, backend=backend)
        o.backward(wkv_do)
        results.append([o, final] + [x.grad for x in leaves])
    for name, a, b in zip(["o", "final", "dw", "du", "dk", "dv"], *results):
        assert _rel(a, b) < TOL[torch.float32], ("wkv4", name, _rel(a, b))
