"""RetNet on a CUDA GPU: the kernel at the published 1.3B head sizes, and the whole model against fla's RetNet.

Kernel: H = 8, K = 256, V = 512 (fla-hub/retnet-1.3B-100B), fixed log decays ``log(1 - 2^(-5-h))``, scale
``K^-1/2``; Triton against ``reference.chunk_gla`` in float32 from the same rounded inputs, forward and every
gradient. Tolerances on ``|a - b| / |b|`` as in ``test_linear_attention_gpu.py``: bf16 1e-2, float32 2e-3 (tf32).

Model: fla's ``RetNetForCausalLM`` in ``fused_recurrent`` and ``parallel`` modes (fla's ``chunk`` mode goes through
``chunk_simple_gla``, which refuses to run on Hopper with Triton 3.6) against ours on Triton from the converted
weights: float32 logits to 5e-3 relative (tf32 dots through 4 layers), and our prefill + decode steps against our
full forward.
"""

from __future__ import annotations

import pytest
import torch

from hf_recurrent.kernels.linear_attention import gated_linear_attention, reference
from hf_recurrent.modeling.retnet.modeling_retnet import retention_log_decay

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

H, K, V = 8, 256, 512
TOL = {torch.bfloat16: 1e-2, torch.float32: 2e-3}
NAMES = ["o", "final_state", "dq", "dk", "dv", "dh0"]


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("B,T,dtype", [(2, 2048, torch.bfloat16), (2, 2048, torch.float32), (1, 4099, torch.bfloat16)])
def test_retention_kernel_matches_reference(B, T, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(B, T, H, K, device="cuda", generator=gen).to(dtype) for _ in range(2))
    v = torch.randn(B, T, H, V, device="cuda", generator=gen).to(dtype)
    h0 = torch.randn(B, H, K, V, device="cuda", generator=gen)
    do = torch.randn(B, T, H, V, device="cuda", generator=gen).to(dtype)
    dht = torch.randn(B, H, K, V, device="cuda", generator=gen)
    g = retention_log_decay(H, "cuda").expand(B, T, H)

    def run(fn, upcast):
        leaves = [(x.float() if upcast else x).detach().requires_grad_(True) for x in (q, k, v, h0)]
        o, ht = fn(*leaves[:3], g, K**-0.5, leaves[3], True, None)
        torch.autograd.backward((o, ht), (do.to(o.dtype), dht))
        return [o, ht] + [x.grad for x in leaves]

    def triton(q, k, v, g, scale, h0, final, cu):
        return gated_linear_attention(
            q, k, v, g, scale=scale, initial_state=h0, output_final_state=final, backend="triton"
        )

    errs = {n: _rel(a, b) for n, a, b in zip(NAMES, run(triton, False), run(reference.chunk_gla, True))}
    print(f"\nretnet {B}x{T} {dtype}: " + " ".join(f"{n}={e:.1e}" for n, e in errs.items()))
    for name, err in errs.items():
        assert err <= TOL[dtype], f"{name}: {err:.2e}"


@pytest.mark.parametrize("mode", ["fused_recurrent", "parallel"])
def test_model_matches_fla_retnet(mode, monkeypatch):
    monkeypatch.setenv("HF_RECURRENT_BACKEND", "triton")
    from fla.models import RetNetConfig, RetNetForCausalLM
    from transformers import DynamicCache

    from hf_recurrent.conversion import ConvertedCheckpoint, build_model
    from hf_recurrent.conversion.fla_gla import gla_state_dict_from_fla
    from hf_recurrent.conversion.fla_retnet import retnet_config_from_fla

    torch.manual_seed(0)
    fla_config = RetNetConfig(vocab_size=4096, hidden_size=1024, num_hidden_layers=4, num_heads=4, attn_mode=mode)
    fla = RetNetForCausalLM(fla_config).cuda().eval()
    config = retnet_config_from_fla(fla_config.to_dict())
    ours = build_model(ConvertedCheckpoint(config, gla_state_dict_from_fla(fla.state_dict(), config))).cuda()
    ids = torch.randint(0, 4096, (2, 1000), device="cuda")
    with torch.no_grad():
        want = fla(input_ids=ids, use_cache=False).logits.float()
        got = ours(ids, use_cache=False).logits
        cache = DynamicCache(config=ours.config)
        steps = [ours(ids[:, :990], cache=cache, use_cache=True).logits[:, -1:]]
        steps += [ours(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(990, 1000)]
    err, err_decode = _rel(got, want), _rel(torch.cat(steps, 1), got[:, 989:])
    print(f"\nretnet vs fla ({mode}): {err:.1e}; decode vs prefill: {err_decode:.1e}")
    assert err <= 5e-3 and err_decode <= 5e-3
