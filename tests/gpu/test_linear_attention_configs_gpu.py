"""Every launch setting of the chunked gated-linear-attention kernels, on this GPU's build of Triton.

The output and gradient kernels are tuned over ``triton_chunk._CHUNK_CANDIDATES`` (key/value tiles, warps,
pipeline stages); ``_prune_chunk`` decides which candidates a call shape and dtype may use. Here each candidate is
forced in turn at K = 64, 128 and 256 (V = 128, 2 x 300 tokens: a ragged last chunk), in bf16 and float32, with slow
(GLA-like) and fast decays (which send chunks down the sub-chunk path), and its outputs and every gradient are
compared with the float32 PyTorch reference, and so is the output of an inference call (no gradient, no initial or
final state). Every candidate's error is printed (``-s``); the test fails if a
candidate the prune keeps is wrong. Bounds as in ``test_linear_attention_gpu.py``: bf16 1e-2, float32 2e-3
(``dg`` twice that).

Why: on an H200 with Triton 3.6 the bf16 logits of a converted GLA (4 heads, K = 64) were 0.85 (norm ratio) from
the exact ones with the settings the GPU tests use, while float32 and the CPU interpreter (same tiles) were exact;
forcing each candidate showed 32-wide key tiles at K = 64 give 0.5-0.85, 64-wide ones 4e-3.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.linear_attention import gated_linear_attention
from hf_recurrent.kernels.linear_attention import triton_chunk as tc

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

B, T, H, V = 2, 300, 4, 128
TOL = {torch.bfloat16: 1e-2, torch.float32: 2e-3}
NAMES = ["o", "final_state", "dq", "dk", "dv", "dg", "dh0", "o_inference"]
CHUNK_KERNELS = [tc._fwd_o_kernel, tc._bwd_kernel, tc._bwd_dv_kernel]


def _run(inputs, grads, backend: str, upcast: bool) -> list[torch.Tensor]:
    leaves = [(x.float() if upcast else x).detach().requires_grad_(True) for x in inputs]
    q, k, v, g, h0 = leaves
    o, ht = gated_linear_attention(q, k, v, g, scale=q.shape[-1] ** -0.5, initial_state=h0, output_final_state=True,
                                   backend=backend)
    torch.autograd.backward((o, ht), (grads[0].to(o.dtype), grads[1]))
    return [o, ht] + [x.grad for x in leaves]


@torch.no_grad()
def _inference(q, k, v, g, backend: str) -> torch.Tensor:
    """Output without gradients, initial or final state (what a prefill runs: other kernel specialisations)."""
    return gated_linear_attention(q, k, v, g, scale=q.shape[-1] ** -0.5, backend=backend)[0]


def _errors(got: list[torch.Tensor], ref: list[torch.Tensor]) -> dict[str, float]:
    out = {}
    for name, a, b in zip(NAMES, got, ref):
        out[name] = ((a.float() - b.float()).norm() / b.float().norm()).item()
    return out


@pytest.mark.parametrize("decay_scale", [16.0, 1.0], ids=["slow-decay", "fast-decay"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("K", [64, 128, 256])
def test_every_launch_setting(K: int, dtype: torch.dtype, decay_scale: float, monkeypatch) -> None:
    gen = torch.Generator(device="cuda").manual_seed(K)
    q = torch.randn(B, T, H, K, device="cuda", generator=gen).to(dtype)
    k = (torch.randn(B, T, H, K, device="cuda", generator=gen) * K**-0.5).to(dtype)
    v = torch.randn(B, T, H, V, device="cuda", generator=gen).to(dtype)
    g = F.logsigmoid(torch.randn(B, T, H, K, device="cuda", generator=gen)) / decay_scale
    h0 = torch.randn(B, H, K, V, device="cuda", generator=gen)
    grads = (torch.randn(B, T, H, V, device="cuda", generator=gen).to(dtype),
             torch.randn(B, H, K, V, device="cuda", generator=gen))
    inputs = (q, k, v, g, h0)
    ref = _run(inputs, grads, "reference", upcast=True) + [_inference(q.float(), k.float(), v.float(), g, "reference")]
    monkeypatch.setattr(tc, "autotuning", lambda: True)  # every setting an autotuning run may pick
    kept = tc._prune_chunk(tc._CHUNK_CANDIDATES, {"k": k}, K=K, V=V)
    saved = [(kern.configs, kern.cache) for kern in CHUNK_KERNELS]
    wrong_kept, lines = [], []
    try:
        for cfg in tc._CHUNK_CANDIDATES:
            for kern in CHUNK_KERNELS:
                kern.configs, kern.cache = [cfg], {}
            got = _run(inputs, grads, "triton", upcast=False) + [_inference(q, k, v, g, "triton")]
            errors = _errors(got, ref)
            worst = max(e / (2 if n == "dg" else 1) for n, e in errors.items())
            ok = worst <= TOL[dtype]
            lines.append(f"  {cfg.kwargs} w{cfg.num_warps} s{cfg.num_stages}: worst {worst:.2e} "
                         f"({'ok' if ok else 'WRONG'}{', kept' if cfg in kept else ''}) "
                         + " ".join(f"{n}={e:.1e}" for n, e in errors.items()))
            if cfg in kept and not ok:
                wrong_kept.append(cfg)
    finally:
        for kern, (configs, cache) in zip(CHUNK_KERNELS, saved):
            kern.configs, kern.cache = configs, cache
    print(f"\n[chunk launch settings] {torch.cuda.get_device_name()} K={K} V={V} {dtype} decay/{decay_scale}:")
    print("\n".join(lines))
    assert not wrong_kept, f"settings the prune keeps give wrong results: {wrong_kept}"
