"""Every launch setting of the chunked gated-linear-attention kernels, on this GPU's build of Triton.

The output and gradient kernels are tuned over ``triton_chunk._CHUNK_CANDIDATES`` (key/value tiles, warps,
pipeline stages); ``_prune_chunk`` decides which candidates a call may use, by shape, dtype and whether the forward
stores ``A`` for a backward. Here each candidate is forced in turn at the head shapes of the architectures (K, V =
32/64, 64/128 as the GLA tests, 128/64 as Mamba-2, 128/128, 256/512 as RetNet), 2 x 300 tokens (a ragged last
chunk), with slow (GLA-like) and fast vector decays (fast ones send chunks down the sub-chunk path) and a scalar
decay, and compared with the float32 PyTorch reference: a training call (output, final state, every gradient) and
an inference call (no gradient, no states: another specialisation of the output kernel). bf16: every candidate,
each one's errors printed (``-s``); float32: the candidates the prune keeps. Fails if the prune keeps a candidate
that is wrong for that call. Bounds as in ``test_linear_attention_gpu.py``: bf16 1e-2, float32 2e-3 (``dg`` twice).

Why: on an H200 with Triton 3.6 the bf16 logits of a converted GLA (K = 64) were 0.85 (norm ratio) from the exact
ones; forcing each candidate showed every 4-warp build of the inference specialisation wrong in bf16 (0.25-0.87)
at K 64-256, while 8 warps, the training specialisation, float32 and the CPU interpreter were right.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.linear_attention import gated_linear_attention
from hf_recurrent.kernels.linear_attention import triton_chunk as tc

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

B, T, H = 2, 300, 4
TOL = {torch.bfloat16: 1e-2, torch.float32: 2e-3}
TRAIN_NAMES = ["o", "final_state", "dq", "dk", "dv", "dg", "dh0"]
CHUNK_KERNELS = [tc._fwd_o_kernel, tc._bwd_kernel, tc._bwd_dv_kernel]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _train(inputs, grads, backend: str, upcast: bool) -> list[torch.Tensor]:
    leaves = [(x.float() if upcast else x).detach().requires_grad_(True) for x in inputs]
    q, k, v, g, h0 = leaves
    o, ht = gated_linear_attention(q, k, v, g, scale=q.shape[-1] ** -0.5, initial_state=h0, output_final_state=True,
                                   backend=backend)
    torch.autograd.backward((o, ht), (grads[0].to(o.dtype), grads[1]))
    return [o, ht] + [x.grad for x in leaves]


@torch.no_grad()
def _inference(inputs, backend: str, upcast: bool) -> torch.Tensor:
    q, k, v, g, _ = ((x.float() if upcast else x) for x in inputs)
    return gated_linear_attention(q, k, v, g, scale=q.shape[-1] ** -0.5, backend=backend)[0]


def _case(K: int, V: int, dtype: torch.dtype, decay: str):
    gen = torch.Generator(device="cuda").manual_seed(K + V)
    q = torch.randn(B, T, H, K, device="cuda", generator=gen).to(dtype)
    k = (torch.randn(B, T, H, K, device="cuda", generator=gen) * K**-0.5).to(dtype)
    v = torch.randn(B, T, H, V, device="cuda", generator=gen).to(dtype)
    gshape = (B, T, H) if decay == "scalar" else (B, T, H, K)
    g = F.logsigmoid(torch.randn(gshape, device="cuda", generator=gen)) / (1.0 if decay == "vector-fast" else 16.0)
    h0 = torch.randn(B, H, K, V, device="cuda", generator=gen)
    grads = (torch.randn(B, T, H, V, device="cuda", generator=gen).to(dtype),
             torch.randn(B, H, K, V, device="cuda", generator=gen))
    return (q, k, v, g, h0), grads


@pytest.mark.parametrize("decay", ["vector-slow", "vector-fast", "scalar"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("K,V", [(32, 64), (64, 128), (128, 64), (128, 128), (256, 512)], ids=lambda x: str(x))
def test_every_launch_setting(K: int, V: int, dtype: torch.dtype, decay: str, monkeypatch) -> None:
    inputs, grads = _case(K, V, dtype, decay)
    ref_train = _train(inputs, grads, "reference", upcast=True)
    ref_inference = _inference(inputs, "reference", upcast=True)
    monkeypatch.setattr(tc, "autotuning", lambda: True)  # every setting an autotuning run may pick
    kept_train = tc._prune_chunk(tc._CHUNK_CANDIDATES, {"k": inputs[1]}, K=K, V=V, STORE_A=True)
    kept_inference = tc._prune_chunk(tc._CHUNK_CANDIDATES, {"k": inputs[1]}, K=K, V=V, STORE_A=False)
    tried = tc._CHUNK_CANDIDATES if dtype == torch.bfloat16 else [
        c for c in tc._CHUNK_CANDIDATES if c in kept_train or c in kept_inference]
    saved = [(kern.configs, kern.cache) for kern in CHUNK_KERNELS]
    wrong_kept, lines = [], []
    try:
        for cfg in tried:
            for kern in CHUNK_KERNELS:
                kern.configs, kern.cache = [cfg], {}
            train = {n: _rel(a, b) for n, a, b in zip(TRAIN_NAMES, _train(inputs, grads, "triton", False), ref_train)}
            inference = _rel(_inference(inputs, "triton", upcast=False), ref_inference)
            train_ok = max(e / (2 if n == "dg" else 1) for n, e in train.items()) <= TOL[dtype]
            inference_ok = inference <= TOL[dtype]
            lines.append(f"  {cfg.kwargs} w{cfg.num_warps} s{cfg.num_stages}: "
                         f"train {'ok' if train_ok else 'WRONG'}{' (kept)' if cfg in kept_train else ''}, "
                         f"inference {inference:.1e} {'ok' if inference_ok else 'WRONG'}"
                         f"{' (kept)' if cfg in kept_inference else ''}; "
                         + " ".join(f"{n}={e:.1e}" for n, e in train.items()))
            if (cfg in kept_train and not train_ok) or (cfg in kept_inference and not inference_ok):
                wrong_kept.append(cfg)
    finally:
        for kern, (configs, cache) in zip(CHUNK_KERNELS, saved):
            kern.configs, kern.cache = configs, cache
    print(f"\n[chunk launch settings] {torch.cuda.get_device_name()} K={K} V={V} {dtype} {decay}:")
    print("\n".join(lines))
    assert not wrong_kept, f"settings the prune keeps give wrong results: {wrong_kept}"
